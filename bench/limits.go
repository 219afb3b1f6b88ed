package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relaygw/relay/workers/simupstream"
)

// The cluster-limits scenario: one simulated upstream with a hard limit
// (by default a token bucket of N requests per second holding one
// second's worth, as a provider's; or at most N requests in any sliding
// second; 429 past it), a provider whose rpm is
// 90% of it and whose max_concurrency is small; the same route driven at
// one fixed combined rate through one relay, then through three relays
// whose embedded servers form one cluster. Without cluster-wide limits
// every relay enforces the whole limit alone and the upstream sees about
// three times it; with them the upstream sees the limit whichever relay
// the load reached. Each relay's /metrics is scraped every second for
// relay_lease_share (absent when the relay has no leases).

// limitsOptions are the scenario's settings.
type limitsOptions struct {
	// UpstreamPerSecond is the upstream's hard limit in requests per
	// second, enforced as UpstreamLimit says: "bucket" (a token bucket
	// holding one second's worth) or "window" (any sliding second).
	UpstreamPerSecond int    `json:"upstream_per_second"`
	UpstreamLimit     string `json:"upstream_limit"`
	// RateHeaders makes the upstream send rate-limit headers (bucket
	// only), which relays learn from; off, what the upstream sees is the
	// relays' own limiting.
	RateHeaders bool `json:"upstream_rate_headers"`
	// RPM and MaxConcurrency are the provider's limits in the relays.
	RPM            int `json:"provider_rpm"`
	MaxConcurrency int `json:"provider_max_concurrency"`
	// Rate is the combined arrival rate, spread over the relays by Split
	// and over the interactive and batch lanes evenly.
	Rate     int           `json:"rate"`
	Split    []int         `json:"split"`
	Duration time.Duration `json:"duration_ns"`
	// MaxWait is the lanes' max_wait: parked requests older than it are
	// refused, which bounds the run.
	MaxWait time.Duration `json:"max_wait_ns"`
	Latency time.Duration `json:"upstream_latency_ns"`
	Scrape  time.Duration `json:"scrape_interval_ns"`
	// Settle is the pause between the relays being ready and the load.
	Settle time.Duration `json:"settle_ns"`
}

// limitsLanes are the lanes the scenario drives, highest priority first.
var limitsLanes = []string{laneInteractive, laneBatch}

// limitsReport is the JSON report of the cluster-limits scenario.
type limitsReport struct {
	header
	Options limitsOptions `json:"options"`
	Cases   []limitsCase  `json:"cases"`
}

// limitsCase is one run: the load through n relays.
type limitsCase struct {
	Name   string `json:"name"`
	Relays int    `json:"relays"`
	// Offered is the arrival rate sent to each relay.
	Offered  []int          `json:"offered_per_relay"`
	Upstream limitsUpstream `json:"upstream"`
	// Client sums every response; ClientErrors counts those not 2xx.
	Client       latencySummary `json:"client"`
	ClientErrors int            `json:"client_errors"`
	// Lanes holds, per lane, the queue wait (x-relay-queue-ms) and the
	// requests and errors.
	Lanes map[string]limitsLane `json:"lanes"`
	// PerRelay is each relay's requests and 200s.
	PerRelay []limitsRelay `json:"per_relay"`
	// Timeline is every relay's lease metrics and lane depth, scraped
	// every Options.Scrape from the start of the load.
	Timeline []limitsPoint `json:"timeline"`
	// LeaseSeen tells whether any relay ever exposed relay_lease_share.
	LeaseSeen bool `json:"lease_metrics_seen"`
	// Epoch is when the load started.
	Epoch time.Time `json:"epoch"`
}

// limitsUpstream is what the upstream counted during a case.
type limitsUpstream struct {
	Calls       int64 `json:"calls"`
	RateLimited int64 `json:"rate_limited"`
	// PerSecond is Calls over the seconds from the first call to the
	// last.
	PerSecond float64 `json:"calls_per_second"`
	// PeakSecond is the most calls in one wall-clock second.
	PeakSecond int64 `json:"peak_calls_in_a_second"`
	// MaxOpen is the most calls open at once: the relays' concurrency
	// as the upstream saw it.
	MaxOpen int64                `json:"max_open"`
	Seconds []simupstream.Second `json:"seconds"`
}

// limitsLane is one lane's figures in a case.
type limitsLane struct {
	Requests int         `json:"requests"`
	OK       int         `json:"ok"`
	Errors   int         `json:"errors"`
	Wait     waitSummary `json:"queue_wait"`
}

