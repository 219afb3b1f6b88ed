package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/simupstream"
)

// End-to-end tests of the answers that do not make callers wait for
// nothing (SPEC §3 "no target can serve before the caller's wait ends"):
// open breakers and a lane's backlog estimate answer at once; parked
// requests are answered early or served when capacity returns.

// fastAnswerLimit is how soon a request nothing can serve in time must be
// answered, from sending it to its whole answer (issue 16). Alone, under
// -race, an answer takes 1 to 8 ms; with the whole package's parallel
// tests under -race on a loaded 2-core machine single answers were seen
// at up to 250 ms of scheduling delay. So the fastest of several must be
// within it, and every one within fastAnswerMargin (the documented
// margin: still far from the 5 s a parked request would take).
const (
	fastAnswerLimit  = 50 * time.Millisecond
	fastAnswerMargin = time.Second
)

// fastReply is one timed request.
type fastReply struct {
	laneReply
	took time.Duration
}

// timedPost sends body with a wait of maxWait and times it.
func (r *relay) timedPost(t *testing.T, f apiFormat, model, maxWait string) fastReply {
	t.Helper()
	start := time.Now()
	rep := r.post(context.Background(), f.name, f.path, withLane(f.headers(canaryKey), "interactive", "x-relay-max-wait", maxWait), body(model, ""))
	if rep.err != nil {
		t.Fatalf("%s: %v", f.name, rep.err)
	}
	return fastReply{laneReply: rep, took: time.Since(start)}
}

// checkEarly checks an early answer in f's format: 529 overloaded_error
// (OpenAI: 503 service_unavailable) with retry-after and
// x-relay-estimated-wait-ms within [minWait, maxWait].
func checkEarly(t *testing.T, f apiFormat, rep fastReply, minWait, maxWait time.Duration) {
	t.Helper()
	wantStatus, wantType := 529, "overloaded_error"
	if f.name == "openai" {
		wantStatus, wantType = http.StatusServiceUnavailable, "server_error"
	}
	if rep.status != wantStatus {
		t.Fatalf("%s: status %d; want %d (body %s)", f.name, rep.status, wantStatus, rep.body)
	}
	e := parseError(t, f, rep.body)
	if e.Error.Type != wantType || f.name == "openai" && (e.Error.Code == nil || *e.Error.Code != "service_unavailable") {
		t.Errorf("%s: error %+v; want %s (code service_unavailable for OpenAI)", f.name, e.Error, wantType)
	}
	if !strings.Contains(e.Error.Message, "expected within this request's wait") {
		t.Errorf("%s: message %q; want it to say nothing is expected within the wait", f.name, e.Error.Message)
	}
	ms, err := strconv.ParseInt(rep.header.Get("X-Relay-Estimated-Wait-Ms"), 10, 64)
	est := time.Duration(ms) * time.Millisecond
	if err != nil || est < minWait || est > maxWait {
		t.Errorf("%s: x-relay-estimated-wait-ms %q; want within [%v, %v]", f.name, rep.header.Get("X-Relay-Estimated-Wait-Ms"), minWait, maxWait)
	}
	// retry-after: when capacity is expected, in whole seconds rounded up.
	ra, err := strconv.Atoi(rep.header.Get("Retry-After"))
	if want := int((est + time.Second - 1) / time.Second); err != nil || ra != max(want, 1) {
		t.Errorf("%s: retry-after %q; want %d (the estimate %v rounded up)", f.name, rep.header.Get("Retry-After"), max(want, 1), est)
	}
	if rep.header.Get("X-Should-Retry") == "false" {
		t.Errorf("%s: x-should-retry: false on an early answer; the client should come back after retry-after", f.name)
	}
}

