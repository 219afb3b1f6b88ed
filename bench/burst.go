package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// burstOptions parameterises the burst scenario.
type burstOptions struct {
	// RPS is the simulated upstream's hard limit; RPM the relay
	// provider's limit (60 times RPS unless -rpm says otherwise).
	RPS float64 `json:"upstream_rps"`
	RPM int     `json:"provider_rpm"`
	// Rate is the burst's arrival rate, Duration how long it lasts.
	Rate     int           `json:"rate"`
	Duration time.Duration `json:"duration_ns"`
	Latency  time.Duration `json:"upstream_latency_ns"`
	// MaxConcurrency is the provider's concurrency limit (generous: the
	// rate limit is what binds).
	MaxConcurrency int `json:"max_concurrency"`
	// MaxDepth and MaxWait configure the interactive lane the burst uses.
	MaxDepth int           `json:"max_depth"`
	MaxWait  time.Duration `json:"max_wait_ns"`
	Scrape   time.Duration `json:"scrape_interval_ns"`
}

// burstPhase is one burst: straight at the upstream, or through the relay.
type burstPhase struct {
	Target  string         `json:"target"`
	Summary latencySummary `json:"summary"`
	// Upstream is what the upstream counted during the phase.
	Upstream simStats `json:"upstream"`
	// Upstream429Ratio is the upstream's 429 answers over the requests it
	// received.
	Upstream429Ratio float64 `json:"upstream_429_ratio"`
	// ClientErrors counts responses the client did not count as served.
	ClientErrors int `json:"client_errors"`
	// Drain is the time from the first request sent to the last response
	// read.
	Drain time.Duration `json:"drain_ns"`

	samples []sample
}

// burstReport is the JSON report of the burst scenario.
type burstReport struct {
	header
	Options burstOptions `json:"options"`
	Direct  burstPhase   `json:"direct"`
	Relay   burstPhase   `json:"relay"`
	// Wait is the distribution of x-relay-queue-ms through the relay.
	Wait waitSummary `json:"queue_wait"`
	// Ideal is requests / upstream rate: the least time the upstream's
	// limit allows for serving all of them.
	Ideal        time.Duration `json:"ideal_drain_ns"`
	DrainVsIdeal *float64      `json:"drain_vs_ideal,omitempty"`
	PeakDepth    float64       `json:"peak_lane_depth"`
	PeakAt       time.Duration `json:"peak_lane_depth_at_ns"`
	// Depth is the relay's lane metrics every Scrape during the relay
	// burst, from its start.
	Depth []lanePoint `json:"lane_depth"`
}

// burstRelayConfig is the relay configuration of the burst scenario: one
// provider limited to the upstream's rate, deep lanes with long waits.
func burstRelayConfig(listen, storeDir, upstream string, o burstOptions) relayConfig {
	cfg := newRelayConfig(listen, storeDir, []string{upstream}, nil)
	cfg.Providers[0].RPM = o.RPM
	cfg.Providers[0].MaxConcurrency = o.MaxConcurrency
	cfg.Lanes = []relayLane{
		{Name: laneInteractive, MaxDepth: o.MaxDepth, MaxWait: o.MaxWait.String()},
		{Name: laneStandard, MaxDepth: o.MaxDepth, MaxWait: o.MaxWait.String()},
		{Name: laneBatch, MaxDepth: o.MaxDepth, MaxWait: o.MaxWait.String()},
	}
	cfg.Keys[0].DefaultLane = laneInteractive
	return cfg
}

