package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/simupstream"
	"github.com/relaygw/relay/workers/workerstest"
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
// concurrency slot, 50 ms per call: about 20 requests a second), in
// either format. A request whose wait is shorter than the lane's
// estimated wait (the requests ahead of it over that rate) is answered at
// once with reason lane_wait; through the format's official SDK, allowed
// one retry, that answer is a retryable error the SDK retries after the
// retry-after given. One whose wait is long enough parks and is served.
// The backlog's first requests, parked while the lane had no drain
// history, were never refused.
func TestFastAnswerLaneEstimate(t *testing.T) {
	t.Parallel()
	const backlog = 60
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			r := newRelay(t, laneSetup(50*time.Millisecond)...)
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
			t.Logf("answered in %v with retry-after %s, x-relay-estimated-wait-ms %s", short.took,
				short.header.Get("Retry-After"), short.header.Get("X-Relay-Estimated-Wait-Ms"))
			attempts, err := sdkCall(r, f, f.model, "300ms")
			checkSDKRetry(t, f, attempts, err)
			early := 1
			for _, a := range attempts {
				if a.status == earlyStatus(f) {
					early++
				}
			}
			long := r.postAsync(context.Background(), "long", f.path, withLane(f.headers(canaryKey), "interactive", "x-relay-max-wait", "30s"), body(f.model, ""))
			for _, ch := range append(replies, long) {
				if rep := recvReply(t, ch); rep.status != http.StatusOK {
					t.Errorf("%s: %d %s; want 200", rep.name, rep.status, rep.body)
				}
			}
			series := fmt.Sprintf(`relay_fast_rejections_total{reason="lane_wait",route=%q}`, f.model)
			if n := r.metric(t, series); n != float64(early) {
				t.Errorf("%s = %v; want %d (the early answers given)", series, n, early)
			}
		})
	}
}

// earlyStatus is the status of an early answer in f's format.
func earlyStatus(f apiFormat) int {
	if f.name == "openai" {
		return http.StatusServiceUnavailable
	}
	return 529
}

// sdkAttempt is one HTTP attempt an official SDK made.
type sdkAttempt struct {
	status                               int
	retryAfter, retryAfterMs, estimateMs string
	at                                   time.Time // when its answer's headers came
}

// String shows a in a test's log.
func (a sdkAttempt) String() string {
	return fmt.Sprintf("{%d retry-after %q retry-after-ms %q x-relay-estimated-wait-ms %q at %s}",
		a.status, a.retryAfter, a.retryAfterMs, a.estimateMs, a.at.Format("15:04:05.000"))
}

// sdkCall sends one request for model through f's official SDK (Go),
// allowed one retry, on lane interactive with a wait of maxWait. It
// returns every attempt the SDK made and the SDK's error.
func sdkCall(r *relay, f apiFormat, model, maxWait string) ([]sdkAttempt, error) {
	var attempts []sdkAttempt // the SDKs call middleware in the calling goroutine
	record := func(req *http.Request, next func(*http.Request) (*http.Response, error)) (*http.Response, error) {
		resp, err := next(req)
		if err == nil {
			attempts = append(attempts, sdkAttempt{resp.StatusCode, resp.Header.Get("Retry-After"),
				resp.Header.Get("Retry-After-Ms"), resp.Header.Get("X-Relay-Estimated-Wait-Ms"), time.Now()})
		}
		return resp, err
	}
	ctx := context.Background()
	if f.name == "openai" {
		c := openai.NewClient(ooption.WithBaseURL(r.URL+"/v1"), ooption.WithAPIKey(canaryKey), ooption.WithMaxRetries(1),
			ooption.WithHeader("x-relay-lane", "interactive"), ooption.WithHeader("x-relay-max-wait", maxWait),
			ooption.WithMiddleware(record))
		_, err := c.Chat.Completions.New(ctx, chatParams(model))
		return attempts, err
	}
	c := anthropicClient(r, canaryKey, aoption.WithMaxRetries(1),
		aoption.WithHeader("x-relay-lane", "interactive"), aoption.WithHeader("x-relay-max-wait", maxWait),
		aoption.WithMiddleware(record))
	_, err := c.Messages.New(ctx, messageParams(model))
	return attempts, err
}

