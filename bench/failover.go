package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// failoverOptions parameterises the failover scenario.
type failoverOptions struct {
	Rate     int           `json:"rate"`
	Duration time.Duration `json:"duration_ns"`
	FaultAt  time.Duration `json:"fault_at_ns"`
	Latency  time.Duration `json:"upstream_latency_ns"`
	Breaker  relayBreaker  `json:"breaker"`
	// Quiet is how long the failing upstream must see no request for the
	// relay to count as no longer sending to it.
	Quiet time.Duration `json:"quiet_ns"`
}

// countSample is the request count of both upstreams at one instant.
type countSample struct {
	At      time.Duration `json:"at_ns"` // since the start of the load
	Healthy int64         `json:"healthy"`
	Failing int64         `json:"failing"`
}

// failoverReport is the JSON report of the failover scenario.
type failoverReport struct {
	header
	Options failoverOptions `json:"options"`
	// FaultAt is when the fault was switched on, since the start of the load.
	FaultAt time.Duration `json:"fault_at_ns"`
	// Before and After summarise the requests sent before and after it.
	Before  latencySummary `json:"before"`
	After   latencySummary `json:"after"`
	Overall latencySummary `json:"overall"`
	// P50VsBefore is After.P50 divided by Before.P50.
	P50VsBefore *float64 `json:"p50_vs_before,omitempty"`
	// FailingShareBefore is the failing upstream's share of upstream
	// requests before the fault (0.5 expected with equal weights).
	FailingShareBefore float64 `json:"failing_share_before"`
	// FailingAfterFault counts requests the failing upstream received after
	// the fault.
	FailingAfterFault int64 `json:"failing_requests_after_fault"`
	// BreakerOpen tells whether the failing upstream stopped receiving
	// requests for Quiet; TimeToOpen is then the time from the fault to the
	// first stats sample after its last request (100 ms resolution).
	BreakerOpen bool          `json:"breaker_open_observed"`
	TimeToOpen  time.Duration `json:"time_to_open_ns,omitempty"`
	// FailingUntilOpen counts the failing upstream's requests from the
	// fault until then.
	FailingUntilOpen int64         `json:"failing_requests_until_open,omitempty"`
	Counts           []countSample `json:"upstream_counts"`
}

// runFailover starts two upstreams and the relay in front of both, offers
// open-loop load and switches the second upstream to 500s at o.FaultAt.
func runFailover(ctx context.Context, l *lab, o failoverOptions, rep *failoverReport, log io.Writer) error {
	healthy, err := l.startUpstream(ctx, "upstream-a", upstreamOptions{Latency: o.Latency})
	if err != nil {
		return err
	}
	failing, err := l.startUpstream(ctx, "upstream-b", upstreamOptions{Latency: o.Latency})
	if err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	breaker := o.Breaker
	relay, err := l.startRelay(ctx, newRelayConfig(addr, l.path("nats"), []string{healthy.URL(), failing.URL()}, &breaker))
	if err != nil {
		return err
	}
	req := messagesRequest(relay.URL(), false)
	if _, err := attack(ctx, "warmup", req, shape{Rate: o.Rate, Duration: 500 * time.Millisecond}); err != nil {
		return err
	}
	w := &faultWatch{ctl: newControlClient(), healthy: healthy.URL(), failing: failing.URL(), faultAt: o.FaultAt}
	start := time.Now()
	ctx2, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.run(ctx2, start)
	}()
	fmt.Fprintf(log, "failover: %d req/s for %v, upstream-b fails from %v\n", o.Rate, o.Duration, o.FaultAt)
	samples, err := attack(ctx, "failover", req, shape{Rate: o.Rate, Duration: o.Duration})
	stop()
	wg.Wait()
	if err != nil {
		return err
	}
	if w.err != nil {
		return w.err
	}
	if w.faultAt < 0 {
		return fmt.Errorf("fault was never switched on (run shorter than -fault-at %v)", o.FaultAt)
	}
	fillFailover(rep, samples, w.counts, w.faultAt, w.countAtFault, o.Quiet)
	return nil
}

// faultWatch samples both upstreams' request counts every 100 ms and
// switches the failing one to 500s once faultAt has passed. Its fields are
// read by the owner only after run returned.
type faultWatch struct {
	ctl              *http.Client
	healthy, failing string
	faultAt          time.Duration // wanted on input; actual (or -1) after run
	countAtFault     int64
	counts           []countSample
	err              error
}

