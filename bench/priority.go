package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"time"
)

// priorityOptions parameterises the priority scenario.
type priorityOptions struct {
	// MaxConcurrency and Latency make the provider's capacity:
	// MaxConcurrency / Latency requests per second.
	MaxConcurrency int           `json:"max_concurrency"`
	Latency        time.Duration `json:"upstream_latency_ns"`
	// BatchRate is offered on the batch lane from 0 for BatchFor;
	// InteractiveRate on the interactive lane from InteractiveAt for
	// InteractiveFor (the contended window), and alone, before, as the
	// baseline.
	BatchRate       int           `json:"batch_rate"`
	BatchFor        time.Duration `json:"batch_for_ns"`
	InteractiveRate int           `json:"interactive_rate"`
	InteractiveAt   time.Duration `json:"interactive_at_ns"`
	InteractiveFor  time.Duration `json:"interactive_for_ns"`
	BatchMinShare   float64       `json:"batch_min_share"`
	Scrape          time.Duration `json:"scrape_interval_ns"`
}

// capacity returns the provider's requests per second.
func (o priorityOptions) capacity() float64 {
	return float64(o.MaxConcurrency) / o.Latency.Seconds()
}

// laneRun is one lane's traffic in one phase.
type laneRun struct {
	Name    string         `json:"name"`
	Lane    string         `json:"lane"`
	Rate    int            `json:"rate"`
	Summary latencySummary `json:"summary"` // end-to-end
	Wait    waitSummary    `json:"queue_wait"`

	samples []sample
}

// priorityReport is the JSON report of the priority scenario.
type priorityReport struct {
	header
	Options priorityOptions `json:"options"`
	// Alone is interactive traffic with no batch (the baseline);
	// Interactive and Batch are the contended run.
	Alone       laneRun `json:"interactive_alone"`
	Interactive laneRun `json:"interactive"`
	Batch       laneRun `json:"batch"`
	// WaitP50VsAlone and the others compare the contended interactive
	// lane with the baseline (nil when the baseline is 0).
	WaitP50VsAlone *float64 `json:"interactive_wait_p50_vs_alone,omitempty"`
	WaitP99VsAlone *float64 `json:"interactive_wait_p99_vs_alone,omitempty"`
	E2EP50VsAlone  *float64 `json:"interactive_latency_p50_vs_alone,omitempty"`
	E2EP99VsAlone  *float64 `json:"interactive_latency_p99_vs_alone,omitempty"`
	// Window is the contended window [InteractiveAt, InteractiveAt +
	// InteractiveFor) since the start of the batch load.
	WindowFrom time.Duration `json:"window_from_ns"`
	WindowTo   time.Duration `json:"window_to_ns"`
	// BatchShareMetrics is the batch lane's share of the lanes'
	// dispatches in the window, from relay_lane_dispatched_total deltas;
	// BatchShareClient the same from the responses (sent + queue wait).
	BatchShareMetrics *float64 `json:"batch_share_metrics,omitempty"`
	BatchShareClient  *float64 `json:"batch_share_client,omitempty"`
	// ExpectedShare is what strict priority leaves batch:
	// max(min_share, 1 - interactive rate / capacity).
	ExpectedShare float64       `json:"expected_batch_share"`
	Drain         time.Duration `json:"drain_ns"`
	Depth         []lanePoint   `json:"lane_depth"`
}

// priorityRelayConfig is the relay configuration of the priority scenario.
func priorityRelayConfig(listen, storeDir, upstream string, o priorityOptions) relayConfig {
	cfg := newRelayConfig(listen, storeDir, []string{upstream}, nil)
	cfg.Providers[0].MaxConcurrency = o.MaxConcurrency
	cfg.Lanes = []relayLane{
		{Name: laneInteractive, MaxDepth: 10000, MaxWait: "30s"},
		{Name: laneStandard, MaxDepth: 10000, MaxWait: "60s"},
		{Name: laneBatch, MaxDepth: 100000, MaxWait: "10m", MinShare: o.BatchMinShare},
	}
	cfg.Keys[0].DefaultLane = laneStandard // the key may use every lane
	return cfg
}

