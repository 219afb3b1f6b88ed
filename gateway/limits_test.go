package gateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/simupstream"
	"github.com/relaygw/relay/workers/workerstest"
)

// End-to-end tests of the provider actors (workers/actor) as the router and
// the gateway use them: rate limits, breaker, cool-downs, the retry budget,
// refused provider keys and token accounting.

// upstream is one extra simulated Anthropic upstream with its own provider.
type upstream struct {
	name string
	sim  *simupstream.Server
	prov *workers.HTTPProvider
}

func newUpstream(t *testing.T, name string, o simupstream.Options) *upstream {
	t.Helper()
	sim := simupstream.New(o)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(func() {
		_ = sim.Close()
		srv.Close()
	})
	prov := mustProvider(t, workers.ProviderOptions{Name: name, Format: workers.FormatAnthropic,
		BaseURL: srv.URL, APIKey: providerKeyA, Timeout: 5 * time.Second})
	return &upstream{name: name, sim: sim, prov: prov}
}

// target returns a route target for u under the admission control a.
func (u *upstream) target(a *actor.Actor) workers.Target {
	return workers.Target{Provider: u.prov, ProviderName: u.name, Format: workers.FormatAnthropic,
		Model: "claude-sonnet-4-5", Weight: 1, Timeout: 5 * time.Second, Actor: a}
}

func (u *upstream) requests() int64 { return u.sim.Stats().Requests }

// reply is one client request's answer.
type reply struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration
	err    error
}

// send posts body to the relay without failing the test, so that it can
// run in any goroutine.
func (r *relay) send(path string, hdr map[string]string, body string) reply {
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, r.URL+path, strings.NewReader(body))
	if err != nil {
		return reply{err: err}
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b, took: time.Since(start), err: err}
}

// sendOK sends an Anthropic request for model and fails unless it gets 200.
func (r *relay) sendOK(t *testing.T, model string) reply {
	t.Helper()
	rep := r.send("/v1/messages", anthropicHeaders(canaryKey), body(model, ""))
	if rep.err != nil {
		t.Fatalf("request: %v", rep.err)
	}
	if rep.status != http.StatusOK {
		t.Fatalf("status = %d; want 200 (body %s)", rep.status, rep.body)
	}
	return rep
}

// retryAfterSecs checks that h carries retry-after as whole seconds >= 1.
func retryAfterSecs(t *testing.T, h http.Header) int {
	t.Helper()
	v := h.Get("Retry-After")
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Errorf("retry-after = %q; want an integer number of seconds >= 1", v)
	}
	return n
}

// checkRateLimited checks a relay 429 in format f.
func checkRateLimited(t *testing.T, f apiFormat, rep reply) {
	t.Helper()
	if rep.status != http.StatusTooManyRequests {
		t.Errorf("status = %d; want 429 (body %s)", rep.status, rep.body)
		return
	}
	retryAfterSecs(t, rep.header)
	e := parseError(t, f, rep.body)
	if f.name == "anthropic" {
		if e.Error.Type != "rate_limit_error" {
			t.Errorf("error.type = %q; want rate_limit_error", e.Error.Type)
		}
	} else if e.Error.Code == nil || *e.Error.Code != "rate_limit_exceeded" {
		t.Errorf("error.code = %v; want rate_limit_exceeded (body %s)", e.Error.Code, rep.body)
	}
}

