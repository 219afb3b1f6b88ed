package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Target names of the overhead scenario, in the order each round visits them.
const (
	targetDirect = "direct"
	targetBare   = "bare"
	targetNginx  = "nginx"
	targetRelay  = "relay"
)

// overheadOptions parameterises the overhead scenario.
type overheadOptions struct {
	Rates           []int         `json:"rates"`
	Duration        time.Duration `json:"duration_ns"`          // per measured run
	Warmup          time.Duration `json:"warmup_ns"`            // unmeasured run before each one
	Targets         []string      `json:"targets"`              // subset of direct, bare, nginx, relay
	InFlight        int           `json:"in_flight"`            // requests in flight for the RSS figure
	InFlightLatency time.Duration `json:"in_flight_latency_ns"` // upstream latency for the RSS figure
	CeilingConns    int           `json:"ceiling_conns"`
	CeilingDuration time.Duration `json:"ceiling_duration_ns"`
}

// modeName names the request kind: streaming or not.
func modeName(stream bool) string {
	if stream {
		return "streaming"
	}
	return "non-streaming"
}

// overheadTarget is one thing load is sent to.
type overheadTarget struct {
	name string
	url  string
	proc *child // the proxy process; nil for direct
}

// overheadRun is one open-loop run against one target.
type overheadRun struct {
	Mode    string         `json:"mode"`
	Rate    int            `json:"rate"`
	Target  string         `json:"target"`
	Latency latencySummary `json:"latency"`
	// CPUPerRequest is the proxy process's CPU time per request (0 for direct).
	CPUPerRequest time.Duration `json:"cpu_per_request_ns"`
	// UpstreamCPUPerRequest is the simulated upstream's, for reference.
	UpstreamCPUPerRequest time.Duration `json:"upstream_cpu_per_request_ns"`
	// AddedP50 is the target's p50 minus direct's p50 in the same round.
	AddedP50 time.Duration `json:"added_p50_ns"`
	// AddedVsBare is AddedP50 divided by the bare proxy's AddedP50.
	AddedVsBare *float64 `json:"added_p50_vs_bare,omitempty"`
	// CPUVsBare is CPUPerRequest divided by the bare proxy's.
	CPUVsBare *float64 `json:"cpu_vs_bare,omitempty"`
}

// rssRun is the memory of one proxy holding many requests in flight.
type rssRun struct {
	Target      string   `json:"target"`
	MaxInFlight int      `json:"max_in_flight"` // seen by the client
	IdleRSS     int64    `json:"idle_rss_bytes"`
	PeakRSS     int64    `json:"peak_rss_bytes"`
	VsBare      *float64 `json:"peak_vs_bare,omitempty"`
	OK          float64  `json:"success_ratio"`
}

// ceilingRun is the closed-loop throughput of one target.
type ceilingRun struct {
	Mode     string         `json:"mode"`
	Target   string         `json:"target"`
	RPS      float64        `json:"rps"`
	VsDirect *float64       `json:"vs_direct,omitempty"`
	Latency  latencySummary `json:"latency"`
}

// overheadReport is the JSON report of the overhead scenario.
type overheadReport struct {
	header
	Options overheadOptions `json:"options"`
	Runs    []overheadRun   `json:"runs"`
	RSS     []rssRun        `json:"rss"`
	Ceiling []ceilingRun    `json:"ceiling"`
}

// runOverhead starts the upstream and every proxy, then measures them in
// interleaved rounds.
func runOverhead(ctx context.Context, l *lab, o overheadOptions, rep *overheadReport, log io.Writer) error {
	up, err := l.startUpstream(ctx, "upstream", upstreamOptions{})
	if err != nil {
		return err
	}
	targets, err := startOverheadTargets(ctx, l, o.Targets, up, rep, log)
	if err != nil {
		return err
	}
	for _, stream := range []bool{false, true} {
		for _, rate := range o.Rates {
			runs, err := overheadRound(ctx, o, stream, rate, targets, up, log)
			if err != nil {
				return err
			}
			rep.Runs = append(rep.Runs, runs...)
		}
	}
	for _, stream := range []bool{false, true} {
		runs, err := ceilingRound(ctx, o, stream, targets, log)
		if err != nil {
			return err
		}
		rep.Ceiling = append(rep.Ceiling, runs...)
	}
	ctl := newControlClient()
	if _, err := control(ctx, ctl, "POST", up.URL()+"/_sim/latency?d="+o.InFlightLatency.String()); err != nil {
		return err
	}
	rep.RSS, err = rssRound(ctx, o, targets, log)
	return err
}

