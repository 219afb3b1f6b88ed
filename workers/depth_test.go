package workers_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/wire"
	"github.com/relaygw/relay/workers/workerstest"
)

// deepUpstream answers every request with body and content type ct.
func deepUpstream(t *testing.T, ct string, body []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// deepRouter routes model "m" to one upstream of format f at srv, with
// nesting bounded at 32 levels.
func deepRouter(t *testing.T, f workers.Format, srv *httptest.Server) *workers.Router {
	t.Helper()
	base := srv.URL
	if f == workers.FormatOpenAI {
		base += "/v1"
	}
	p, err := workerstest.Provider(workers.ProviderOptions{Name: "p", Format: f, BaseURL: base, APIKey: "k", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	r, err := workerstest.Router(workers.RouterOptions{MaxAttempts: 1, MaxJSONDepth: 32, Routes: []workers.RouteSpec{{Model: "m",
		Targets: []workers.Target{{Provider: p, ProviderName: "p", Format: f, Weight: 1, Timeout: 5 * time.Second}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDeepUpstreamAnswer checks an upstream answer nested past the limit
// (by millions of levels) is garbage, in the same format and translated.
func TestDeepUpstreamAnswer(t *testing.T) {
	deep := append([]byte(`{"id":"x","content":[{"type":"text","text":"a","x":`), bytes.Repeat([]byte(`[{"a":`), 1<<20)...)
	for _, tc := range []struct {
		name     string
		upstream workers.Format
	}{
		{"same format", workers.FormatAnthropic},
		{"translated", workers.FormatOpenAI},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := deepRouter(t, tc.upstream, deepUpstream(t, "application/json", deep))
			resp, err := r.Do(context.Background(), request(t, "m"), nil)
			var we *workers.Error
			if !errors.As(err, &we) || len(we.Failures) != 1 || we.Failures[0].Kind != workers.FailGarbage {
				t.Fatalf("Do = %v, %v; want one garbage failure", resp, err)
			}
			if !errors.Is(we.Failures[0].Err, wire.ErrTooDeep) {
				t.Errorf("failure %v does not say too deep", we.Failures[0].Err)
			}
		})
	}
}

// TestDeepStreamEvent checks a stream event nested past the limit breaks
// the stream, in the same format and translated.
func TestDeepStreamEvent(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upstream workers.Format
		events   []byte
	}{
		{"same format", workers.FormatAnthropic, append([]byte("event: message_start\n"+
			`data: {"type":"message_start","message":{"id":"m1","model":"m","usage":{"input_tokens":1}}}`+"\n\n"+
			"event: content_block_delta\ndata: "), bytes.Repeat([]byte("["), 4<<20)...)},
		{"translated", workers.FormatOpenAI, append([]byte(
			`data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"}}]}`+"\n\n"+
				"data: "), bytes.Repeat([]byte(`{"a":`), 1<<20)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := deepRouter(t, tc.upstream, deepUpstream(t, "text/event-stream", append(tc.events, "\n\n"...)))
			req := request(t, "m")
			req.Body = []byte(`{"model":"m","max_tokens":5,"stream":true,"messages":[]}`)
			req.Fields.Stream = true
			resp, err := r.Do(context.Background(), req, nil)
			if err != nil || resp.Stream == nil {
				t.Fatalf("Do = %v, %v; want a stream", resp, err)
			}
			defer resp.Stream.Close()
			events := 0
			for {
				_, err := resp.Stream.Next()
				if err == nil {
					events++
					continue
				}
				if !errors.Is(err, wire.ErrTooDeep) {
					t.Fatalf("after %d events: %v; want wire.ErrTooDeep", events, err)
				}
				break
			}
			if events == 0 {
				t.Errorf("the events before the deep one were not relayed")
			}
		})
	}
}
