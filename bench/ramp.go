package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// rampOptions parameterises the ramp scenario: the origin article's Locust
// profile (100 users, +50 users/s, hold 3000 users for 5 minutes), with
// users and durations multiplied by Scale.
type rampOptions struct {
	Scale      float64       `json:"scale"`
	StartUsers int           `json:"start_users"`
	MaxUsers   int           `json:"max_users"`
	SpawnRate  float64       `json:"spawn_rate"` // users added per second
	Hold       time.Duration `json:"hold_ns"`
	Think      time.Duration `json:"think_ns"` // mean; uniform in [0.5, 1.5) of it
	Latency    time.Duration `json:"upstream_latency_ns"`
	// BaselineHold is the hold of the same profile sent directly to the
	// upstream, measured first as the baseline.
	BaselineHold time.Duration `json:"baseline_hold_ns"`
}

// scaledRamp returns the article's profile scaled by f.
func scaledRamp(f float64) rampOptions {
	hold := time.Duration(f * float64(5*time.Minute))
	return rampOptions{
		Scale:        f,
		StartUsers:   max(1, int(math.Round(100*f))),
		MaxUsers:     max(1, int(math.Round(3000*f))),
		SpawnRate:    50,
		Hold:         hold,
		Think:        time.Second,
		Latency:      50 * time.Millisecond,
		BaselineHold: min(hold, 10*time.Second),
	}
}

// rampDuration is the time from the first user to the last one.
func (o rampOptions) rampDuration() time.Duration {
	return time.Duration(float64(o.MaxUsers-o.StartUsers) / o.SpawnRate * float64(time.Second))
}

// rampPoint is one 1 s sample of a ramp run.
type rampPoint struct {
	At    time.Duration `json:"at_ns"`
	Users int64         `json:"users"`
	CPU   time.Duration `json:"relay_cpu_ns"` // cumulative
	RSS   int64         `json:"relay_rss_bytes"`
}

// rampPhase is the outcome of one ramp run.
type rampPhase struct {
	Target  string         `json:"target"`
	Hold    latencySummary `json:"hold"`    // requests sent during the hold
	Overall latencySummary `json:"overall"` // ramp and hold
	// HoldRPS is the request rate during the hold.
	HoldRPS float64 `json:"hold_rps"`
}

// rampReport is the JSON report of the ramp scenario.
type rampReport struct {
	header
	Options  rampOptions `json:"options"`
	Baseline rampPhase   `json:"baseline"` // direct to the upstream
	Relay    rampPhase   `json:"relay"`
	// P50VsBaseline and P99VsBaseline compare the relay's hold latency with
	// the baseline's.
	P50VsBaseline *float64 `json:"p50_vs_baseline,omitempty"`
	P99VsBaseline *float64 `json:"p99_vs_baseline,omitempty"`
	// CPUPercent is the relay's CPU time over the hold as a share of the
	// machine (all cores).
	CPUPercent float64 `json:"relay_cpu_percent"`
	// RSSGrowth is the least-squares slope of the relay's RSS over the hold.
	RSSGrowth float64     `json:"relay_rss_growth_mib_per_min"`
	Points    []rampPoint `json:"points"`
}

// runRamp measures the profile against the upstream directly, then through
// the relay.
func runRamp(ctx context.Context, l *lab, o rampOptions, rep *rampReport, log io.Writer) error {
	up, err := l.startUpstream(ctx, "upstream", upstreamOptions{Latency: o.Latency})
	if err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	relay, err := l.startRelay(ctx, newRelayConfig(addr, l.path("nats"), []string{up.URL()}, nil))
	if err != nil {
		return err
	}
	base := o
	base.Hold = o.BaselineHold
	fmt.Fprintf(log, "ramp: baseline direct, %d→%d users, hold %v\n", o.StartUsers, o.MaxUsers, base.Hold)
	samples, _, err := rampRun(ctx, base, up.URL(), 0)
	if err != nil {
		return err
	}
	rep.Baseline = rampSummary(targetDirect, base, samples)
	fmt.Fprintf(log, "ramp: relay, %d→%d users, hold %v\n", o.StartUsers, o.MaxUsers, o.Hold)
	samples, points, err := rampRun(ctx, o, relay.URL(), relay.PID())
	if err != nil {
		return err
	}
	rep.Relay = rampSummary(targetRelay, o, samples)
	rep.Points = points
	rep.P50VsBaseline = ratio(float64(rep.Relay.Hold.P50), float64(rep.Baseline.Hold.P50))
	rep.P99VsBaseline = ratio(float64(rep.Relay.Hold.P99), float64(rep.Baseline.Hold.P99))
	rep.CPUPercent, rep.RSSGrowth = holdUsage(points, o.rampDuration(), rep.Machine.Cores)
	return nil
}

