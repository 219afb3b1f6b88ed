package workers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/wire"
	"github.com/relaygw/relay/workers/workerstest"
)

// pacedUpstream answers after headerDelay (never, when negative), then, for
// a stream, sends message_start, pings pings gap apart and message_stop.
func pacedUpstream(t *testing.T, headerDelay time.Duration, pings int, gap time.Duration) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if headerDelay < 0 {
			<-r.Context().Done()
			return
		}
		select {
		case <-time.After(headerDelay):
		case <-r.Context().Done():
			return
		}
		if r.Header.Get("Accept") != "text/event-stream" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":2,"output_tokens":1}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":2,\"output_tokens\":0}}}\n\n")
		fl.Flush()
		for range pings {
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				return
			}
			fmt.Fprint(w, "event: ping\ndata: {\"type\":\"ping\"}\n\n")
			fl.Flush()
		}
		fmt.Fprint(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// pacedTarget is a target on srv with a 10m timeout and firstByte for the
// response headers.
func pacedTarget(t *testing.T, name string, srv *httptest.Server, firstByte time.Duration) workers.Target {
	t.Helper()
	p, err := workerstest.Provider(workers.ProviderOptions{Name: name, Format: workers.FormatAnthropic, BaseURL: srv.URL,
		APIKey: "k-" + name, Timeout: 10 * time.Minute, FirstByteTimeout: firstByte})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	return workers.Target{Provider: p, ProviderName: name, Format: workers.FormatAnthropic, Weight: 1, Timeout: 10 * time.Minute}
}

// attemptCount reads relay_upstream_attempts_total for provider and outcome.
func attemptCount(t *testing.T, reg *prometheus.Registry, provider, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "relay_upstream_attempts_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["provider"] == provider && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// drainStream reads a streamed answer to its end.
func drainStream(t *testing.T, s *workers.Stream) int {
	t.Helper()
	defer s.Close()
	n := 0
	for {
		_, err := s.Next()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("stream broke after %d events: %v", n, err)
		}
		n++
	}
}

// TestFirstByteTimeout checks that a streaming call whose upstream sends no
// headers within first_byte_timeout fails over as a timeout, while a
// stream that started and then trickles, and a slow non-streaming answer,
// are never cut by it.
func TestFirstByteTimeout(t *testing.T) {
	const firstByte = 200 * time.Millisecond
	cases := []struct {
		name        string
		stream      bool
		headerDelay time.Duration // of the first target; < 0: never
		pings       int
		gap         time.Duration
		wantServer  string
		wantTimeout float64 // timeouts counted for "first"
	}{
		{name: "hung stream fails over", stream: true, headerDelay: -1, wantServer: "second", wantTimeout: 1},
		{name: "slow stream is not cut", stream: true, pings: 5, gap: 120 * time.Millisecond, wantServer: "first"},
		{name: "slow non-stream is not cut", headerDelay: 2 * firstByte, wantServer: "first"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			first := pacedTarget(t, "first", pacedUpstream(t, tc.headerDelay, tc.pings, tc.gap), firstByte)
			second := pacedTarget(t, "second", pacedUpstream(t, 0, 0, 0), firstByte)
			reg := prometheus.NewRegistry()
			r, err := workerstest.Router(workers.RouterOptions{Metrics: workers.NewMetrics(reg),
				Routes: []workers.RouteSpec{{Model: "m", Targets: []workers.Target{first, second}}}})
			if err != nil {
				t.Fatal(err)
			}
			req := request(t, "m")
			if tc.stream {
				req.Body = []byte(`{"model":"m","max_tokens":5,"stream":true,"messages":[]}`)
				if req.Fields, err = wire.Peek(req.Body, 0); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := r.Do(ctx, req, nil)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if resp.Provider != tc.wantServer || resp.StatusCode != http.StatusOK {
				t.Errorf("served by %s with %d; want %s with 200", resp.Provider, resp.StatusCode, tc.wantServer)
			}
			if resp.Stream != nil {
				if n := drainStream(t, resp.Stream); n < tc.pings+2 {
					t.Errorf("stream yielded %d events; want at least %d", n, tc.pings+2)
				}
			}
			if got := attemptCount(t, reg, "first", "timeout"); got != tc.wantTimeout {
				t.Errorf("timeouts counted for first = %v; want %v", got, tc.wantTimeout)
			}
		})
	}
}

// TestProviderFirstByteTimeout: the first byte timeout is cut to the
// call's timeout, and the provider refuses zero timeouts (their defaults
// are the configuration's, see configs.TestFirstByteTimeout).
func TestProviderFirstByteTimeout(t *testing.T) {
	cases := []struct {
		timeout, firstByte, want time.Duration
	}{
		{0, 0, 0},
		{30 * time.Second, 0, 0},
		{0, time.Minute, 0},
		{30 * time.Second, 30 * time.Second, 30 * time.Second},
		{10 * time.Minute, 2 * time.Minute, 2 * time.Minute},
		{time.Minute, 2 * time.Minute, time.Minute},
	}
	for _, tc := range cases {
		p, err := workers.NewProvider(workers.ProviderOptions{Name: "p", Format: workers.FormatOpenAI,
			BaseURL: "http://127.0.0.1:1/v1", Timeout: tc.timeout, FirstByteTimeout: tc.firstByte})
		if tc.want == 0 {
			if err == nil {
				t.Errorf("timeout %v, first_byte_timeout %v: no error", tc.timeout, tc.firstByte)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := p.FirstByteTimeout(); got != tc.want {
			t.Errorf("timeout %v, first_byte_timeout %v: got %v; want %v", tc.timeout, tc.firstByte, got, tc.want)
		}
	}
}