// TestLimitsBurstNoUpstream429 fires a burst of twelve times an upstream's
// hard rate limit (5/s, burst 5) at the relay, whose provider rpm is just
// under that limit: the upstream never answers 429, as the relay refuses
// the excess itself with 429 and retry-after in the caller's format.
//
// The rpm is 270 (4.5/s, burst 5), not 300. At exactly the upstream's rate
// the relay's admissions conform to the upstream's bucket only up to the
// variation in transit time between Admit and the upstream's arrival: a
// request admitted the moment the relay's bucket refills, whose trip is a
// millisecond shorter than that of the call that emptied the upstream's
// bucket, finds it 0.005 tokens short and draws a 429 (seen in about one
// run in ten under -race on 2 cores). 10% headroom absorbs ~20ms of
// variation per refill and grows with each refill.
func TestLimitsBurstNoUpstream429(t *testing.T) {
	const n = 60
	const rpm = 270
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			r := newRelay(t, withUpstreams(simupstream.Options{RPS: 5}), withActors(map[string]actor.Options{
				"anthropic-a": {RPM: rpm},
				"openai-b":    {RPM: rpm},
			}))
			sim, a := r.Anthropic, r.Actors["anthropic-a"]
			if f.name == "openai" {
				sim, a = r.OpenAI, r.Actors["openai-b"]
			}
			// Warm the relay's connection to the upstream. Both buckets
			// refill from their first take, and the upstream takes at
			// arrival: a first call slowed by dialling makes the upstream's
			// bucket start later than the relay's, so a request admitted
			// exactly one refill later could still find it short.
			if rep := r.send(f.path, f.headers(canaryKey), body(f.model, "")); rep.err != nil || rep.status != http.StatusOK {
				t.Fatalf("warm-up: %d %v %s", rep.status, rep.err, rep.body)
			}
			natstest.Eventually(t, 2*time.Second, "the request bucket to refill", func() bool {
				return a.State().Requests.Available >= 5
			})
			// The upstream's bucket lags the relay's by the call's transit.
			time.Sleep(20 * time.Millisecond)
			warm := sim.Stats().Requests
			replies := make([]reply, n)
			var wg sync.WaitGroup
			start := time.Now()
			for i := range n {
				wg.Add(1)
				// Spread the burst over about a second.
				time.AfterFunc(time.Duration(i)*time.Second/n, func() {
					defer wg.Done()
					replies[i] = r.send(f.path, f.headers(canaryKey), body(f.model, ""))
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			ok, limited := 0, 0
			for i, rep := range replies {
				if rep.err != nil {
					t.Fatalf("request %d: %v", i, rep.err)
				}
				switch rep.status {
				case http.StatusOK:
					ok++
				default:
					limited++
					checkRateLimited(t, f, rep)
				}
			}
			st := sim.Stats()
			t.Logf("%d requests in %s: %d ok, %d refused by the relay; upstream saw %d requests, %d rate limited",
				n, elapsed.Round(time.Millisecond), ok, limited, st.Requests, st.RateLimited)
			if st.RateLimited != 0 {
				t.Errorf("upstream answered 429 %d times; want 0 (by status %v)", st.RateLimited, st.ByStatus)
			}
			if int64(ok) != st.Requests-warm {
				t.Errorf("%d client successes but %d upstream requests", ok, st.Requests-warm)
			}
			// The burst (5) plus 4.5/s over the spread, with slack for a slow run.
			if most := 5 + rpm/60.0*elapsed.Seconds() + 1; ok < 5 || float64(ok) > most {
				t.Errorf("%d requests succeeded in %s; want between 5 and %.1f", ok, elapsed, most)
			}
			if limited == 0 {
				t.Errorf("no request was refused by the relay")
			}
		})
	}
}