// rampSummary summarises the samples of one run.
func rampSummary(target string, o rampOptions, samples []sample) rampPhase {
	hold := between(samples, o.rampDuration(), o.rampDuration()+o.Hold)
	p := rampPhase{Target: target, Hold: summarize(hold), Overall: summarize(samples)}
	if o.Hold > 0 {
		p.HoldRPS = float64(len(hold)) / o.Hold.Seconds()
	}
	return p
}

// holdUsage returns the relay's CPU share of the machine and RSS slope
// (MiB/min) over the points of the hold phase.
func holdUsage(points []rampPoint, holdFrom time.Duration, cores int) (cpuPercent, rssPerMin float64) {
	var hold []rampPoint
	for _, p := range points {
		if p.At >= holdFrom {
			hold = append(hold, p)
		}
	}
	if len(hold) < 2 {
		return 0, 0
	}
	first, last := hold[0], hold[len(hold)-1]
	wall := last.At - first.At
	cpuPercent = 100 * float64(last.CPU-first.CPU) / (float64(wall) * float64(cores))
	x := make([]float64, len(hold))
	y := make([]float64, len(hold))
	for i, p := range hold {
		x[i] = p.At.Minutes()
		y[i] = float64(p.RSS) / (1 << 20)
	}
	return cpuPercent, slope(x, y)
}

// rampRun runs the user profile against base and, when pid is not 0,
// samples that process's CPU and RSS every second.
func rampRun(ctx context.Context, o rampOptions, base string, pid int) ([]sample, []rampPoint, error) {
	total := o.rampDuration() + o.Hold
	u := &users{
		req:    messagesRequest(base, false),
		client: &http.Client{Transport: newTransport(o.MaxUsers), Timeout: 30 * time.Second},
		think:  o.Think,
		start:  time.Now(),
		// Each user sends at most one request per half think time.
		budget: int64(float64(o.MaxUsers)*total.Seconds()/(o.Think.Seconds()/2)) + int64(o.MaxUsers),
	}
	defer u.client.CloseIdleConnections()
	issue, stop := context.WithTimeout(ctx, total)
	defer stop()
	var wg sync.WaitGroup
	var points []rampPoint
	var sampleErr error
	if pid != 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			points, sampleErr = samplePoints(issue, pid, u)
		}()
	}
	u.spawn(ctx, issue, o)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("ramp interrupted: %w", err)
	}
	return u.samples, points, sampleErr
}

// samplePoints samples pid every second until ctx ends.
func samplePoints(ctx context.Context, pid int, u *users) ([]rampPoint, error) {
	var points []rampPoint
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		t, err := treeUsage(pid)
		if err != nil {
			return points, err
		}
		points = append(points, rampPoint{At: t.At.Sub(u.start), Users: u.active.Load(), CPU: t.CPU, RSS: t.RSS})
		select {
		case <-ctx.Done():
			return points, nil
		case <-tick.C:
		}
	}
}

// users is a Locust-like population of closed-loop clients: each sends a
// request, reads the whole response, thinks, and sends again.
type users struct {
	req    request
	client *http.Client
	think  time.Duration
	start  time.Time
	budget int64 // requests left before every user stops
	active atomic.Int64

	mu      sync.Mutex
	samples []sample
}

// spawn starts o.StartUsers users, adds one every 1/o.SpawnRate up to
// o.MaxUsers, and returns when issue has ended and every user has finished
// its last request (requests are bounded by ctx and the client timeout).
func (u *users) spawn(ctx, issue context.Context, o rampOptions) {
	var wg sync.WaitGroup
	add := func() {
		wg.Add(1)
		u.active.Add(1)
		go func() {
			defer wg.Done()
			defer u.active.Add(-1)
			u.user(ctx, issue)
		}()
	}
	for range o.StartUsers {
		add()
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / o.SpawnRate))
	defer tick.Stop()