// checkSDKRetry checks what the SDK made of an early answer: the first
// attempt got it (529, or 503 for OpenAI) with retry-after, retry-after-ms
// and x-relay-estimated-wait-ms agreeing, and the SDK, taking it as
// retryable, tried once more no sooner than retry-after-ms said. If the
// retry got an error too, the SDK's error is the API error of that
// status.
func checkSDKRetry(t *testing.T, f apiFormat, attempts []sdkAttempt, err error) {
	t.Helper()
	t.Logf("%s SDK attempts: %v (error %v)", f.name, attempts, err)
	if len(attempts) != 2 {
		t.Fatalf("%s SDK made %d attempts; want 2 (the early answer retried once)", f.name, len(attempts))
	}
	first := attempts[0]
	ms, err1 := strconv.ParseInt(first.retryAfterMs, 10, 64)
	est, err2 := strconv.ParseInt(first.estimateMs, 10, 64)
	ra, err3 := strconv.ParseInt(first.retryAfter, 10, 64)
	if first.status != earlyStatus(f) || errors.Join(err1, err2, err3) != nil || ms != est || ra != max((est+999)/1000, 1) {
		t.Errorf("%s SDK's first attempt %+v; want %d with retry-after-ms = x-relay-estimated-wait-ms and retry-after the same in whole seconds, rounded up",
			f.name, first, earlyStatus(f))
	}
	// The SDK waits retry-after-ms from when it read the answer; a few
	// milliseconds of clock granularity are allowed.
	if gap := attempts[1].at.Sub(first.at); gap < time.Duration(ms)*time.Millisecond-10*time.Millisecond {
		t.Errorf("%s SDK retried %v after the early answer; want after its retry-after-ms (%d ms)", f.name, gap, ms)
	}
	var status int
	var ae *anthropic.Error
	var oe *openai.Error
	switch {
	case err == nil:
		status = http.StatusOK
	case errors.As(err, &ae):
		status = ae.StatusCode
	case errors.As(err, &oe):
		status = oe.StatusCode
	default:
		t.Errorf("%s SDK error %v (%T); want an API error", f.name, err, err)
	}
	if status != attempts[1].status {
		t.Errorf("%s SDK ended with status %d; want its retry's %d", f.name, status, attempts[1].status)
	}
}

// refusingUpstream is a simulated Anthropic upstream whose first answer is
// a refusal: status with an Anthropic error of errType and, when set, a
// retry-after, given once gate is closed (nil: at once). It starts the
// hold the refusal means on its provider (a 429's cool-down, a 401's key
// back-off); every later call is served.
type refusingUpstream struct {
	*upstream
	calls   atomic.Int64 // calls received, refused or not
	refused atomic.Int64 // refusals sent
}

func newRefusingUpstream(t *testing.T, name string, status int, errType, retryAfter string, gate <-chan struct{}) *refusingUpstream {
	t.Helper()
	sim := simupstream.New(simupstream.Options{})
	u := &refusingUpstream{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u.calls.Add(1)
		if !u.refused.CompareAndSwap(0, 1) {
			sim.Handler().ServeHTTP(w, req)
			return
		}
		if gate != nil {
			select {
			case <-gate:
			case <-req.Context().Done():
				return
			}
		}
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":"refused (test)"}}`, errType)
	}))
	t.Cleanup(func() {
		srv.Close()
		_ = sim.Close()
	})
	prov := mustProvider(t, workers.ProviderOptions{Name: name, Format: workers.FormatAnthropic,
		BaseURL: srv.URL, APIKey: providerKeyA, Timeout: 5 * time.Second})
	u.upstream = &upstream{name: name, sim: sim, prov: prov}
	return u
}