// limitsRelay is one relay's figures in a case.
type limitsRelay struct {
	Requests int `json:"requests"`
	OK       int `json:"ok"`
}

// limitsPoint is every relay's metrics at one instant.
type limitsPoint struct {
	At     time.Duration `json:"at_ns"`
	Relays []relayLease  `json:"relays"`
}

// relayLease is one relay's lease metrics and lane depth; Share is nil
// when relay_lease_share was absent, Up false when the scrape failed.
type relayLease struct {
	Up          bool               `json:"up"`
	Share       map[string]float64 `json:"share,omitempty"`
	Coordinator bool               `json:"coordinator"`
	SafeShare   bool               `json:"safe_share"`
	Depth       float64            `json:"depth"`
}

// Lease metrics of issue 12, exported by relays with leases.
const (
	metricLeaseShare       = "relay_lease_share"
	metricLeaseCoordinator = "relay_lease_coordinator"
	metricLeaseSafeShare   = "relay_lease_safe_share"
)

// limitsMain parses the scenario's flags and runs it.
func limitsMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("cluster-limits", stderr, &c)
	upRPS := fs.Int("upstream-rps", 10, "the upstream's hard limit (req/s)")
	upLimit := fs.String("upstream-limit", "bucket", "how the upstream enforces it: bucket (a token bucket holding one second's worth) or window (any sliding second)")
	headers := fs.Bool("rate-headers", false, "the upstream sends rate-limit headers (bucket only)")
	rpm := fs.Int("rpm", 0, "the provider's rpm (default 90% of the upstream's limit: 54 × -upstream-rps)")
	conc := fs.Int("max-concurrency", 4, "the provider's max_concurrency")
	rate := fs.Int("rate", 30, "combined arrival rate (req/s)")
	split := fs.String("split", "3,2,1", "how the rate is spread over the three relays (weights)")
	duration := fs.Duration("duration", 25*time.Second, "load duration of each case")
	maxWait := fs.Duration("max-wait", 10*time.Second, "the lanes' max_wait")
	latency := fs.Duration("latency", 300*time.Millisecond, "upstream time to first byte")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	o := limitsOptions{
		UpstreamPerSecond: *upRPS,
		UpstreamLimit:     *upLimit,
		RateHeaders:       *headers,
		RPM:               *rpm,
		MaxConcurrency:    *conc,
		Rate:              *rate,
		Duration:          quickDefault(&c, "duration", *duration, 4*time.Second),
		MaxWait:           quickDefault(&c, "max-wait", *maxWait, 2*time.Second),
		Latency:           *latency,
		Scrape:            time.Second,
		Settle:            quickDefault(&c, "duration", 3*time.Second, time.Second),
	}
	if o.RPM <= 0 {
		o.RPM = 54 * o.UpstreamPerSecond
	}
	var err error
	if o.Split, err = parseInts(*split); err != nil || len(o.Split) != 3 {
		return fmt.Errorf("-split: want three positive weights, got %q", *split)
	}
	if o.UpstreamLimit != "bucket" && o.UpstreamLimit != "window" {
		return fmt.Errorf("-upstream-limit: want bucket or window, got %q", o.UpstreamLimit)
	}
	if o.UpstreamPerSecond <= 0 || o.Rate <= 0 || o.MaxConcurrency <= 0 || o.Duration <= 0 || o.MaxWait <= 0 {
		return fmt.Errorf("-upstream-rps, -rate, -max-concurrency, -duration and -max-wait must be positive")
	}
	rep := &limitsReport{header: newHeader("cluster-limits", args, c.quick), Options: o}
	err = withLab(c.relay, func(l *lab) error {
		for _, n := range []int{1, 3} {
			lc, err := runLimitsCase(ctx, l, o, n, stderr)
			if err != nil {
				return err
			}
			rep.Cases = append(rep.Cases, lc)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return finish(&c, &rep.header, rep, rep.print, stdout)
}

// limitsRelayConfig is a relay of the scenario: the provider's rpm and
// max_concurrency, three lanes with max_wait, the key on all of them.
func limitsRelayConfig(nd *clusterNode, storeDir, upstream string, o limitsOptions) relayConfig {
	cfg := newRelayConfig(nd.addr, storeDir, []string{upstream}, nil)
	cfg.ShutdownGrace = "2s"
	cfg.NATS.Listen = nd.natsAddr
	// Relays on one cluster started at once race to create the generated
	// signing secret's stream; a configured secret skips it.
	cfg.Callbacks = &relayCallbacks{SigningSecret: benchSigningSecret}
	cfg.Providers[0].RPM = o.RPM
	cfg.Providers[0].MaxConcurrency = o.MaxConcurrency
	depth := max(1000, 4*o.Rate*int(o.MaxWait.Seconds()+1))
	wait := o.MaxWait.String()
	cfg.Lanes = []relayLane{
		{Name: laneInteractive, MaxDepth: depth, MaxWait: wait},
		{Name: laneStandard, MaxDepth: depth, MaxWait: wait},
		{Name: laneBatch, MaxDepth: depth, MaxWait: wait},
	}
	cfg.Keys[0].DefaultLane = laneStandard
	return cfg
}

// upstreamLimits returns the upstream's options for o.
func upstreamLimits(o limitsOptions) simupstream.Options {
	opts := simupstream.Options{Latency: o.Latency}
	if o.UpstreamLimit == "window" {
		opts.PerSecond = o.UpstreamPerSecond
		return opts
	}
	opts.RPS = float64(o.UpstreamPerSecond)
	opts.NoRateHeaders = !o.RateHeaders
	return opts
}

// offered spreads rate over n relays by the weights split (its first n),
// rounding so the parts add up to rate.
func offered(rate int, split []int, n int) []int {
	w := split[:n]
	if n == 1 {
		w = []int{1}
	}
	var sum int
	for _, x := range w {
		sum += x
	}
	out := make([]int, n)
	left := rate
	for i, x := range w {
		out[i] = int(math.Round(float64(rate*x) / float64(sum)))
		if i == n-1 {
			out[i] = left
		}
		left -= out[i]
	}
	return out
}

// laneRates splits a relay's rate over limitsLanes, interactive first
// taking the odd request.
func laneRates(rate int) []int {
	return []int{rate - rate/2, rate / 2}
}

// limitsLoad is one load generator's result.
type limitsLoad struct {
	relay   int
	lane    string
	samples []sample
	err     error
}

// runLimitsCase starts a fresh upstream and n relays on it (a cluster when
// n > 1), offers the load, and stops the relays.
func runLimitsCase(ctx context.Context, l *lab, o limitsOptions, n int, log io.Writer) (limitsCase, error) {
	lc := limitsCase{Name: fmt.Sprintf("%d relay", n), Relays: n, Offered: offered(o.Rate, o.Split, n), Lanes: map[string]limitsLane{}}
	if n > 1 {
		lc.Name += "s (one cluster)"
	}
	sim, err := simupstream.Start(ctx, "", upstreamLimits(o))
	if err != nil {
		return lc, err
	}
	defer sim.Close()
	prefix := fmt.Sprintf("limits%d", n)
	nodes, err := startClusterNodesWith(ctx, l, prefix, n, func(nd *clusterNode) relayConfig {
		cfg := limitsRelayConfig(nd, l.path(nd.name), sim.URL(), o)
		if n == 1 {
			// A relay alone: no client port, so nothing shares its
			// limits (and it takes no leases).
			cfg.NATS.Listen = ""
		}
		return cfg
	})
	if err != nil {
		return lc, err
	}
	defer func() {
		for _, nd := range nodes {
			nd.c.terminate()
		}
		for _, nd := range nodes {
			_ = nd.c.wait(time.Now().Add(stopTimeout))
		}
	}()
	if err := sleepCtx(ctx, o.Settle); err != nil {
		return lc, err
	}
	before := sim.Stats()
	fmt.Fprintf(log, "cluster-limits: %s, %d req/s for %v (per relay %v) at an upstream limited to %d req/s\n",
		lc.Name, o.Rate, o.Duration, lc.Offered, o.UpstreamPerSecond)

	epoch := time.Now()
	lc.Epoch = epoch.UTC()
	w := &leaseWatch{client: newControlClient(), interval: o.Scrape}
	for _, nd := range nodes {
		w.urls = append(w.urls, "http://"+nd.addr+"/metrics")
	}
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.run(wctx, epoch) })

	var loads []*limitsLoad
	var loadWG sync.WaitGroup
	for i, nd := range nodes {
		for j, r := range laneRates(lc.Offered[i]) {
			if r <= 0 {
				continue
			}
			ld := &limitsLoad{relay: i, lane: limitsLanes[j]}
			loads = append(loads, ld)
			req := withLane(messagesRequest("http://"+nd.addr, false), ld.lane)
			s := shape{Rate: r, Duration: o.Duration, Timeout: o.MaxWait + 30*time.Second, Epoch: epoch}
			loadWG.Go(func() { ld.samples, ld.err = attack(ctx, fmt.Sprintf("%s-%d-%s", prefix, i, ld.lane), req, s) })
		}
	}
	loadWG.Wait()
	// One more scrape after the last response.
	_ = sleepCtx(ctx, o.Scrape+200*time.Millisecond)
	stopWatch()
	wg.Wait()
	for _, ld := range loads {
		if ld.err != nil {
			return lc, ld.err
		}
	}
	after := sim.Stats()
	fillLimitsCase(&lc, o, loads, before, after, w.points)
	return lc, nil
}