// TestLimitsBreaker sends a route's traffic past a failing upstream: its
// breaker opens after MinRequests failures, clients see only successes,
// and once the upstream recovers a half-open probe closes the breaker.
func TestLimitsBreaker(t *testing.T) {
	br := actor.BreakerOptions{FailureRatio: 0.5, MinRequests: 4, Window: 30 * time.Second, OpenFor: time.Second, HalfOpenProbes: 1}
	bad := newUpstream(t, "flaky", simupstream.Options{})
	good := newUpstream(t, "steady", simupstream.Options{})
	bad.sim.SetFault(simupstream.Fault500)
	badActor := workerstest.Actor(actor.Options{Name: "flaky", Breaker: br})
	goodActor := workerstest.Actor(actor.Options{Name: "steady", Breaker: br})
	r := newRelay(t, withBackoff(time.Millisecond), withRoutes(
		workers.RouteSpec{Model: "duo", Targets: []workers.Target{bad.target(badActor), good.target(goodActor)}},
	))

	for range 40 {
		rep := r.sendOK(t, "duo")
		if p := rep.header.Get("X-Relay-Provider"); p != "steady" {
			t.Fatalf("answered by %q; want steady", p)
		}
	}
	if n := bad.requests(); n > int64(br.MinRequests+2) {
		t.Errorf("failing upstream got %d requests; want at most %d", n, br.MinRequests+2)
	} else if n < int64(br.MinRequests) {
		t.Errorf("failing upstream got %d requests; want at least %d before the breaker opens", n, br.MinRequests)
	}
	if st := badActor.State().Breaker; st == actor.BreakerClosed {
		t.Errorf("breaker of the failing provider is %s; want open or half-open", st)
	}
	if st := goodActor.State().Breaker; st != actor.BreakerClosed {
		t.Errorf("breaker of the healthy provider is %s; want closed", st)
	}

	bad.sim.SetFault(simupstream.FaultNone)
	natstest.Eventually(t, 3*time.Second, "the breaker to go half-open", func() bool {
		return badActor.State().Breaker == actor.BreakerHalfOpen
	})
	before := bad.requests()
	for range 10 {
		r.sendOK(t, "duo")
	}
	if got := bad.requests() - before; got < 4 {
		t.Errorf("recovered upstream got %d of 10 requests; want its share again", got)
	}
	if st := badActor.State().Breaker; st != actor.BreakerClosed {
		t.Errorf("breaker after a successful probe is %s; want closed", st)
	}
}