// runPriority runs interactive traffic alone, then batch traffic that
// saturates the provider with interactive traffic joining for a window.
func runPriority(ctx context.Context, l *lab, o priorityOptions, rep *priorityReport, log io.Writer) error {
	up, err := l.startUpstream(ctx, "upstream", upstreamOptions{Latency: o.Latency})
	if err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	relay, err := l.startRelay(ctx, priorityRelayConfig(addr, l.path("nats"), up.URL(), o))
	if err != nil {
		return err
	}
	base := messagesRequest(relay.URL(), false)
	inter, batch := withLane(base, laneInteractive), withLane(base, laneBatch)
	if _, err := attack(ctx, "warmup", inter, shape{Rate: o.InteractiveRate, Duration: 500 * time.Millisecond}); err != nil {
		return err
	}
	interTimeout := 30*time.Second + 15*time.Second
	fmt.Fprintf(log, "priority: interactive alone, %d req/s for %v (capacity %.0f req/s)\n", o.InteractiveRate, o.InteractiveFor, o.capacity())
	alone, err := attack(ctx, "interactive-alone", inter, shape{Rate: o.InteractiveRate, Duration: o.InteractiveFor, Timeout: interTimeout})
	if err != nil {
		return err
	}
	rep.Alone = newLaneRun("interactive alone", laneInteractive, o.InteractiveRate, alone)

	fmt.Fprintf(log, "priority: batch %d req/s for %v, interactive %d req/s from %v for %v\n",
		o.BatchRate, o.BatchFor, o.InteractiveRate, o.InteractiveAt, o.InteractiveFor)
	w := &laneWatch{client: newControlClient(), url: relay.URL() + "/metrics", interval: o.Scrape}
	epoch := time.Now()
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		w.run(wctx, epoch)
	}()
	var bs, is []sample
	var berr, ierr error
	go func() {
		defer wg.Done()
		// The batch backlog drains at capacity minus what interactive
		// takes; the client waits up to twice that, and at most 5 minutes.
		to := min(5*time.Minute, 30*time.Second+2*time.Duration(float64(o.BatchRate)*o.BatchFor.Seconds()/o.capacity()*float64(time.Second)))
		bs, berr = attack(ctx, "batch", batch, shape{Rate: o.BatchRate, Duration: o.BatchFor, Timeout: to, Epoch: epoch})
		if berr == nil {
			// One more scrape shows the lanes empty again.
			_ = sleepCtx(ctx, 300*time.Millisecond)
		}
		stop()
	}()
	go func() {
		defer wg.Done()
		if ierr = sleepCtx(wctx, o.InteractiveAt); ierr != nil {
			return
		}
		is, ierr = attack(ctx, "interactive", inter, shape{Rate: o.InteractiveRate, Duration: o.InteractiveFor, Timeout: interTimeout, Epoch: epoch})
	}()
	wg.Wait()
	switch {
	case berr != nil:
		return berr
	case ierr != nil:
		return ierr
	case w.err != nil:
		return w.err
	}
	rep.Interactive = newLaneRun("interactive with batch", laneInteractive, o.InteractiveRate, is)
	rep.Batch = newLaneRun("batch", laneBatch, o.BatchRate, bs)
	fillPriority(rep, w.points)
	return nil
}

// newLaneRun summarises one lane's samples.
func newLaneRun(name, lane string, rate int, samples []sample) laneRun {
	return laneRun{Name: name, Lane: lane, Rate: rate, Summary: summarize(samples), Wait: summarizeWait(samples), samples: samples}
}