spawning:
	for n := o.StartUsers; n < o.MaxUsers; n++ {
		select {
		case <-issue.Done():
			break spawning
		case <-tick.C:
			add()
		}
	}
	wg.Wait()
}

// user is one user's loop: it stops issuing requests when issue ends, but
// lets the one in flight finish (ctx still bounds it), so the end of the run
// is not counted as errors.
func (u *users) user(ctx, issue context.Context) {
	for issue.Err() == nil && atomic.AddInt64(&u.budget, -1) >= 0 {
		sent := time.Now()
		code, ok, why := u.do(ctx)
		if ctx.Err() != nil {
			return
		}
		u.mu.Lock()
		u.samples = append(u.samples, sample{At: sent.Sub(u.start), Latency: time.Since(sent), Code: code, OK: ok, Err: why})
		u.mu.Unlock()
		pause := u.think/2 + rand.N(u.think)
		t := time.NewTimer(pause)
		select {
		case <-issue.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// do sends one request and reads the whole response. A failure comes with
// its reason.
func (u *users) do(ctx context.Context) (code int, ok bool, why string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.req.URL, bytes.NewReader(u.req.Body))
	if err != nil {
		return 0, false, err.Error()
	}
	req.Header = u.req.Header.Clone()
	resp, err := u.client.Do(req)
	if err != nil {
		return 0, false, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, false, err.Error()
	}
	if !succeeded(resp.StatusCode, body, u.req.Stream) {
		return resp.StatusCode, false, resp.Status
	}
	return resp.StatusCode, true, ""
}

// print writes the ramp tables.
func (r *rampReport) print(w io.Writer) error {
	t := newTable("target", "hold req/s", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "codes")
	for _, p := range []rampPhase{r.Baseline, r.Relay} {
		t.add(p.Target, fmt.Sprintf("%.0f", p.HoldRPS), strconv.Itoa(p.Hold.Requests), pct(p.Hold.ErrorRatio),
			ms(p.Hold.P50), ms(p.Hold.P95), ms(p.Hold.P99), codes(p.Hold.Codes))
	}
	f := newTable("figure", "value", "goal")
	f.add("relay error rate (hold)", pct(r.Relay.Hold.ErrorRatio), "< 1%: "+verdict(r.Relay.Hold.ErrorRatio < 0.01))
	f.add("relay error rate (ramp and hold)", pct(r.Relay.Overall.ErrorRatio), "")
	f.add("relay p50 / direct p50", times(r.P50VsBaseline), "")
	f.add("relay p99 / direct p99", times(r.P99VsBaseline), "")
	f.add("relay CPU, % of machine (hold)", fmt.Sprintf("%.1f%%", r.CPUPercent), "< 70%: "+verdict(r.CPUPercent < 70))
	f.add("relay RSS growth (hold)", fmt.Sprintf("%.2f MiB/min", r.RSSGrowth), "< 20: "+verdict(r.RSSGrowth < 20))
	if n := len(r.Points); n > 0 {
		f.add("relay RSS at end", mib(r.Points[n-1].RSS)+" MiB", "")
	}
	o := r.Options
	return writeSections(w, r.Notes,
		section{fmt.Sprintf("Ramp: %d users +%.0f/s to %d, hold %v (direct baseline hold %v), think %v, upstream latency %v",
			o.StartUsers, o.SpawnRate, o.MaxUsers, o.Hold, o.BaselineHold, o.Think, o.Latency), t},
		section{"Ramp figures (relay)", f})
}

// rampMain parses the ramp scenario's flags and runs it.
func rampMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("ramp", stderr, &c)
	scale := fs.Float64("scale", 1, "multiply users and durations of the article's profile by `F` (0.1: 300 users, 30 s hold)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	f := quickDefault(&c, "scale", *scale, 0.01)
	if f <= 0 || f > 1 {
		return fmt.Errorf("-scale %v: want 0 < F <= 1", f)
	}
	o := scaledRamp(f)
	rep := &rampReport{header: newHeader("ramp", args, c.quick), Options: o}
	err := withLab(c.relay, func(l *lab) error { return runRamp(ctx, l, o, rep, stderr) })
	if err != nil {
		return err
	}
	return finish(&c, &rep.header, rep, rep.print, stdout)
}
