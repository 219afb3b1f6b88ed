package workers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/workerstest"
)

const (
	anthropicOK = `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":2,"output_tokens":1}}`
	openAIOK    = `{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}`
)

// keyUpstream answers generation calls whose body names the model
// "forbidden-model" with status and body, and others with 200; GET .../models
// (the key probe) answers probeStatus, after probeGate closes when set.
type keyUpstream struct {
	srv         *httptest.Server
	format      workers.Format
	status      int
	body        string
	probeStatus int
	probeGate   chan struct{}
	calls       atomic.Int64 // generation calls
	refused     atomic.Int64 // generation calls answered status
	probes      atomic.Int64
}

func newKeyUpstream(t *testing.T, k *keyUpstream) *keyUpstream {
	t.Helper()
	k.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/models") {
			k.probes.Add(1)
			if k.probeGate != nil {
				select {
				case <-k.probeGate:
				case <-r.Context().Done():
					return
				}
			}
			w.WriteHeader(k.probeStatus)
			fmt.Fprint(w, `{"data":[]}`)
			return
		}
		k.calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		if bytes.Contains(b, []byte(`"forbidden-model"`)) {
			k.refused.Add(1)
			w.WriteHeader(k.status)
			fmt.Fprint(w, k.body)
			return
		}
		if k.format == workers.FormatOpenAI {
			fmt.Fprint(w, openAIOK)
		} else {
			fmt.Fprint(w, anthropicOK)
		}
	}))
	t.Cleanup(k.srv.Close)
	return k
}