// fillPriority computes the report's figures.
func fillPriority(rep *priorityReport, points []lanePoint) {
	o := rep.Options
	rep.WaitP50VsAlone = ratio(float64(rep.Interactive.Wait.P50), float64(rep.Alone.Wait.P50))
	rep.WaitP99VsAlone = ratio(float64(rep.Interactive.Wait.P99), float64(rep.Alone.Wait.P99))
	rep.E2EP50VsAlone = ratio(float64(rep.Interactive.Summary.P50), float64(rep.Alone.Summary.P50))
	rep.E2EP99VsAlone = ratio(float64(rep.Interactive.Summary.P99), float64(rep.Alone.Summary.P99))
	rep.WindowFrom, rep.WindowTo = o.InteractiveAt, o.InteractiveAt+o.InteractiveFor
	from, to := dispatchedAt(points, rep.WindowFrom), dispatchedAt(points, rep.WindowTo)
	db, di := to[laneBatch]-from[laneBatch], to[laneInteractive]-from[laneInteractive]
	rep.BatchShareMetrics = ratio(db, db+di)
	cb := dispatchedIn(rep.Batch.samples, rep.WindowFrom, rep.WindowTo)
	ci := dispatchedIn(rep.Interactive.samples, rep.WindowFrom, rep.WindowTo)
	rep.BatchShareClient = ratio(float64(cb), float64(cb+ci))
	rep.ExpectedShare = math.Max(o.BatchMinShare, 1-float64(o.InteractiveRate)/o.capacity())
	rep.Drain = max(lastDone(rep.Batch.samples), lastDone(rep.Interactive.samples))
	rep.Depth = points
}

// dispatchedIn counts the served samples whose dispatch (sent plus queue
// wait) falls in [from, to).
func dispatchedIn(samples []sample, from, to time.Duration) int {
	n := 0
	for _, x := range samples {
		if !x.OK || !x.HasQueue {
			continue
		}
		if d := x.At + x.Queue; d >= from && d < to {
			n++
		}
	}
	return n
}

// print writes the priority tables.
func (r *priorityReport) print(w io.Writer) error {
	t := newTable("traffic", "rate/s", "requests", "ok", "codes", "wait p50 ms", "wait p90 ms", "wait p99 ms", "wait max ms",
		"latency p50 ms", "latency p90 ms", "latency p99 ms")
	for _, x := range []laneRun{r.Alone, r.Interactive, r.Batch} {
		t.add(x.Name, strconv.Itoa(x.Rate), strconv.Itoa(x.Summary.Requests), strconv.Itoa(x.Summary.OK), codes(x.Summary.Codes),
			ms(x.Wait.P50), ms(x.Wait.P90), ms(x.Wait.P99), ms(x.Wait.Max), ms(x.Summary.P50), ms(x.Summary.P90), ms(x.Summary.P99))
	}
	errs := (r.Interactive.Summary.Requests - r.Interactive.Summary.OK) + (r.Batch.Summary.Requests - r.Batch.Summary.OK)
	f := newTable("figure", "value", "goal")
	f.add("interactive wait p50 / p99 with batch", ms(r.Interactive.Wait.P50)+" / "+ms(r.Interactive.Wait.P99)+" ms", "")
	f.add("interactive wait p50 / p99 alone", ms(r.Alone.Wait.P50)+" / "+ms(r.Alone.Wait.P99)+" ms", "")
	vs := times(r.WaitP50VsAlone) + " / " + times(r.WaitP99VsAlone)
	if r.Alone.Wait.Count > 0 && r.Alone.Wait.Queued == 0 {
		vs += " (alone it never waited)"
	}
	f.add("interactive wait p50 / p99 vs alone", vs, "")
	f.add("interactive latency p50 / p99 vs alone", times(r.E2EP50VsAlone)+" / "+times(r.E2EP99VsAlone), "")
	f.add("interactive latency p50 / p99 added by batch",
		ms(r.Interactive.Summary.P50-r.Alone.Summary.P50)+" / "+ms(r.Interactive.Summary.P99-r.Alone.Summary.P99)+" ms", "")
	f.add("batch share of dispatches in the window (metrics)", pctPtr(r.BatchShareMetrics), fmt.Sprintf("expected %s", pct(r.ExpectedShare)))
	f.add("batch share of dispatches in the window (responses)", pctPtr(r.BatchShareClient), "")
	f.add("errors with batch (both lanes)", strconv.Itoa(errs), "0: "+verdict(errs == 0))
	f.add("backlog drained after (last response)", secs(r.Drain)+" s", "")
	pb, pbAt := peakDepth(r.Depth, laneBatch)
	pi, piAt := peakDepth(r.Depth, laneInteractive)
	f.add("peak batch / interactive lane depth", fmt.Sprintf("%.0f at %s s / %.0f at %s s", pb, secs(pbAt), pi, secs(piAt)), "")
	o := r.Options
	return writeSections(w, r.Notes,
		section{fmt.Sprintf("Priority: max_concurrency %d, upstream latency %v (capacity %.0f req/s); batch %d req/s for %v, interactive %d req/s from %v for %v",
			o.MaxConcurrency, o.Latency, o.capacity(), o.BatchRate, o.BatchFor, o.InteractiveRate, o.InteractiveAt, o.InteractiveFor), t},
		section{fmt.Sprintf("Priority figures (window %s–%s s; batch min_share %g)", secs(r.WindowFrom), secs(r.WindowTo), o.BatchMinShare), f},
		section{fmt.Sprintf("Lane depth over time (highest of each slice; scraped every %v)", o.Scrape),
			depthTable(r.Depth, []string{laneInteractive, laneBatch}, 16)})
}