// TestLimitsRetryAfterHonoured checks that an upstream 429 with retry-after
// keeps every later request away from that upstream until it expires: the
// relay answers 429 itself at once, then traffic flows again.
func TestLimitsRetryAfterHonoured(t *testing.T) {
	r := newRelay(t, withActors(map[string]actor.Options{"anthropic-a": {}}))
	f := formats[0]
	hdr := anthropicHeaders(canaryKey)
	hdr["x-sim-fault"] = "429" // this request only: 429 with retry-after: 1
	start := time.Now()
	first := r.send(f.path, hdr, body(f.model, ""))
	if first.err != nil {
		t.Fatal(first.err)
	}
	if first.status != http.StatusTooManyRequests && first.status != 529 {
		t.Fatalf("status = %d; want 429 or 529 (body %s)", first.status, first.body)
	}
	retryAfterSecs(t, first.header)
	if n := r.Anthropic.Stats().Requests; n != 1 {
		t.Fatalf("upstream got %d requests; want 1 (no retry on the target that asked for time)", n)
	}

	refused := 0
	for {
		rep := r.send(f.path, f.headers(canaryKey), body(f.model, ""))
		if rep.err != nil {
			t.Fatal(rep.err)
		}
		if rep.status == http.StatusOK {
			if d := time.Since(start); d < time.Second {
				t.Errorf("a request went through %s after the 429; want >= 1s (retry-after: 1)", d)
			}
			break
		}
		checkRateLimited(t, f, rep)
		if rep.took > 500*time.Millisecond {
			t.Errorf("refusal took %s; want an immediate answer", rep.took)
		}
		if n := r.Anthropic.Stats().Requests; n != 1 {
			t.Fatalf("upstream got %d requests during its retry-after; want 1", n)
		}
		refused++
		if time.Since(start) > 5*time.Second {
			t.Fatalf("requests still refused %s after a retry-after of 1s", time.Since(start))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if refused == 0 {
		t.Errorf("no request was refused during the retry-after")
	}
	for range 3 {
		r.sendOK(t, f.model)
	}
	if n := r.Anthropic.Stats().Requests; n != 5 {
		t.Errorf("upstream got %d requests; want 5", n)
	}
}

// TestLimitsRetryBudgetOutage sends requests through a total outage: every
// client gets 529 with retry-after, the shared retry budget bounds the
// upstream calls, and once the relay has retried without any upstream hint
// it tells clients not to retry.
func TestLimitsRetryBudgetOutage(t *testing.T) {
	const n = 60
	br := actor.BreakerOptions{MinRequests: 10000}
	a := newUpstream(t, "down-a", simupstream.Options{})
	b := newUpstream(t, "down-b", simupstream.Options{})
	a.sim.SetFault(simupstream.Fault503)
	b.sim.SetFault(simupstream.Fault503)
	r := newRelay(t, withBackoff(time.Millisecond), withRoutes(
		workers.RouteSpec{Model: "outage", Targets: []workers.Target{
			a.target(workerstest.Actor(actor.Options{Name: "down-a", Breaker: br})),
			b.target(workerstest.Actor(actor.Options{Name: "down-b", Breaker: br})),
		}},
	))
	upstreamCalls := func() int64 { return a.requests() + b.requests() }
	start := time.Now()
	single, multi := 0, 0
	for i := range n {
		before := upstreamCalls()
		rep := r.send("/v1/messages", anthropicHeaders(canaryKey), body("outage", ""))
		if rep.err != nil {
			t.Fatal(rep.err)
		}
		calls := upstreamCalls() - before
		if rep.status != 529 {
			t.Fatalf("request %d: status = %d; want 529 (body %s)", i, rep.status, rep.body)
		}
		retryAfterSecs(t, rep.header)
		noRetry := rep.header.Get("X-Should-Retry") == "false"
		switch {
		case calls >= 2:
			multi++
			// The relay retried and no upstream (503 without retry-after)
			// hinted that capacity returns soon.
			if !noRetry {
				t.Errorf("request %d: 529 after %d upstream calls without x-should-retry: false", i, calls)
			}
		case calls == 1:
			single++
			if noRetry {
				t.Errorf("request %d: x-should-retry: false after a single upstream call", i)
			}
		default:
			t.Errorf("request %d: %d upstream calls", i, calls)
		}
	}
	elapsed := time.Since(start).Seconds()
	total := upstreamCalls()
	limit := float64(n)*1.2 + 3*elapsed + 13 + 2
	t.Logf("%d requests in %.2fs: %d upstream calls (%.2f per request; limit %.1f); %d single-call, %d retried",
		n, elapsed, total, float64(total)/n, limit, single, multi)
	if float64(total) > limit {
		t.Errorf("%d upstream calls for %d requests in %.2fs; the retry budget allows at most %.1f", total, n, elapsed, limit)
	}
	if multi == 0 {
		t.Errorf("no request was retried: the budget starts with a burst")
	}
	if single == 0 {
		t.Errorf("every request was retried: the budget never ran out")
	}
	if !strings.Contains(r.metricsText(t), "relay_retry_budget_exhausted_total") {
		t.Errorf("metrics lack relay_retry_budget_exhausted_total")
	}
}

// TestLimitsProviderKeyRefused checks that a provider whose key the upstream
// refuses is tried once, the request served elsewhere, and the provider then
// skipped: by the route while another target is healthy, and by its actor
// (refusal reason provider_auth) when it is a route's only target.
func TestLimitsProviderKeyRefused(t *testing.T) {
	bad := newUpstream(t, "revoked", simupstream.Options{})
	good := newUpstream(t, "valid", simupstream.Options{})
	bad.sim.SetFault(simupstream.Fault401)
	badActor := workerstest.Actor(actor.Options{Name: "revoked"})
	r := newRelay(t, withRoutes(
		workers.RouteSpec{Model: "duo", Targets: []workers.Target{bad.target(badActor), good.target(workerstest.Actor(actor.Options{Name: "valid"}))}},
		workers.RouteSpec{Model: "solo", Targets: []workers.Target{bad.target(badActor)}},
	))
	for i := range 10 {
		rep := r.sendOK(t, "duo")
		if p := rep.header.Get("X-Relay-Provider"); p != "valid" {
			t.Fatalf("request %d answered by %q; want valid", i, p)
		}
	}
	if n := bad.requests(); n != 1 {
		t.Errorf("upstream refusing the provider key got %d requests; want 1", n)
	}
	if n := good.requests(); n != 10 {
		t.Errorf("healthy upstream got %d requests; want 10", n)
	}
	if st := badActor.State(); !st.AuthFailUntil.After(time.Now()) {
		t.Errorf("provider key not marked refused: AuthFailUntil %v", st.AuthFailUntil)
	}

	// With nothing else to try, the actor itself refuses the provider.
	rep := r.send("/v1/messages", anthropicHeaders(canaryKey), body("solo", ""))
	if rep.err != nil {
		t.Fatal(rep.err)
	}
	if rep.status == http.StatusOK {
		t.Errorf("route whose only provider key is refused answered 200")
	}
	t.Logf("single-target route with a refused key: %d %s (retry-after %q)", rep.status, rep.body, rep.header.Get("Retry-After"))
	if n := bad.requests(); n != 1 {
		t.Errorf("upstream refusing the provider key got %d requests; want still 1", n)
	}
	m := r.metricsText(t)
	if !strings.Contains(m, `provider="revoked",reason="provider_auth"`) {
		t.Errorf("metrics lack a provider_auth refusal for the revoked provider:\n%s", grepLines(m, "refusal"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestLimitsOutputTokenRefund checks that the output reservation
// (max_tokens) is settled to the real usage after each answer: forty
// requests each reserving half of the output-tokens-per-minute budget all
// go through, as each really produces 8 tokens. Streams read their usage
// from message_delta.
func TestLimitsOutputTokenRefund(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			r := newRelay(t, withActors(map[string]actor.Options{"anthropic-a": {OutputTPM: 1000}}))
			a := r.Actors["anthropic-a"]
			extra := ""
			if stream {
				extra = `,"stream":true`
			}
			req := `{"model":"claude-sonnet","max_tokens":500` + extra + `,"messages":[{"role":"user","content":"hello"}]}`
			for i := range 40 {
				rep := r.send("/v1/messages", anthropicHeaders(canaryKey), req)
				if rep.err != nil {
					t.Fatal(rep.err)
				}
				if rep.status != http.StatusOK {
					t.Fatalf("request %d: status = %d; want 200 (body %s; output bucket %+v)",
						i, rep.status, rep.body, a.State().OutputTokens)
				}
				if stream {
					if got := streamOutputTokens(t, rep.body); got != 8 {
						t.Fatalf("request %d: stream reports %d output tokens; want 8", i, got)
					}
				} else {
					var m struct {
						Usage struct {
							OutputTokens int `json:"output_tokens"`
						} `json:"usage"`
					}
					if err := json.Unmarshal(rep.body, &m); err != nil || m.Usage.OutputTokens != 8 {
						t.Fatalf("request %d: output_tokens = %d (%v); want 8", i, m.Usage.OutputTokens, err)
					}
				}
			}
			// 40 answers of 8 tokens each were charged; refill adds some back.
			if got := a.State().OutputTokens.Available; got < 1000-40*8 {
				t.Errorf("output bucket holds %.0f tokens; want >= %d after refunds", got, 1000-40*8)
			}
			if st := a.State(); st.InFlight != 0 {
				t.Errorf("%d permits still in flight", st.InFlight)
			}
		})
	}
}

// streamOutputTokens returns the output_tokens of an Anthropic stream's
// message_delta event.
func streamOutputTokens(t *testing.T, b []byte) int {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	out := -1
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Type  string `json:"type"`
			Usage struct {
				OutputTokens int `json:"output_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("stream event is not JSON: %v: %s", err, data)
		}
		if ev.Type == "message_delta" {
			out = ev.Usage.OutputTokens
		}
	}
	return out
}