// TestFastAnswerBreakersOpen is issue 16's case, with its numbers: every
// breaker of a route's targets (fallback included) open for 15 s. A
// request that may wait 5 s is answered within 50 ms, in either format,
// with retry-after and x-relay-estimated-wait-ms saying when the
// breakers may let calls through; one that may wait 60 s is parked and
// served when the breaker closes.
func TestFastAnswerBreakersOpen(t *testing.T) {
	t.Parallel()
	const openFor = 15 * time.Second
	br := actor.BreakerOptions{MinRequests: 1, OpenFor: openFor}
	r := newRelay(t, withLanes(1000), withTimeout(20*time.Second), withClaudeFallbacks("gpt-4o"),
		withActors(map[string]actor.Options{"anthropic-a": {Breaker: br}, "openai-b": {Breaker: br}}))
	// One failing call on each provider opens both breakers (claude-sonnet
	// falls back on gpt-4o's provider).
	hdr := anthropicHeaders(canaryKey)
	hdr["x-sim-fault"] = string(simupstream.Fault500)
	if rep := r.post(context.Background(), "open", "/v1/messages", hdr, body("claude-sonnet", "")); rep.status != 529 {
		t.Fatalf("failing request: %d %s; want 529", rep.status, rep.body)
	}
	var opened time.Time // when the first breaker opened
	for _, name := range []string{"anthropic-a", "openai-b"} {
		st := r.Actors[name].State()
		if st.Breaker != actor.BreakerOpen {
			t.Fatalf("breaker of %s is %s; want open", name, st.Breaker)
		}
		if at := st.BreakerOpenAt.Add(-openFor); opened.IsZero() || at.Before(opened) {
			opened = at
		}
	}
	for _, f := range formats {
		model := f.model // claude-sonnet (and its fallback) or gpt-4o
		var took []time.Duration
		for range 9 {
			rep := r.timedPost(t, f, model, "5s")
			checkEarly(t, f, rep, openFor-time.Since(opened)-time.Second, openFor)
			took = append(took, rep.took)
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		t.Logf("%s: fast answers took %v", f.name, took)
		if took[0] > fastAnswerLimit || took[len(took)-1] > fastAnswerMargin {
			t.Errorf("%s: fast answers took %v; want the fastest within %v and all within %v", f.name, took, fastAnswerLimit, fastAnswerMargin)
		}
	}
	if n := r.metric(t, `relay_fast_rejections_total{reason="breaker_open",route="claude-sonnet"}`); n != 9 {
		t.Errorf("relay_fast_rejections_total{claude-sonnet,breaker_open} = %v; want 9", n)
	}
	if n := r.metric(t, `relay_fast_rejections_total{reason="lane_wait",route="gpt-4o"}`); n != 0 {
		t.Errorf("relay_fast_rejections_total{gpt-4o,lane_wait} = %v; want 0 (present at zero)", n)
	}
	// 60 s waits park, and are served once the breakers let a probe through.
	var wg sync.WaitGroup
	for _, f := range formats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep := r.post(context.Background(), f.name, f.path, withLane(f.headers(canaryKey), "interactive", "x-relay-max-wait", "60s"), body(f.model, ""))
			if rep.err != nil || rep.status != http.StatusOK {
				t.Errorf("%s with a 60s wait: %d %v %s; want 200", f.name, rep.status, rep.err, rep.body)
				return
			}
			if d := rep.done.Sub(opened); d < openFor {
				t.Errorf("%s with a 60s wait served %v after the breakers opened; want after %v", f.name, d, openFor)
			}
			if q, _ := strconv.Atoi(rep.header.Get("X-Relay-Queue-Ms")); q < 1000 {
				t.Errorf("%s: x-relay-queue-ms %d; want it parked until the breaker closed", f.name, q)
			}
		}()
	}
	wg.Wait()
}