// startOverheadTargets starts the proxies named in names in front of up.
func startOverheadTargets(ctx context.Context, l *lab, names []string, up *child, rep *overheadReport, log io.Writer) ([]overheadTarget, error) {
	var targets []overheadTarget
	for _, name := range names {
		var proc *child
		var err error
		switch name {
		case targetDirect:
			targets = append(targets, overheadTarget{name: name, url: up.URL()})
			continue
		case targetBare:
			proc, err = l.startProxy(ctx, up.URL())
		case targetNginx:
			bin, version := nginxVersion()
			if bin == "" {
				note := "nginx: skipped, no nginx on PATH"
				rep.Notes = append(rep.Notes, note)
				fmt.Fprintln(log, note)
				continue
			}
			rep.Machine.Nginx = version
			proc, err = l.startNginx(ctx, bin, up.addr)
		case targetRelay:
			var addr string
			if addr, err = freeAddr(); err == nil {
				proc, err = l.startRelay(ctx, newRelayConfig(addr, l.path("nats"), []string{up.URL()}, nil))
			}
		default:
			return nil, fmt.Errorf("unknown target %q (want direct, bare, nginx or relay)", name)
		}
		if err != nil {
			return nil, err
		}
		targets = append(targets, overheadTarget{name: name, url: proc.URL(), proc: proc})
	}
	return targets, nil
}

// overheadRound measures every target once at rate, one after the other, so
// only the target under test (and the upstream) is busy.
func overheadRound(ctx context.Context, o overheadOptions, stream bool, rate int, targets []overheadTarget, up *child, log io.Writer) ([]overheadRun, error) {
	var runs []overheadRun
	mode := modeName(stream)
	for _, t := range targets {
		req := messagesRequest(t.url, stream)
		if _, err := attack(ctx, "warmup", req, shape{Rate: rate, Duration: o.Warmup}); err != nil {
			return nil, err
		}
		before, err := usages(t.proc, up)
		if err != nil {
			return nil, err
		}
		samples, err := attack(ctx, t.name, req, shape{Rate: rate, Duration: o.Duration})
		if err != nil {
			return nil, err
		}
		after, err := usages(t.proc, up)
		if err != nil {
			return nil, err
		}
		run := overheadRun{Mode: mode, Rate: rate, Target: t.name, Latency: summarize(samples)}
		if n := time.Duration(len(samples)); n > 0 {
			run.CPUPerRequest = (after[0].CPU - before[0].CPU) / n
			run.UpstreamCPUPerRequest = (after[1].CPU - before[1].CPU) / n
		}
		fmt.Fprintf(log, "%-13s %5d/s %-6s ok %s p50 %s ms p99 %s ms\n", mode, rate, t.name,
			pct(run.Latency.SuccessRatio), ms(run.Latency.P50), ms(run.Latency.P99))
		runs = append(runs, run)
	}
	compareRound(runs)
	return runs, nil
}

// usages reads the CPU and RSS of the proxy (zero for direct) and upstream.
func usages(proxy, up *child) ([2]procUsage, error) {
	var u [2]procUsage
	var err error
	if proxy != nil {
		if u[0], err = treeUsage(proxy.PID()); err != nil {
			return u, err
		}
	}
	u[1], err = treeUsage(up.PID())
	return u, err
}

// compareRound fills the added latency and the ratios to the bare proxy of
// the runs of one round.
func compareRound(runs []overheadRun) {
	var direct, bare *overheadRun
	for i := range runs {
		switch runs[i].Target {
		case targetDirect:
			direct = &runs[i]
		case targetBare:
			bare = &runs[i]
		}
	}
	if direct == nil {
		return
	}
	for i := range runs {
		runs[i].AddedP50 = runs[i].Latency.P50 - direct.Latency.P50
	}
	if bare == nil {
		return
	}
	for i := range runs {
		if runs[i].Target == targetDirect {
			continue
		}
		runs[i].AddedVsBare = ratio(float64(runs[i].AddedP50), float64(bare.AddedP50))
		runs[i].CPUVsBare = ratio(float64(runs[i].CPUPerRequest), float64(bare.CPUPerRequest))
	}
}