// runBurst sends the burst straight at one rate-limited upstream (the
// baseline), then through the relay in front of another.
func runBurst(ctx context.Context, l *lab, o burstOptions, rep *burstReport, log io.Writer) error {
	direct, err := l.startUpstream(ctx, "upstream-direct", upstreamOptions{Latency: o.Latency, RPS: o.RPS})
	if err != nil {
		return err
	}
	up, err := l.startUpstream(ctx, "upstream", upstreamOptions{Latency: o.Latency, RPS: o.RPS})
	if err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	relay, err := l.startRelay(ctx, burstRelayConfig(addr, l.path("nats"), up.URL(), o))
	if err != nil {
		return err
	}
	ctl := newControlClient()
	s := shape{Rate: o.Rate, Duration: o.Duration, Timeout: o.MaxWait + 30*time.Second}

	fmt.Fprintf(log, "burst: direct, %d req/s for %v at an upstream limited to %g req/s\n", o.Rate, o.Duration, o.RPS)
	if rep.Direct, err = burstPhaseRun(ctx, ctl, "direct", messagesRequest(direct.URL(), false), direct.URL(), s, nil); err != nil {
		return err
	}

	req := withLane(messagesRequest(relay.URL(), false), laneInteractive)
	// A few requests open the relay's connections; then both token
	// buckets (relay and upstream) refill before the burst.
	if _, err := attack(ctx, "warmup", req, shape{Rate: 10, Duration: 500 * time.Millisecond}); err != nil {
		return err
	}
	if err := sleepCtx(ctx, 1500*time.Millisecond); err != nil {
		return err
	}
	fmt.Fprintf(log, "burst: relay, %d req/s for %v; the backlog should take about %v to drain\n",
		o.Rate, o.Duration, idealDrain(o.Rate, o.Duration, o.RPS).Round(time.Second))
	w := &laneWatch{client: ctl, url: relay.URL() + "/metrics", interval: o.Scrape}
	epoch := time.Now()
	s.Epoch = epoch
	if rep.Relay, err = burstPhaseRun(ctx, ctl, "relay", req, up.URL(), s, func(ctx context.Context) { w.run(ctx, epoch) }); err != nil {
		return err
	}
	if w.err != nil {
		return w.err
	}
	fillBurst(rep, w.points)
	return nil
}

// idealDrain is the least time an upstream limited to rps needs for a
// burst of rate × d requests.
func idealDrain(rate int, d time.Duration, rps float64) time.Duration {
	n := float64(rate) * d.Seconds()
	return time.Duration(n / rps * float64(time.Second))
}

// burstPhaseRun offers the burst to req and reads the upstream's counters
// around it. watch, when not nil, runs alongside the load until it ends.
func burstPhaseRun(ctx context.Context, ctl *http.Client, name string, req request, upstream string, s shape, watch func(context.Context)) (burstPhase, error) {
	p := burstPhase{Target: name}
	before, err := upstreamStats(ctx, ctl, upstream)
	if err != nil {
		return p, err
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if watch != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			watch(wctx)
		}()
	}
	samples, err := attack(ctx, name, req, s)
	if watch != nil {
		// One more scrape shows the lanes empty again.
		_ = sleepCtx(ctx, 300*time.Millisecond)
	}
	stop()
	wg.Wait()
	if err != nil {
		return p, err
	}
	after, err := upstreamStats(ctx, ctl, upstream)
	if err != nil {
		return p, err
	}
	p.Summary = summarize(samples)
	p.ClientErrors = p.Summary.Requests - p.Summary.OK
	p.Upstream = after.sub(before)
	if p.Upstream.Requests > 0 {
		p.Upstream429Ratio = float64(p.Upstream.RateLimited) / float64(p.Upstream.Requests)
	}
	p.Drain = lastDone(samples)
	p.samples = samples
	return p, nil
}

// lastDone returns when the last response of samples was read, since the
// start of their run.
func lastDone(samples []sample) time.Duration {
	var end time.Duration
	for _, x := range samples {
		end = max(end, x.At+x.Latency)
	}
	return end
}