// keyTarget is a target on k with its own actor.
func keyTarget(t *testing.T, name string, k *keyUpstream, a *actor.Actor) workers.Target {
	t.Helper()
	base := k.srv.URL
	if k.format == workers.FormatOpenAI {
		base += "/v1"
	}
	p, err := workerstest.Provider(workers.ProviderOptions{Name: name, Format: k.format, BaseURL: base,
		APIKey: "k-" + name, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	return workers.Target{Provider: p, ProviderName: name, Format: k.format, Weight: 1, Timeout: 5 * time.Second, Actor: a}
}

// TestUpstreamAuthFailures checks which upstream 401 and 403 answers set a
// provider aside: a 401 at once; a 403 only when its body blames the key
// and the key probe is refused too. Every other 403 goes to its caller, and
// the provider keeps serving the next request.
func TestUpstreamAuthFailures(t *testing.T) {
	const (
		antPerm   = `{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}`
		antAuth   = `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`
		antOther  = `{"type":"error","error":{"type":"invalid_request_error","message":"nope"}}`
		oaRegion  = `{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}`
		oaModel   = `{"error":{"code":"model_not_found","message":"Project does not have access to model","param":null,"type":"invalid_request_error"}}`
		proxyPage = `<html><body>403 Forbidden</body></html>`
	)
	cases := []struct {
		name        string
		format      workers.Format
		status      int
		body        string
		probeStatus int
		wantProbes  int64
		benched     bool // the provider is set aside, the request served elsewhere
	}{
		{name: "401 benches at once", format: workers.FormatAnthropic, status: 401, body: antAuth, probeStatus: 200, benched: true},
		{name: "403 permission_error, key accepted", format: workers.FormatAnthropic, status: 403, body: antPerm, probeStatus: 200, wantProbes: 1},
		{name: "403 permission_error, key refused", format: workers.FormatAnthropic, status: 403, body: antPerm, probeStatus: 403, wantProbes: 1, benched: true},
		{name: "403 authentication_error, probe 401", format: workers.FormatAnthropic, status: 403, body: antAuth, probeStatus: 401, wantProbes: 1, benched: true},
		{name: "403 probe inconclusive", format: workers.FormatAnthropic, status: 403, body: antPerm, probeStatus: 503, wantProbes: 1},
		{name: "403 not blaming the key", format: workers.FormatAnthropic, status: 403, body: antOther, probeStatus: 403},
		{name: "openai 403 region, key refused", format: workers.FormatOpenAI, status: 403, body: oaRegion, probeStatus: 403, wantProbes: 1, benched: true},
		{name: "openai 403 model access", format: workers.FormatOpenAI, status: 403, body: oaModel, probeStatus: 403},
		{name: "403 from a proxy, probe refused", format: workers.FormatAnthropic, status: 403, body: proxyPage, probeStatus: 403, wantProbes: 1, benched: true},
		{name: "403 from a proxy, probe accepted", format: workers.FormatAnthropic, status: 403, body: proxyPage, probeStatus: 200, wantProbes: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			suspect := newKeyUpstream(t, &keyUpstream{format: tc.format, status: tc.status, body: tc.body, probeStatus: tc.probeStatus})
			other := newKeyUpstream(t, &keyUpstream{format: workers.FormatAnthropic, probeStatus: 200})
			sa := workerstest.Actor(actor.Options{Name: "suspect"})
			st, ot := keyTarget(t, "suspect", suspect, sa), keyTarget(t, "other", other, workerstest.Actor(actor.Options{Name: "other"}))
			st.Model = "forbidden-model"
			solo := st
			solo.Model = "allowed-model"
			r, err := workerstest.Router(workers.RouterOptions{Backoff: time.Millisecond, Routes: []workers.RouteSpec{
				{Model: "m", Targets: []workers.Target{st, ot}},
				{Model: "solo", Targets: []workers.Target{solo}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := r.Do(context.Background(), request(t, "m"), nil)
			if err != nil {
				t.Fatalf("Do(m): %v", err)
			}
			switch {
			case tc.benched && (resp.Provider != "other" || resp.StatusCode != 200):
				t.Errorf("Do(m) = %s %d; want served by other", resp.Provider, resp.StatusCode)
			case !tc.benched && (resp.Provider != "suspect" || resp.StatusCode != tc.status):
				t.Errorf("Do(m) = %s %d; want the suspect's %d passed through", resp.Provider, resp.StatusCode, tc.status)
			case !tc.benched && tc.format == workers.FormatAnthropic && string(resp.Body) != tc.body:
				t.Errorf("403 body = %s; want the upstream's %s", resp.Body, tc.body)
			case !tc.benched && other.calls.Load() != 0:
				t.Errorf("a 403 passed through was also tried elsewhere (%d calls)", other.calls.Load())
			}
			if n := suspect.probes.Load(); n != tc.wantProbes {
				t.Errorf("key probes = %d; want %d", n, tc.wantProbes)
			}

			// The next request, which the suspect would serve, finds it set
			// aside or serving.
			resp, err = r.Do(context.Background(), request(t, "solo"), nil)
			if tc.benched {
				var we *workers.Error
				if !errors.As(err, &we) || len(we.Refusals) != 1 || we.Refusals[0].Reason != actor.ReasonProviderAuth {
					t.Fatalf("Do(solo) = %v, %v; want a provider_auth refusal", resp, err)
				}
				if n := suspect.calls.Load(); n != 1 {
					t.Errorf("benched provider got %d calls; want 1", n)
				}
				if st.Provider.HealthCheck() {
					t.Errorf("benched provider passes its health check")
				}
				return
			}
			if err != nil || resp.Provider != "suspect" || resp.StatusCode != 200 {
				t.Fatalf("Do(solo) = %v, %v; want served by suspect", resp, err)
			}
			if !st.Provider.HealthCheck() || sa.State().AuthFailUntil.After(time.Now()) {
				t.Errorf("a 403 caused by the request set the provider aside")
			}
		})
	}
}

// TestKeyProbeOncePerSuspicion checks that concurrent 403s share one key
// probe, and that 403s while its verdict stands make none.
func TestKeyProbeOncePerSuspicion(t *testing.T) {
	const n = 6
	gate := make(chan struct{})
	up := newKeyUpstream(t, &keyUpstream{format: workers.FormatAnthropic, status: 403, probeStatus: 200, probeGate: gate,
		body: `{"type":"error","error":{"type":"permission_error","message":"no"}}`})
	tg := keyTarget(t, "p", up, workerstest.Actor(actor.Options{Name: "p"}))
	tg.Model = "forbidden-model"
	r, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{{Model: "m", Targets: []workers.Target{tg}}}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := r.Do(context.Background(), request(t, "m"), nil); err == nil {
				statuses[i] = resp.StatusCode
			}
		}()
	}
	// The probe answers once every request has had its 403.
	deadline := time.After(10 * time.Second)
	for up.refused.Load() < n {
		select {
		case <-deadline:
			t.Fatalf("only %d of %d requests reached the upstream", up.refused.Load(), n)
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(gate)
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusForbidden {
			t.Errorf("request %d: status %d; want 403 passed through", i, s)
		}
	}
	if resp, err := r.Do(context.Background(), request(t, "m"), nil); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("403 after the verdict: %v, %v; want 403", resp, err)
	}
	if got := up.probes.Load(); got != 1 {
		t.Errorf("key probes = %d; want 1", got)
	}
}
