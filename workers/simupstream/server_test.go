package simupstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaygw/relay/workers/simupstream"
	"github.com/tidwall/gjson"
)

func TestStreamWireFormat(t *testing.T) {
	s := start(t, simupstream.Options{OutputTokens: 3})
	hc := httpClient(t)

	t.Run("anthropic", func(t *testing.T) {
		resp, body, err := do(t.Context(), hc, http.MethodPost, s.URL()+"/v1/messages?beta=true", apis()[0].stream, nil)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Errorf("Content-Type = %q; want text/event-stream", ct)
		}
		var names []string
		for _, ev := range parseSSE(t, body) {
			names = append(names, ev.name)
			if got := gjson.Get(ev.data, "type").String(); got != ev.name {
				t.Errorf("event %q carries type %q", ev.name, got)
			}
		}
		want := "message_start content_block_start content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
		if got := strings.Join(names, " "); got != want {
			t.Errorf("events = %s; want %s", got, want)
		}
	})

	tests := []struct {
		name string
		body string
		want []string // per chunk: "role", "content", "finish", "usage", "done"
	}{
		{"openai", apis()[1].stream, []string{"role", "content", "content", "content", "finish", "done"}},
		{"openai-include-usage", strings.Replace(apis()[1].stream, `{`, `{"stream_options":{"include_usage":true},`, 1),
			[]string{"role", "content", "content", "content", "finish", "usage", "done"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, body, err := do(t.Context(), hc, http.MethodPost, s.URL()+"/v1/chat/completions", tc.body, nil)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			var kinds []string
			for _, ev := range parseSSE(t, body) {
				if ev.name != "" {
					t.Errorf("OpenAI event has a name %q", ev.name)
				}
				d := gjson.Parse(ev.data)
				switch {
				case ev.data == "[DONE]":
					kinds = append(kinds, "done")
				case len(d.Get("choices").Array()) == 0:
					kinds = append(kinds, "usage")
				case d.Get("choices.0.finish_reason").String() != "":
					kinds = append(kinds, "finish")
				case d.Get("choices.0.delta.role").Exists():
					kinds = append(kinds, "role")
				default:
					kinds = append(kinds, "content")
				}
				usage := d.Get("usage")
				if wantNull := strings.Contains(tc.name, "usage") && ev.data != "[DONE]" && len(d.Get("choices").Array()) > 0; wantNull && usage.Type != gjson.Null {
					t.Errorf("chunk %s: usage = %s; want null", ev.data, usage.Raw)
				}
			}
			if got, want := strings.Join(kinds, " "), strings.Join(tc.want, " "); got != want {
				t.Errorf("chunks = %s; want %s", got, want)
			}
		})
	}
}

func TestRPSLimit(t *testing.T) {
	tests := []struct {
		name, path, body, remaining string
	}{
		{"anthropic", "/v1/messages", anthropicBody, "anthropic-ratelimit-requests-remaining"},
		{"openai", "/v1/chat/completions", openAIBody, "x-ratelimit-remaining-requests"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, simupstream.Options{RPS: 2}) // burst 2, one token per 500ms
			hc := httpClient(t)
			var ok, limited int64
			for i := range 6 {
				resp, body, err := do(t.Context(), hc, http.MethodPost, s.URL()+tc.path, tc.body, nil)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if resp.Header.Get(tc.remaining) == "" {
					t.Errorf("request %d: no %s header", i, tc.remaining)
				}
				switch resp.StatusCode {
				case http.StatusOK:
					ok++
				case http.StatusTooManyRequests:
					limited++
					ra, err1 := strconv.Atoi(resp.Header.Get("Retry-After"))
					ms, err2 := strconv.Atoi(resp.Header.Get("Retry-After-Ms"))
					if err1 != nil || err2 != nil || ra < 1 || ms < 1 || ms > 1000*ra {
						t.Errorf("429 retry-after = %q, retry-after-ms = %q; want whole seconds >= 1 and ms within them",
							resp.Header.Get("Retry-After"), resp.Header.Get("Retry-After-Ms"))
					}
					checkErrorShape(t, api{name: tc.name}, body, "rate_limit_error", "requests", "rate_limit_exceeded")
				default:
					t.Errorf("request %d: status %d", i, resp.StatusCode)
				}
				if i < 2 && resp.StatusCode != http.StatusOK {
					t.Errorf("request %d within the burst: status %d; want 200", i, resp.StatusCode)
				}
			}
			if ok > 3 || limited < 3 {
				t.Errorf("got %d ok, %d limited out of 6 at 2 rps; want at most 3 ok", ok, limited)
			}
			if st := s.Stats(); st.RateLimited != limited || st.ByStatus[429] != limited || st.Requests != 6 {
				t.Errorf("Stats() = %+v; want %d rate limited of 6", st, limited)
			}
		})
	}
}