// pctPtr formats an optional ratio as a percentage, or "n/a".
func pctPtr(r *float64) string {
	if r == nil {
		return "n/a"
	}
	return pct(*r)
}

// priorityMain parses the priority scenario's flags and runs it.
func priorityMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("priority", stderr, &c)
	conc := fs.Int("max-concurrency", 4, "the provider's max_concurrency")
	latency := fs.Duration("latency", 100*time.Millisecond, "upstream latency")
	batchX := fs.Float64("batch", 2, "batch rate as a multiple of capacity (max-concurrency / latency)")
	interX := fs.Float64("interactive", 0.3, "interactive rate as a multiple of capacity")
	batchFor := fs.Duration("batch-for", 20*time.Second, "how long batch traffic is offered")
	interAt := fs.Duration("interactive-at", 5*time.Second, "when interactive traffic joins")
	interFor := fs.Duration("interactive-for", 10*time.Second, "how long interactive traffic is offered (also the baseline's length)")
	minShare := fs.Float64("min-share", 0.1, "the batch lane's min_share")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	o := priorityOptions{
		MaxConcurrency: *conc,
		Latency:        *latency,
		BatchFor:       quickDefault(&c, "batch-for", *batchFor, 2*time.Second),
		InteractiveAt:  quickDefault(&c, "interactive-at", *interAt, 500*time.Millisecond),
		InteractiveFor: quickDefault(&c, "interactive-for", *interFor, time.Second),
		BatchMinShare:  *minShare,
		Scrape:         250 * time.Millisecond,
	}
	if o.MaxConcurrency <= 0 || o.Latency <= 0 || *batchX <= 0 || *interX <= 0 {
		return fmt.Errorf("-max-concurrency, -latency, -batch and -interactive must be positive")
	}
	if o.InteractiveAt+o.InteractiveFor > o.BatchFor {
		return fmt.Errorf("interactive traffic (-interactive-at %v + -interactive-for %v) must end before batch traffic (-batch-for %v)",
			o.InteractiveAt, o.InteractiveFor, o.BatchFor)
	}
	o.BatchRate = max(1, int(math.Round(*batchX*o.capacity())))
	o.InteractiveRate = max(1, int(math.Round(*interX*o.capacity())))
	rep := &priorityReport{header: newHeader("priority", args, c.quick), Options: o}
	err := withLab(c.relay, func(l *lab) error { return runPriority(ctx, l, o, rep, stderr) })
	if err != nil {
		return err
	}
	return finish(&c, &rep.header, rep, rep.print, stdout)
}