// fillLimitsCase computes a case's figures from the loads, the upstream's
// counters before and after, and the scraped points.
func fillLimitsCase(lc *limitsCase, o limitsOptions, loads []*limitsLoad, before, after simupstream.Stats, points []limitsPoint) {
	var all []sample
	lc.PerRelay = make([]limitsRelay, lc.Relays)
	byLane := map[string][]sample{}
	for _, ld := range loads {
		all = append(all, ld.samples...)
		byLane[ld.lane] = append(byLane[ld.lane], ld.samples...)
		lc.PerRelay[ld.relay].Requests += len(ld.samples)
		for _, x := range ld.samples {
			if x.OK {
				lc.PerRelay[ld.relay].OK++
			}
		}
	}
	lc.Client = summarize(all)
	lc.ClientErrors = lc.Client.Requests - lc.Client.OK
	for lane, ss := range byLane {
		sum := summarize(ss)
		lc.Lanes[lane] = limitsLane{Requests: sum.Requests, OK: sum.OK, Errors: sum.Requests - sum.OK, Wait: summarizeWait(ss)}
	}
	up := &lc.Upstream
	up.Calls = after.Requests - before.Requests
	up.RateLimited = after.RateLimited - before.RateLimited
	up.MaxOpen = after.MaxOpen
	from := lc.Epoch.Unix()
	for _, s := range after.Seconds {
		if s.Unix >= from {
			up.Seconds = append(up.Seconds, s)
			up.PeakSecond = max(up.PeakSecond, s.Requests)
		}
	}
	if n := len(up.Seconds); n > 0 {
		up.PerSecond = float64(up.Calls) / float64(up.Seconds[n-1].Unix-up.Seconds[0].Unix+1)
	}
	lc.Timeline = points
	for _, p := range points {
		for _, r := range p.Relays {
			if r.Share != nil {
				lc.LeaseSeen = true
			}
		}
	}
}