// TestFastAnswerParkedEarly: a request parked (its provider busy) whose
// breaker then opens for longer than what is left of its wait is answered
// at once, not when its wait runs out; one with a longer wait stays
// parked and is served when the breaker lets a call through.
func TestFastAnswerParkedEarly(t *testing.T) {
	t.Parallel()
	const openFor = 6 * time.Second
	br := actor.BreakerOptions{MinRequests: 1, OpenFor: openFor}
	// Calls time out after 1.5 s: the occupant's upstream hangs, and its
	// timeout opens the breaker for 6 s while the short request has about
	// 2.5 s of its wait left.
	r := newRelay(t, withLanes(1000), withTimeout(1500*time.Millisecond),
		withUpstreams(simupstream.Options{Record: 64}),
		withActors(map[string]actor.Options{"anthropic-a": {MaxConcurrency: 1, Breaker: br}}))
	f := formats[0]
	hdr := f.headers(canaryKey)
	hdr["x-sim-fault"] = string(simupstream.FaultHang)
	occupant := r.occupy(t, r.Anthropic, f.path, body(f.model, ""), hdr, 0)
	short := r.postAsync(context.Background(), "short", f.path, withLane(f.headers(canaryKey), "interactive", "x-relay-max-wait", "4s"), body(f.model, ""))
	long := r.postAsync(context.Background(), "long", f.path, withLane(f.headers(canaryKey), "interactive", "x-relay-max-wait", "30s"), body(f.model, ""))
	natstest.Eventually(t, waitLimit, "two requests parked", func() bool { return r.Lanes.Depth("interactive") == 2 })
	if rep := recvReply(t, occupant); rep.status != 529 {
		t.Fatalf("occupant: %d %s; want 529 (its upstream failed)", rep.status, rep.body)
	}
	rep := recvReply(t, short)
	checkEarly(t, f, fastReply{laneReply: rep}, time.Millisecond, openFor)
	if rep := recvReply(t, long); rep.status != http.StatusOK {
		t.Errorf("30s wait: %d %s; want 200 once the breaker let a probe through", rep.status, rep.body)
	}
	if n := r.metric(t, `relay_lane_rejected_total{lane="interactive",reason="early"}`); n != 1 {
		t.Errorf(`relay_lane_rejected_total{reason="early"} = %v; want 1`, n)
	}
}

// TestFastAnswerLaneEstimate: a backlog drained at a known rate (one
// concurrency slot, 50 ms per call: about 20 requests a second). A
// request whose wait is shorter than the lane's estimated wait (the
// requests ahead of it over that rate) is answered at once with
// reason lane_wait; one whose wait is long enough parks and is served.
// The backlog's first requests, parked while the lane had no drain
// history, were never refused.
func TestFastAnswerLaneEstimate(t *testing.T) {
	t.Parallel()
	const backlog = 60
	r := newRelay(t, laneSetup(50*time.Millisecond)...)
	f := formats[0]
	var replies []<-chan laneReply
	for i := range backlog {
		replies = append(replies, r.postAsync(context.Background(), fmt.Sprint("backlog", i), f.path,
			withLane(f.headers(canaryKey), "interactive"), body(f.model, "")))
	}
	natstest.Eventually(t, waitLimit, "a drain history", func() bool {
		return r.metric(t, `relay_lane_dispatched_total{lane="interactive"}`) >= 12
	})
	short := r.timedPost(t, f, f.model, "300ms")
	checkEarly(t, f, short, 300*time.Millisecond, time.Minute)
	long := r.postAsync(context.Background(), "long", f.path, withLane(f.headers(canaryKey), "interactive", "x-relay-max-wait", "30s"), body(f.model, ""))
	for _, ch := range append(replies, long) {
		if rep := recvReply(t, ch); rep.status != http.StatusOK {
			t.Errorf("%s: %d %s; want 200", rep.name, rep.status, rep.body)
		}
	}
	if n := r.metric(t, `relay_fast_rejections_total{reason="lane_wait",route="claude-sonnet"}`); n != 1 {
		t.Errorf("relay_fast_rejections_total{lane_wait} = %v; want 1", n)
	}
}