// TestNoRateHeaders: with NoRateHeaders the RPS limit sends no
// rate-limit headers, on a 200 or a 429, but a 429 keeps retry-after.
func TestNoRateHeaders(t *testing.T) {
	s := start(t, simupstream.Options{RPS: 1, NoRateHeaders: true})
	hc := httpClient(t)
	var limited bool
	for i := 0; i < 20 && !limited; i++ {
		resp, _, err := do(t.Context(), hc, http.MethodPost, s.URL()+"/v1/messages", anthropicBody, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k := range resp.Header {
			if strings.Contains(strings.ToLower(k), "ratelimit") {
				t.Errorf("request %d: header %s sent", i, k)
			}
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			limited = true
			if resp.Header.Get("Retry-After") == "" || resp.Header.Get("Retry-After-Ms") == "" {
				t.Errorf("429 without retry-after: %v", resp.Header)
			}
		}
	}
	if !limited {
		t.Error("20 requests in a row at 1 rps: none refused")
	}
	if by := s.Stats().RateLimitedBy; by[simupstream.LimitRPS] < 1 {
		t.Errorf("rate_limited_by = %v; want rps counted", by)
	}
}

func TestMaxConcurrency(t *testing.T) {
	s := start(t, simupstream.Options{MaxConcurrency: 2})
	hc := httpClient(t)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			_, _, _ = do(ctx, hc, http.MethodPost, s.URL()+"/v1/messages", anthropicBody, map[string]string{"x-sim-fault": "hang"})
		})
	}
	waitFor(t, "two requests in flight", func() bool { return s.Stats().InFlight == 2 })

	resp, body, err := do(t.Context(), hc, http.MethodPost, s.URL()+"/v1/messages", anthropicBody, nil)
	if err != nil {
		t.Fatalf("third request: %v", err)
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("third request = %d retry-after %q; want 429 with retry-after 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	checkErrorShape(t, apis()[0], body, "rate_limit_error", "", "")

	cancel()
	wg.Wait()
	waitFor(t, "no requests in flight", func() bool { return s.Stats().InFlight == 0 })
	resp, _, err = do(t.Context(), hc, http.MethodPost, s.URL()+"/v1/messages", anthropicBody, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("request after the hung ones left = %v, %v; want 200", resp, err)
	}
	if st := s.Stats(); st.MaxInFlight != 2 || st.RateLimited != 1 {
		t.Errorf("Stats() = %+v; want MaxInFlight 2, RateLimited 1", st)
	}
}

func TestCloseReleasesHung(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (s *simupstream.Server, url string, done func())
	}{
		{"Start", func(t *testing.T) (*simupstream.Server, string, func()) {
			s, err := simupstream.Start(t.Context(), "", simupstream.Options{})
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			return s, s.URL(), func() {}
		}},
		{"Handler", func(t *testing.T) (*simupstream.Server, string, func()) {
			s := simupstream.New(simupstream.Options{})
			ts := httptest.NewServer(s.Handler())
			return s, ts.URL, ts.Close
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, url, done := tc.setup(t)
			defer done()
			s.SetFault(simupstream.FaultHang)
			hc := httpClient(t)
			type result struct {
				status int
				err    error
			}
			res := make(chan result, 1)
			go func() {
				resp, _, err := do(t.Context(), hc, http.MethodPost, url+"/v1/chat/completions", openAIBody, nil)
				if err != nil {
					res <- result{0, err}
					return
				}
				res <- result{resp.StatusCode, nil}
			}()
			waitFor(t, "the request to hang", func() bool { return s.Stats().InFlight == 1 })

			begin := time.Now()
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if d := time.Since(begin); d > 2*time.Second {
				t.Errorf("Close took %v; want it to release the hung handler", d)
			}
			if r := <-res; r.err == nil && r.status != http.StatusServiceUnavailable {
				t.Errorf("hung request = %d; want 503 or a connection error", r.status)
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestRequests(t *testing.T) {
	s := start(t, simupstream.Options{Record: 2})
	hc := httpClient(t)
	for i := range 3 {
		key := "sk-" + strconv.Itoa(i)
		body := strings.Replace(anthropicBody, "hello", "hello "+key, 1)
		if _, _, err := do(t.Context(), hc, http.MethodPost, s.URL()+"/v1/messages?beta=true", body, map[string]string{"x-api-key": key}); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	got := s.Requests()
	if len(got) != 2 {
		t.Fatalf("Requests() has %d entries; want 2", len(got))
	}
	for i, r := range got {
		key := "sk-" + strconv.Itoa(i+1)
		if r.Method != http.MethodPost || r.Path != "/v1/messages" || r.RawQuery != "beta=true" {
			t.Errorf("Requests()[%d] = %s %s ? %s; want POST /v1/messages ? beta=true", i, r.Method, r.Path, r.RawQuery)
		}
		if h := r.Header.Get("X-Api-Key"); h != key {
			t.Errorf("Requests()[%d] x-api-key = %q; want %q", i, h, key)
		}
		if !bytes.Contains(r.Body, []byte("hello "+key)) {
			t.Errorf("Requests()[%d] body = %s; want it to contain %q", i, r.Body, "hello "+key)
		}
	}
	got[0].Header.Set("X-Api-Key", "changed")
	got[0].Body[0] = 'X'
	again := s.Requests()
	if again[0].Header.Get("X-Api-Key") != "sk-1" || again[0].Body[0] != '{' {
		t.Errorf("Requests() returned shared state: %+v", again[0])
	}
}

func TestControlEndpoints(t *testing.T) {
	s := start(t, simupstream.Options{})
	hc := httpClient(t)
	post := func(path, body string) (*http.Response, []byte) {
		t.Helper()
		resp, b, err := do(t.Context(), hc, http.MethodPost, s.URL()+path, body, nil)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		return resp, b
	}
	steps := []struct {
		path, body string
		want       int
	}{
		{"/_sim/fault?f=529", "", 200},
		{"/v1/messages", anthropicBody, 529},
		{"/_sim/fault?f=bogus", "", 400},
		{"/v1/messages", anthropicBody, 529},
		{"/_sim/fault?f=", "", 200},
		{"/v1/messages", anthropicBody, 200},
		{"/_sim/latency?d=1ms", "", 200},
		{"/_sim/latency?d=later", "", 400},
		{"/_sim/nothing", "", 404},
	}
	for _, st := range steps {
		if resp, b := post(st.path, st.body); resp.StatusCode != st.want {
			t.Errorf("POST %s = %d %s; want %d", st.path, resp.StatusCode, b, st.want)
		}
	}
	resp, b, err := do(t.Context(), hc, http.MethodGet, s.URL()+"/_sim/stats", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /_sim/stats = %v, %v", resp, err)
	}
	var stats simupstream.Stats
	if err := json.Unmarshal(b, &stats); err != nil {
		t.Fatalf("decode stats %s: %v", b, err)
	}
	if stats.Requests != 3 || stats.ByStatus[529] != 2 || stats.ByStatus[200] != 1 {
		t.Errorf("stats = %+v; want 3 requests: two 529, one 200", stats)
	}
}

func TestLatency(t *testing.T) {
	stream := strings.Replace(anthropicBody, `{`, `{"stream":true,`, 1)
	tests := []struct {
		name    string
		opts    simupstream.Options
		latency time.Duration // SetLatency, if not 0
		hdr     map[string]string
		body    string
		atLeast time.Duration
		atMost  time.Duration
	}{
		{"none", simupstream.Options{}, 0, nil, anthropicBody, 0, time.Second},
		{"option", simupstream.Options{Latency: 80 * time.Millisecond}, 0, nil, anthropicBody, 80 * time.Millisecond, time.Second},
		{"SetLatency", simupstream.Options{}, 80 * time.Millisecond, nil, anthropicBody, 80 * time.Millisecond, time.Second},
		{"header overrides", simupstream.Options{Latency: time.Minute}, 0, map[string]string{"x-sim-latency": "80ms"}, anthropicBody, 80 * time.Millisecond, time.Second},
		{"token interval", simupstream.Options{TokenInterval: 20 * time.Millisecond, OutputTokens: 5}, 0, nil, stream, 80 * time.Millisecond, time.Second},
		{"token interval non-stream", simupstream.Options{TokenInterval: time.Minute}, 0, nil, anthropicBody, 0, time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, tc.opts)
			if tc.latency != 0 {
				s.SetLatency(tc.latency)
			}
			begin := time.Now()
			resp, _, err := do(t.Context(), httpClient(t), http.MethodPost, s.URL()+"/v1/messages", tc.body, tc.hdr)
			d := time.Since(begin)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("POST = %v, %v; want 200", resp, err)
			}
			if d < tc.atLeast || d > tc.atMost {
				t.Errorf("POST took %v; want between %v and %v", d, tc.atLeast, tc.atMost)
			}
		})
	}
}