// run samples until ctx ends.
func (w *faultWatch) run(ctx context.Context, start time.Time) {
	want := w.faultAt
	w.faultAt = -1
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := w.sample(ctx, start)
		if err != nil {
			w.err = err
			return
		}
		w.counts = append(w.counts, c)
		if w.faultAt < 0 && time.Since(start) >= want {
			w.countAtFault = c.Failing
			w.faultAt = time.Since(start)
			if _, err := control(ctx, w.ctl, http.MethodPost, w.failing+"/_sim/fault?f=500"); err != nil {
				w.err = err
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sample reads both upstreams' counts.
func (w *faultWatch) sample(ctx context.Context, start time.Time) (countSample, error) {
	c := countSample{At: time.Since(start)}
	var err error
	if c.Healthy, err = upstreamRequests(ctx, w.ctl, w.healthy); err != nil {
		return c, err
	}
	c.Failing, err = upstreamRequests(ctx, w.ctl, w.failing)
	return c, err
}

// upstreamRequests reads the request count of a simulated upstream.
func upstreamRequests(ctx context.Context, client *http.Client, base string) (int64, error) {
	body, err := control(ctx, client, http.MethodGet, base+"/_sim/stats")
	if err != nil {
		return 0, err
	}
	var st struct {
		Requests int64 `json:"requests"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return 0, fmt.Errorf("decode stats of %s: %w", base, err)
	}
	return st.Requests, nil
}

// fillFailover computes the report's figures.
func fillFailover(rep *failoverReport, samples []sample, counts []countSample, faultAt time.Duration, atFault int64, quiet time.Duration) {
	rep.FaultAt = faultAt
	rep.Counts = counts
	rep.Before = summarize(between(samples, 0, faultAt))
	rep.After = summarize(between(samples, faultAt, 1<<62))
	rep.Overall = summarize(samples)
	rep.P50VsBefore = ratio(float64(rep.After.P50), float64(rep.Before.P50))
	var healthyAtFault int64
	for _, c := range counts {
		if c.At <= faultAt {
			healthyAtFault = c.Healthy
		}
	}
	if total := healthyAtFault + atFault; total > 0 {
		rep.FailingShareBefore = float64(atFault) / float64(total)
	}
	if len(counts) > 0 {
		rep.FailingAfterFault = counts[len(counts)-1].Failing - atFault
	}
	if i, ok := quietFrom(counts, faultAt, quiet); ok {
		rep.BreakerOpen = true
		rep.TimeToOpen = counts[i].At - faultAt
		rep.FailingUntilOpen = counts[i].Failing - atFault
	}
}

// quietFrom returns the first sample at or after from after which the
// failing count stays the same for at least quiet, as far as the samples go.
func quietFrom(counts []countSample, from, quiet time.Duration) (int, bool) {
	for i, c := range counts {
		if c.At < from {
			continue
		}
		for j := i + 1; j < len(counts) && counts[j].Failing == c.Failing; j++ {
			if counts[j].At-c.At >= quiet {
				return i, true
			}
		}
	}
	return 0, false
}

// print writes the failover table.
func (r *failoverReport) print(w io.Writer) error {
	t := newTable("phase", "requests", "ok", "errors", "p50 ms", "p99 ms", "codes")
	for _, p := range []struct {
		name string
		s    latencySummary
	}{{"before fault", r.Before}, {"after fault", r.After}, {"overall", r.Overall}} {
		t.add(p.name, strconv.Itoa(p.s.Requests), strconv.Itoa(p.s.OK), pct(p.s.ErrorRatio),
			ms(p.s.P50), ms(p.s.P99), codes(p.s.Codes))
	}
	f := newTable("figure", "value", "goal")
	f.add("client error rate after fault", pct(r.After.ErrorRatio), "< 0.1%: "+verdict(r.After.ErrorRatio < 0.001))
	f.add("p50 after / before fault", times(r.P50VsBefore), "")
	f.add("failing upstream share before fault", pct(r.FailingShareBefore), "")
	if r.BreakerOpen {
		f.add("time from fault to breaker open", ms(r.TimeToOpen)+" ms", "")
		f.add("failing upstream requests until open", strconv.FormatInt(r.FailingUntilOpen, 10), "")
	} else {
		f.add("time from fault to breaker open", "no breaker open observed", "")
	}
	f.add("failing upstream requests after fault", strconv.FormatInt(r.FailingAfterFault, 10), "")
	return writeSections(w, r.Notes,
		section{fmt.Sprintf("Failover: %d req/s for %v, one of two upstreams fails 100%% with 500 from %v",
			r.Options.Rate, r.Options.Duration, r.FaultAt.Round(time.Millisecond)), t},
		section{"Failover figures", f})
}

// verdict words a goal check.
func verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

// failoverMain parses the failover scenario's flags and runs it.
func failoverMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("failover", stderr, &c)
	rate := fs.Int("rate", 200, "arrival rate (req/s)")
	duration := fs.Duration("duration", 15*time.Second, "load duration")
	faultAt := fs.Duration("fault-at", 5*time.Second, "when the second upstream starts failing")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	o := failoverOptions{
		Rate:     quickDefault(&c, "rate", *rate, 100),
		Duration: quickDefault(&c, "duration", *duration, 4*time.Second),
		FaultAt:  quickDefault(&c, "fault-at", *faultAt, 1500*time.Millisecond),
		Latency:  10 * time.Millisecond,
		Quiet:    time.Second,
	}
	// The breaker stays open past the end of the run, so no half-open probe
	// blurs the moment it opened.
	o.Breaker = relayBreaker{FailureRatio: 0.5, MinRequests: 10, Window: "10s", OpenFor: (o.Duration + 30*time.Second).String()}
	if o.FaultAt >= o.Duration {
		return fmt.Errorf("-fault-at %v must be before the end of -duration %v", o.FaultAt, o.Duration)
	}
	rep := &failoverReport{header: newHeader("failover", args, c.quick), Options: o}
	err := withLab(c.relay, func(l *lab) error { return runFailover(ctx, l, o, rep, stderr) })
	if err != nil {
		return err
	}
	return finish(&c, &rep.header, rep, rep.print, stdout)
}