// ceilingRound measures each target's closed-loop throughput.
func ceilingRound(ctx context.Context, o overheadOptions, stream bool, targets []overheadTarget, log io.Writer) ([]ceilingRun, error) {
	var runs []ceilingRun
	mode := modeName(stream)
	for _, t := range targets {
		req := messagesRequest(t.url, stream)
		sh := shape{Workers: o.CeilingConns, Duration: o.CeilingDuration, MaxRequests: uint64(o.CeilingDuration.Seconds()*100000) + 1}
		samples, err := attack(ctx, t.name, req, sh)
		if err != nil {
			return nil, err
		}
		sum := summarize(samples)
		run := ceilingRun{Mode: mode, Target: t.name, Latency: sum, RPS: throughput(samples)}
		fmt.Fprintf(log, "ceiling %-13s %-6s %.0f req/s\n", mode, t.name, run.RPS)
		runs = append(runs, run)
	}
	for i := range runs {
		if runs[0].Target == targetDirect {
			runs[i].VsDirect = ratio(runs[i].RPS, runs[0].RPS)
		}
	}
	return runs, nil
}

// throughput returns successful requests per second over the span from the
// first request sent to the last response read.
func throughput(samples []sample) float64 {
	var first, last time.Duration = -1, 0
	ok := 0
	for _, s := range samples {
		if first < 0 || s.At < first {
			first = s.At
		}
		last = max(last, s.At+s.Latency)
		if s.OK {
			ok++
		}
	}
	span := last - first
	if ok == 0 || span <= 0 {
		return 0
	}
	return float64(ok) / span.Seconds()
}

// maxConcurrent returns the most requests that were in flight at once.
func maxConcurrent(samples []sample) int {
	type edge struct {
		at    time.Duration
		delta int
	}
	edges := make([]edge, 0, 2*len(samples))
	for _, s := range samples {
		edges = append(edges, edge{s.At, +1}, edge{s.At + s.Latency, -1})
	}
	// Ends sort before starts at the same instant.
	slices.SortFunc(edges, func(a, b edge) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.delta, b.delta)
	})
	cur, peak := 0, 0
	for _, e := range edges {
		cur += e.delta
		peak = max(peak, cur)
	}
	return peak
}

// rssRound holds o.InFlight requests in flight through each proxy (the
// upstream answering after o.InFlightLatency) and samples its RSS every
// 100 ms.
func rssRound(ctx context.Context, o overheadOptions, targets []overheadTarget, log io.Writer) ([]rssRun, error) {
	var runs []rssRun
	rate := int(float64(o.InFlight) / o.InFlightLatency.Seconds())
	for _, t := range targets {
		if t.proc == nil {
			continue
		}
		idle, err := treeUsage(t.proc.PID())
		if err != nil {
			return nil, err
		}
		var samples []sample
		peak, err := sampleRSS(ctx, t.proc.PID(), func() error {
			var err error
			samples, err = attack(ctx, t.name, messagesRequest(t.url, false),
				shape{Rate: rate, Duration: o.InFlightLatency + 2*time.Second, Timeout: o.InFlightLatency + 15*time.Second})
			return err
		})
		if err != nil {
			return nil, err
		}
		run := rssRun{Target: t.name, MaxInFlight: maxConcurrent(samples), IdleRSS: idle.RSS, PeakRSS: peak,
			OK: summarize(samples).SuccessRatio}
		fmt.Fprintf(log, "rss %-6s in flight %d: %s MiB idle, %s MiB peak\n", t.name, run.MaxInFlight, mib(idle.RSS), mib(peak))
		runs = append(runs, run)
	}
	for i := range runs {
		for _, b := range runs {
			if b.Target == targetBare {
				runs[i].VsBare = ratio(float64(runs[i].PeakRSS), float64(b.PeakRSS))
			}
		}
	}
	return runs, nil
}