// TestFastAnswerCoolingDown: the only provider of a route answered 429
// with retry-after: 3, so it cools down for 3 s. A request that may wait
// 2 s is answered at once, in either format, with retry-after and
// x-relay-estimated-wait-ms saying when the cool-down ends; one that may
// wait 60 s is parked and served after it, as is the refused request.
// Through the official Anthropic SDK allowed one retry, the early answer
// is a retryable 529 whose retry-after the SDK honours: its retry, after
// the cool-down, is served.
func TestFastAnswerCoolingDown(t *testing.T) {
	t.Parallel()
	const coolFor = 3 * time.Second
	up := newRefusingUpstream(t, "cooling", http.StatusTooManyRequests, "rate_limit_error", "3", nil)
	a := workerstest.Actor(actor.Options{Name: "cooling"})
	r := newRelay(t, withLanes(1000), withRoutes(workers.RouteSpec{Model: "cooling", Targets: []workers.Target{up.target(a)}}))
	ctx := context.Background()
	wait60 := func(f apiFormat) map[string]string {
		return withLane(f.headers(canaryKey), "interactive", "x-relay-max-wait", "60s")
	}
	refused := r.postAsync(ctx, "refused", formats[0].path, wait60(formats[0]), body("cooling", ""))
	natstest.Eventually(t, waitLimit, "the provider to cool down", func() bool { return a.State().CoolingUntil.After(time.Now()) })
	until := a.State().CoolingUntil
	if left := time.Until(until); left > coolFor || left < coolFor/2 {
		t.Fatalf("provider cooling down for %v more; want up to the upstream's retry-after %v (and over half of it left)", left, coolFor)
	}
	for _, f := range formats {
		left := time.Until(until)
		rep := r.timedPost(t, f, "cooling", "2s")
		checkEarly(t, f, rep, left-fastAnswerMargin, left)
		if !strings.Contains(string(rep.body), "retry-after") {
			t.Errorf("%s: early answer %s; want its message to say the provider asked to wait (retry-after)", f.name, rep.body)
		}
		t.Logf("%s: answered in %v with retry-after %s, x-relay-estimated-wait-ms %s (cool-down left %v)", f.name, rep.took,
			rep.header.Get("Retry-After"), rep.header.Get("X-Relay-Estimated-Wait-Ms"), left.Round(time.Millisecond))
	}
	if n := r.metric(t, `relay_fast_rejections_total{reason="cooling_down",route="cooling"}`); n != 2 {
		t.Errorf("relay_fast_rejections_total{cooling,cooling_down} = %v; want 2", n)
	}
	var long []<-chan laneReply
	for _, f := range formats {
		long = append(long, r.postAsync(ctx, f.name+" 60s", f.path, wait60(f), body("cooling", "")))
	}

	// Through each SDK, at once: an early answer, retried once after its
	// retry-after, which the cool-down's end lets through.
	type sdkResult struct {
		attempts []sdkAttempt
		err      error
	}
	results := make([]sdkResult, len(formats))
	var wg sync.WaitGroup
	for i, f := range formats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].attempts, results[i].err = sdkCall(r, f, "cooling", "2s")
		}()
	}
	wg.Wait()
	for i, f := range formats {
		attempts, err := results[i].attempts, results[i].err
		checkSDKRetry(t, f, attempts, err)
		if err != nil || attempts[1].at.Before(until) {
			t.Errorf("%s SDK: retry at %v, error %v; want it served after the cool-down (%v)", f.name, attempts[1].at, err, until)
		}
	}

	for _, ch := range append(long, refused) {
		rep := recvReply(t, ch)
		if rep.status != http.StatusOK {
			t.Errorf("%s: %d %s; want 200 after the cool-down", rep.name, rep.status, rep.body)
			continue
		}
		if rep.done.Before(until) {
			t.Errorf("%s served at %v, before the cool-down ended (%v)", rep.name, rep.done, until)
		}
	}
	if n := up.refused.Load(); n != 1 {
		t.Errorf("upstream refused %d calls; want 1", n)
	}
}