// leaseWatch scrapes every relay's /metrics every interval until ctx
// ends; its points are read by the owner after run returned.
type leaseWatch struct {
	client   *http.Client
	urls     []string
	interval time.Duration
	points   []limitsPoint
}

// run scrapes until ctx ends, At counting from epoch. A failed scrape
// marks the relay down at that point.
func (w *leaseWatch) run(ctx context.Context, epoch time.Time) {
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for {
		p := limitsPoint{At: time.Since(epoch)}
		for _, u := range w.urls {
			body, err := control(ctx, w.client, http.MethodGet, u)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				p.Relays = append(p.Relays, relayLease{})
				continue
			}
			p.Relays = append(p.Relays, parseLease(body))
		}
		w.points = append(w.points, p)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// parseLease reads one relay's lease metrics (one provider) and total
// lane depth from a /metrics body.
func parseLease(body []byte) relayLease {
	r := relayLease{Up: true}
	if sh := promValues(body, metricLeaseShare, "limit"); len(sh) > 0 {
		r.Share = sh
	}
	for _, v := range promValues(body, metricLeaseCoordinator, "provider") {
		r.Coordinator = r.Coordinator || v == 1
	}
	for _, v := range promValues(body, metricLeaseSafeShare, "provider") {
		r.SafeShare = r.SafeShare || v == 1
	}
	for _, v := range promValues(body, "relay_lane_depth", "lane") {
		r.Depth += v
	}
	return r
}

// print writes the scenario's tables.
func (r *limitsReport) print(w io.Writer) error {
	o := r.Options
	sum := newTable("case", "offered req/s (per relay)", "upstream calls", "calls/s", "upstream 429s", "429 ratio",
		"client 200s", "client errors", "peak calls in 1 s", "highest upstream concurrency")
	lanes := newTable("case", "lane", "requests", "200s", "errors", "waited", "queue wait p50 ms", "p99 ms", "max ms")
	for _, c := range r.Cases {
		per := make([]string, len(c.Offered))
		for i, v := range c.Offered {
			per[i] = strconv.Itoa(v)
		}
		ratio := 0.0
		if c.Upstream.Calls > 0 {
			ratio = float64(c.Upstream.RateLimited) / float64(c.Upstream.Calls)
		}
		sum.add(c.Name, fmt.Sprintf("%d (%s)", o.Rate, strings.Join(per, "+")), strconv.FormatInt(c.Upstream.Calls, 10),
			fmt.Sprintf("%.1f", c.Upstream.PerSecond), strconv.FormatInt(c.Upstream.RateLimited, 10), pct(ratio),
			strconv.Itoa(c.Client.OK), strconv.Itoa(c.ClientErrors)+errorDetail(c.Client.Codes),
			strconv.FormatInt(c.Upstream.PeakSecond, 10),
			fmt.Sprintf("%d (limit %d)", c.Upstream.MaxOpen, o.MaxConcurrency))
		for _, lane := range limitsLanes {
			ln, ok := c.Lanes[lane]
			if !ok {
				continue
			}
			lanes.add(c.Name, lane, strconv.Itoa(ln.Requests), strconv.Itoa(ln.OK), strconv.Itoa(ln.Errors),
				strconv.Itoa(ln.Wait.Queued), ms(ln.Wait.P50), ms(ln.Wait.P99), ms(ln.Wait.Max))
		}
	}
	secs := []section{
		{fmt.Sprintf("Cluster limits: upstream limited to %d req/s (%s), provider rpm %d and max_concurrency %d, %d req/s for %v, lanes' max_wait %v, upstream latency %v",
			o.UpstreamPerSecond, limitKind(o), o.RPM, o.MaxConcurrency, o.Rate, o.Duration, o.MaxWait, o.Latency), sum},
		{"Queue wait per lane (x-relay-queue-ms of the requests admitted)", lanes},
	}
	for _, c := range r.Cases {
		secs = append(secs, section{c.Name + ": share per relay over time (rpm share / max_concurrency share; * coordinator, ! safe share; lane depth)", shareTable(c, 40)})
	}
	notes := r.Notes
	for _, c := range r.Cases {
		if !c.LeaseSeen {
			notes = append(notes, c.Name+": relay_lease_share absent from every scrape (no leases)")
		}
	}
	return writeSections(w, notes, secs...)
}

// limitKind describes how the upstream enforces its limit.
func limitKind(o limitsOptions) string {
	if o.UpstreamLimit == "window" {
		return "any sliding second"
	}
	if o.RateHeaders {
		return "token bucket, rate-limit headers sent"
	}
	return "token bucket holding one second's worth, no rate-limit headers"
}

// errorDetail returns " (codes)" for the non-2xx codes, or "".
func errorDetail(m map[string]int) string {
	if ec := errorCodes(m); len(ec) > 0 {
		return " (" + codes(ec) + ")"
	}
	return ""
}

// shareTable prints a case's timeline in at most rows rows: the upstream's
// calls and 429s in the last whole second before each scrape, and each
// relay's shares and lane depth.
func shareTable(c limitsCase, rows int) *table {
	head := []string{"t s", "upstream calls", "upstream 429s"}
	for i := range c.Relays {
		head = append(head, fmt.Sprintf("relay%d share", i+1), fmt.Sprintf("relay%d depth", i+1))
	}
	t := newTable(head...)
	if len(c.Timeline) == 0 || rows <= 0 {
		return t
	}
	bySec := map[int64]simupstream.Second{}
	for _, s := range c.Upstream.Seconds {
		bySec[s.Unix] = s
	}
	per := (len(c.Timeline) + rows - 1) / rows
	for i := 0; i < len(c.Timeline); i += per {
		p := c.Timeline[i]
		sec := bySec[c.Epoch.Add(p.At).Unix()-1]
		cells := []string{secs(p.At), strconv.FormatInt(sec.Requests, 10), strconv.FormatInt(sec.RateLimited, 10)}
		for _, r := range p.Relays {
			cells = append(cells, shareCell(r), depthCell(r))
		}
		t.add(cells...)
	}
	return t
}

// shareCell formats a relay's shares: "rpm/concurrency" with markers, or
// why there is none.
func shareCell(r relayLease) string {
	switch {
	case !r.Up:
		return "down"
	case r.Share == nil:
		return "absent"
	}
	f := func(limit string) string {
		v, ok := r.Share[limit]
		if !ok {
			return "-"
		}
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	s := f("rpm") + " / " + f("max_concurrency")
	if r.Coordinator {
		s += " *"
	}
	if r.SafeShare {
		s += " !"
	}
	return s
}

// depthCell formats a relay's total lane depth.
func depthCell(r relayLease) string {
	if !r.Up {
		return "-"
	}
	return strconv.FormatFloat(r.Depth, 'f', 0, 64)
}