// fillBurst computes the relay figures.
func fillBurst(rep *burstReport, points []lanePoint) {
	rep.Wait = summarizeWait(rep.Relay.samples)
	rep.Ideal = time.Duration(float64(rep.Relay.Summary.Requests) / rep.Options.RPS * float64(time.Second))
	rep.DrainVsIdeal = ratio(float64(rep.Relay.Drain), float64(rep.Ideal))
	rep.Depth = points
	rep.PeakDepth, rep.PeakAt = peakDepth(points, laneInteractive)
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// print writes the burst tables.
func (r *burstReport) print(w io.Writer) error {
	t := newTable("target", "requests", "ok", "client errors", "codes", "upstream requests", "upstream 429s", "upstream 429 ratio", "p50 ms", "p99 ms", "last response s")
	for _, p := range []burstPhase{r.Direct, r.Relay} {
		t.add(p.Target, strconv.Itoa(p.Summary.Requests), strconv.Itoa(p.Summary.OK), strconv.Itoa(p.ClientErrors),
			codes(p.Summary.Codes), strconv.FormatInt(p.Upstream.Requests, 10), strconv.FormatInt(p.Upstream.RateLimited, 10),
			pct(p.Upstream429Ratio), ms(p.Summary.P50), ms(p.Summary.P99), secs(p.Drain))
	}
	f := newTable("figure", "value", "goal")
	f.add("upstream 429s through the relay", strconv.FormatInt(r.Relay.Upstream.RateLimited, 10), "0: "+verdict(r.Relay.Upstream.RateLimited == 0))
	cerr := strconv.Itoa(r.Relay.ClientErrors)
	if ec := errorCodes(r.Relay.Summary.Codes); len(ec) > 0 {
		cerr += " (" + codes(ec) + ")"
	}
	f.add("client errors through the relay", cerr, "0: "+verdict(r.Relay.ClientErrors == 0))
	f.add("upstream 429 ratio, direct (baseline)", pct(r.Direct.Upstream429Ratio), "")
	f.add("requests served, direct (baseline)", pct(r.Direct.Summary.SuccessRatio), "")
	f.add("requests that waited on a lane", fmt.Sprintf("%d of %d", r.Wait.Queued, r.Wait.Count), "")
	f.add("queue wait p50 / p90 / p99 / max ms", fmt.Sprintf("%s / %s / %s / %s", ms(r.Wait.P50), ms(r.Wait.P90), ms(r.Wait.P99), ms(r.Wait.Max)), "")
	f.add("backlog drained after (last response)", secs(r.Relay.Drain)+" s", "")
	f.add("ideal: requests / upstream rate", secs(r.Ideal)+" s", "")
	f.add("drain vs ideal", times(r.DrainVsIdeal), "")
	f.add("peak interactive lane depth", fmt.Sprintf("%.0f at %s s", r.PeakDepth, secs(r.PeakAt)), "")
	return writeSections(w, r.Notes,
		section{fmt.Sprintf("Burst: %d req/s for %v at an upstream limited to %g req/s (provider rpm %d), upstream latency %v",
			r.Options.Rate, r.Options.Duration, r.Options.RPS, r.Options.RPM, r.Options.Latency), t},
		section{"Burst figures (relay)", f},
		section{fmt.Sprintf("Lane depth during the relay burst (highest of each slice; scraped every %v)", r.Options.Scrape),
			depthTable(r.Depth, []string{laneInteractive}, 16)})
}

// errorCodes returns the counts of codes other than 2xx.
func errorCodes(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		if len(k) != 3 || k[0] != '2' {
			out[k] = v
		}
	}
	return out
}

// secs formats a duration in seconds with one decimal.
func secs(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64)
}

// burstMain parses the burst scenario's flags and runs it.
func burstMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("burst", stderr, &c)
	rps := fs.Float64("rps", 20, "the upstream's hard limit (req/s)")
	factor := fs.Float64("factor", 10, "burst rate as a multiple of -rps")
	duration := fs.Duration("duration", 5*time.Second, "burst duration")
	latency := fs.Duration("latency", 10*time.Millisecond, "upstream latency")
	rpm := fs.Int("rpm", 0, "the provider's rpm (default 60 × -rps: exactly the upstream's limit)")
	maxWait := fs.Duration("max-wait", 60*time.Second, "the lane's max_wait (and the client timeout, plus 30s)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	o := burstOptions{
		RPS:            *rps,
		Duration:       quickDefault(&c, "duration", *duration, 500*time.Millisecond),
		Latency:        *latency,
		MaxConcurrency: 256,
		MaxDepth:       10000,
		MaxWait:        *maxWait,
		Scrape:         250 * time.Millisecond,
	}
	if o.RPS <= 0 || *factor <= 0 {
		return fmt.Errorf("-rps and -factor must be positive")
	}
	o.Rate = int(math.Round(o.RPS * *factor))
	o.RPM = *rpm
	if o.RPM <= 0 {
		o.RPM = int(math.Round(60 * o.RPS))
	}
	if d := idealDrain(o.Rate, o.Duration, min(o.RPS, float64(o.RPM)/60)); d >= o.MaxWait {
		return fmt.Errorf("the backlog needs about %v to drain, beyond -max-wait %v: shorten -duration", d, o.MaxWait)
	}
	rep := &burstReport{header: newHeader("burst", args, c.quick), Options: o}
	err := withLab(c.relay, func(l *lab) error { return runBurst(ctx, l, o, rep, stderr) })
	if err != nil {
		return err
	}
	return finish(&c, &rep.header, rep, rep.print, stdout)
}