// sampleRSS runs load while it samples the RSS of pid (and its children)
// every 100 ms, and returns the peak.
func sampleRSS(ctx context.Context, pid int, load func() error) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var peak int64
	var sampleErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			u, err := treeUsage(pid)
			if err != nil {
				sampleErr = err
				return
			}
			peak = max(peak, u.RSS)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	err := load()
	cancel()
	wg.Wait()
	if err != nil {
		return 0, err
	}
	return peak, sampleErr
}

// print writes the overhead tables.
func (r *overheadReport) print(w io.Writer) error {
	t := newTable("mode", "rate/s", "target", "ok", "p50 ms", "p90 ms", "p99 ms",
		"added p50 µs", "added vs bare", "CPU µs/req", "CPU vs bare")
	for _, x := range r.Runs {
		cpu, cpuVs := "-", "-"
		if x.Target != targetDirect {
			cpu, cpuVs = us(x.CPUPerRequest), times(x.CPUVsBare)
		}
		added, addedVs := "-", "-"
		if x.Target != targetDirect {
			added, addedVs = us(x.AddedP50), times(x.AddedVsBare)
		}
		t.add(x.Mode, strconv.Itoa(x.Rate), x.Target, pct(x.Latency.SuccessRatio), ms(x.Latency.P50),
			ms(x.Latency.P90), ms(x.Latency.P99), added, addedVs, cpu, cpuVs)
	}
	c := newTable("mode", "target", "req/s", "vs direct", "ok", "p50 ms", "p99 ms")
	for _, x := range r.Ceiling {
		c.add(x.Mode, x.Target, fmt.Sprintf("%.0f", x.RPS), times(x.VsDirect), pct(x.Latency.SuccessRatio),
			ms(x.Latency.P50), ms(x.Latency.P99))
	}
	m := newTable("target", "max in flight", "idle RSS MiB", "peak RSS MiB", "peak vs bare", "ok")
	for _, x := range r.RSS {
		m.add(x.Target, strconv.Itoa(x.MaxInFlight), mib(x.IdleRSS), mib(x.PeakRSS), times(x.VsBare), pct(x.OK))
	}
	return writeSections(w, r.Notes,
		section{fmt.Sprintf("Open-loop latency and CPU (%v per run)", r.Options.Duration), t},
		section{fmt.Sprintf("Closed-loop ceiling (%d connections, %v)", r.Options.CeilingConns, r.Options.CeilingDuration), c},
		section{fmt.Sprintf("RSS with %d requests in flight (upstream latency %v)", r.Options.InFlight, r.Options.InFlightLatency), m})
}

// overheadMain parses the overhead scenario's flags and runs it.
func overheadMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("overhead", stderr, &c)
	rates := fs.String("rates", "500,1000,2000", "comma-separated arrival `rates` (req/s)")
	duration := fs.Duration("duration", 5*time.Second, "measured time per target and rate")
	targets := fs.String("targets", "direct,bare,nginx,relay", "comma-separated `targets` (direct, bare, nginx, relay)")
	inFlight := fs.Int("in-flight", 1000, "requests in flight for the RSS figure")
	ceiling := fs.Duration("ceiling", 5*time.Second, "closed-loop ceiling run per target")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	rs, err := parseInts(quickDefault(&c, "rates", *rates, "200"))
	if err != nil {
		return fmt.Errorf("-rates: %w", err)
	}
	o := overheadOptions{
		Rates:           rs,
		Duration:        quickDefault(&c, "duration", *duration, time.Second),
		Warmup:          quickDefault(&c, "duration", time.Second, 200*time.Millisecond),
		Targets:         strings.Split(*targets, ","),
		InFlight:        quickDefault(&c, "in-flight", *inFlight, 200),
		InFlightLatency: time.Second,
		CeilingConns:    32,
		CeilingDuration: quickDefault(&c, "ceiling", *ceiling, time.Second),
	}
	rep := &overheadReport{header: newHeader("overhead", args, c.quick), Options: o}
	err = withLab(c.relay, func(l *lab) error { return runOverhead(ctx, l, o, rep, stderr) })
	if err != nil {
		return err
	}
	return finish(&c, &rep.header, rep, rep.print, stdout)
}

// parseInts parses "500,1000,2000" into positive integers.
func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("parse %q: %w", f, err)
		}
		if n <= 0 {
			return nil, fmt.Errorf("parse %q: must be > 0", f)
		}
		out = append(out, n)
	}
	return out, nil
}