// TestFastAnswerProviderAuth: the upstream refused the only provider's
// key (401) while requests were parked behind the call, which sets the
// provider aside for actor.ProviderAuthBackoff (30 s), a hold like an
// open breaker's. A parked request whose wait ends before the back-off
// does is answered at once, and so is a new one, in either format, with
// reason provider_auth and the back-off's end; one that may wait 60 s
// (on lane batch) stays parked (the test does not wait out the back-off). With nothing
// parked for the route, a new request is not parked at all: its
// providers need an operator, and the relay answers at once (SPEC §3,
// the relay's own 502).
func TestFastAnswerProviderAuth(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	up := newRefusingUpstream(t, "refused-key", http.StatusUnauthorized, "authentication_error", "", gate)
	a := workerstest.Actor(actor.Options{Name: "refused-key", MaxConcurrency: 1})
	r := newRelay(t, withLanes(1000), withRoutes(workers.RouteSpec{Model: "refused", Targets: []workers.Target{up.target(a)}}))
	ctx := context.Background()
	f := formats[0]
	waiting := func(wait string) map[string]string {
		return withLane(f.headers(canaryKey), "interactive", "x-relay-max-wait", wait)
	}
	occupant := r.postAsync(ctx, "occupant", f.path, waiting("60s"), body("refused", ""))
	natstest.Eventually(t, waitLimit, "the occupant's call upstream", func() bool { return up.calls.Load() == 1 })
	short := r.postAsync(ctx, "parked 10s", f.path, waiting("10s"), body("refused", ""))
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Lane interactive's max_wait (30 s) caps a wait at the back-off's
	// length: the long wait parks on lane batch.
	long := r.postAsync(lctx, "parked 60s", f.path, withLane(f.headers(canaryKey), "batch", "x-relay-max-wait", "60s"), body("refused", ""))
	natstest.Eventually(t, waitLimit, "two requests parked", func() bool {
		return r.Lanes.Depth("interactive") == 1 && r.Lanes.Depth("batch") == 1
	})
	close(gate)
	if rep := recvReply(t, occupant); rep.status != http.StatusBadGateway {
		t.Errorf("occupant: %d %s; want 502 (the upstream refused the provider's key)", rep.status, rep.body)
	}
	until := a.State().AuthFailUntil
	if left := time.Until(until); left < actor.ProviderAuthBackoff/2 {
		t.Fatalf("provider set aside for %v more; want about %v", left, actor.ProviderAuthBackoff)
	}
	rep := recvReply(t, short)
	checkEarly(t, f, fastReply{laneReply: rep}, time.Until(until)-fastAnswerMargin, actor.ProviderAuthBackoff)
	for _, f := range formats {
		left := time.Until(until)
		rep := r.timedPost(t, f, "refused", "2s")
		checkEarly(t, f, rep, left-fastAnswerMargin, left)
		if !strings.Contains(string(rep.body), "keys were refused") {
			t.Errorf("%s: early answer %s; want its message to say the providers' keys were refused", f.name, rep.body)
		}
		t.Logf("%s: answered in %v with retry-after %s, x-relay-estimated-wait-ms %s", f.name, rep.took,
			rep.header.Get("Retry-After"), rep.header.Get("X-Relay-Estimated-Wait-Ms"))
	}
	if n := r.metric(t, `relay_fast_rejections_total{reason="provider_auth",route="refused"}`); n != 3 {
		t.Errorf("relay_fast_rejections_total{refused,provider_auth} = %v; want 3", n)
	}
	if d := r.Lanes.Depth("batch"); d != 1 {
		t.Errorf("lane batch's depth %d; want 1 (the 60s request still parked)", d)
	}
	cancel()
	if rep := recvReply(t, long); rep.err == nil {
		t.Errorf("60s wait: %d %s; want it parked until its caller went away", rep.status, rep.body)
	}
	natstest.Eventually(t, waitLimit, "the lanes empty", func() bool {
		return r.Lanes.Depth("interactive") == 0 && r.Lanes.Depth("batch") == 0
	})

	// Nothing parked: a new request is answered at once, even with a wait
	// longer than the back-off, and never parked.
	for _, wait := range []string{"2s", "60s"} {
		rep := r.timedPost(t, f, "refused", wait)
		t.Logf("nothing parked, wait %s: %d in %v, retry-after %q, x-should-retry %q: %s", wait, rep.status, rep.took,
			rep.header.Get("Retry-After"), rep.header.Get("X-Should-Retry"), rep.body)
		if rep.status != http.StatusBadGateway || rep.took > fastAnswerMargin {
			t.Errorf("nothing parked, wait %s: %d after %v; want 502 at once", wait, rep.status, rep.took)
		}
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("upstream got %d calls; want 1 (none while the provider was set aside)", n)
	}
}
