package simupstream_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaygw/relay/workers/simupstream"
	"github.com/tidwall/gjson"
)

// api is one endpoint family under test.
type api struct {
	name   string
	path   string
	body   string // non-stream request body
	stream string // streaming request body
}

func apis() []api {
	return []api{
		{"anthropic", "/v1/messages", anthropicBody, strings.Replace(anthropicBody, `{`, `{"stream":true,`, 1)},
		{"openai", "/v1/chat/completions", openAIBody, strings.Replace(openAIBody, `{`, `{"stream":true,`, 1)},
	}
}

// checkErrorShape checks that body is the error shape of a's API with the
// given error type (and, for OpenAI, code).
func checkErrorShape(t *testing.T, a api, body []byte, anthType, oaiType, oaiCode string) {
	t.Helper()
	if a.name == "anthropic" {
		if got := gjson.GetBytes(body, "type").String(); got != "error" {
			t.Errorf("type = %q; want error (body %s)", got, body)
		}
		if got := gjson.GetBytes(body, "error.type").String(); got != anthType {
			t.Errorf("error.type = %q; want %q (body %s)", got, anthType, body)
		}
		if !gjson.GetBytes(body, "error.message").Exists() {
			t.Errorf("error.message missing (body %s)", body)
		}
		return
	}
	for _, f := range []string{"message", "type", "param", "code"} {
		if !gjson.GetBytes(body, "error."+f).Exists() {
			t.Errorf("error.%s missing (body %s)", f, body)
		}
	}
	if got := gjson.GetBytes(body, "error.type").String(); got != oaiType {
		t.Errorf("error.type = %q; want %q (body %s)", got, oaiType, body)
	}
	if got := gjson.GetBytes(body, "error.code").String(); got != oaiCode {
		t.Errorf("error.code = %q; want %q (body %s)", got, oaiCode, body)
	}
}

func TestFaults(t *testing.T) {
	errorFaults := []struct {
		fault      simupstream.Fault
		status     int
		anthType   string
		oaiType    string
		oaiCode    string
		retryAfter string
	}{
		{simupstream.Fault500, 500, "api_error", "server_error", "", ""},
		{simupstream.Fault503, 503, "api_error", "server_error", "", ""},
		{simupstream.Fault529, 529, "overloaded_error", "server_error", "overloaded", ""},
		{simupstream.Fault429, 429, "rate_limit_error", "requests", "rate_limit_exceeded", "1"},
		{simupstream.Fault401, 401, "authentication_error", "invalid_request_error", "invalid_api_key", ""},
		{simupstream.Fault400, 400, "invalid_request_error", "invalid_request_error", "", ""},
	}
	ways := []struct {
		name string
		set  func(s *simupstream.Server, f simupstream.Fault) map[string]string
	}{
		{"SetFault", func(s *simupstream.Server, f simupstream.Fault) map[string]string {
			s.SetFault(f)
			return nil
		}},
		{"header", func(_ *simupstream.Server, f simupstream.Fault) map[string]string {
			return map[string]string{"x-sim-fault": string(f)}
		}},
	}
	for _, a := range apis() {
		for _, way := range ways {
			for _, tc := range errorFaults {
				t.Run(a.name+"/"+way.name+"/"+string(tc.fault), func(t *testing.T) {
					s := start(t, simupstream.Options{})
					hdr := way.set(s, tc.fault)
					resp, body, err := do(t.Context(), httpClient(t), http.MethodPost, s.URL()+a.path, a.body, hdr)
					if err != nil {
						t.Fatalf("POST %s: %v", a.path, err)
					}
					if resp.StatusCode != tc.status {
						t.Errorf("status = %d; want %d", resp.StatusCode, tc.status)
					}
					if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
						t.Errorf("retry-after = %q; want %q", got, tc.retryAfter)
					}
					checkErrorShape(t, a, body, tc.anthType, tc.oaiType, tc.oaiCode)
					if got := s.Stats().ByStatus[tc.status]; got != 1 {
						t.Errorf("Stats().ByStatus[%d] = %d; want 1", tc.status, got)
					}
				})
			}
			t.Run(a.name+"/"+way.name+"/connection", func(t *testing.T) {
				testConnectionFaults(t, a, way.set)
			})
		}
	}
}

// testConnectionFaults covers the faults that are not error replies.
func testConnectionFaults(t *testing.T, a api, set func(*simupstream.Server, simupstream.Fault) map[string]string) {
	tests := []struct {
		name  string
		fault simupstream.Fault
		body  string
		check func(t *testing.T, s *simupstream.Server, resp *http.Response, body []byte, err error)
	}{
		{"garbage", simupstream.FaultGarbage, a.body, func(t *testing.T, _ *simupstream.Server, resp *http.Response, body []byte, err error) {
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html" || string(body) != "<html>oops</html>" {
				t.Errorf("reply = %d %q %q; want 200 text/html <html>oops</html>", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
		}},
		{"cut-non-stream", simupstream.FaultCut, a.body, func(t *testing.T, _ *simupstream.Server, resp *http.Response, body []byte, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("read error = %v; want unexpected EOF", err)
			}
			if resp == nil || resp.StatusCode != 200 || len(body) == 0 || int64(len(body)) >= resp.ContentLength {
				t.Errorf("reply = %v, %d bytes; want 200 with part of the body", resp, len(body))
			}
		}},
		{"cut-stream", simupstream.FaultCut, a.stream, func(t *testing.T, _ *simupstream.Server, resp *http.Response, body []byte, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("read error = %v; want unexpected EOF", err)
			}
			if resp == nil || resp.StatusCode != 200 || !strings.Contains(string(body), "tok0") || strings.Contains(string(body), "tok1") {
				t.Errorf("reply = %v, %q; want 200 with the first token only", resp, body)
			}
		}},
		{"reset", simupstream.FaultReset, a.body, func(t *testing.T, s *simupstream.Server, resp *http.Response, _ []byte, err error) {
			if err == nil {
				t.Errorf("POST = %d; want a connection error", resp.StatusCode)
			}
			if got := s.Stats().ByStatus[0]; got != 1 {
				t.Errorf("Stats().ByStatus[0] = %d; want 1", got)
			}
		}},
		{"hang", simupstream.FaultHang, a.body, func(t *testing.T, s *simupstream.Server, _ *http.Response, _ []byte, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("POST error = %v; want deadline exceeded", err)
			}
			waitFor(t, "the hung handler to see the client leave", func() bool {
				st := s.Stats()
				return st.ByStatus[0] == 1 && st.InFlight == 0
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, simupstream.Options{})
			hdr := set(s, tc.fault)
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			resp, body, err := do(ctx, httpClient(t), http.MethodPost, s.URL()+a.path, tc.body, hdr)
			tc.check(t, s, resp, body, err)
		})
	}
}

func TestBadRequests(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		path      string
		body      string
		hdr       map[string]string
		status    int
		anthropic bool
	}{
		{"anthropic invalid JSON", "POST", "/v1/messages", `{"model":`, nil, 400, true},
		{"anthropic missing model", "POST", "/v1/messages", `{"max_tokens":5,"messages":[]}`, nil, 400, true},
		{"count_tokens missing model", "POST", "/v1/messages/count_tokens", `{"messages":[]}`, nil, 400, true},
		{"openai invalid JSON", "POST", "/v1/chat/completions", `nope`, nil, 400, false},
		{"openai missing model", "POST", "/v1/chat/completions", `{"messages":[]}`, nil, 400, false},
		{"openai model not a string", "POST", "/v1/chat/completions", `{"model":3,"messages":[]}`, nil, 400, false},
		{"unknown fault header", "POST", "/v1/messages", anthropicBody, map[string]string{"x-sim-fault": "boom"}, 400, true},
		{"bad latency header", "POST", "/v1/chat/completions", openAIBody, map[string]string{"x-sim-latency": "soon"}, 400, false},
		{"unknown path", "POST", "/v1/embeddings", `{}`, nil, 404, false},
		{"unknown anthropic path", "POST", "/v1/messages/batches", `{}`, nil, 404, true},
		{"wrong method", "GET", "/v1/chat/completions", "", nil, 405, false},
	}
	s := start(t, simupstream.Options{})
	hc := httpClient(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := do(t.Context(), hc, tc.method, s.URL()+tc.path, tc.body, tc.hdr)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, tc.path, err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("%s %s = %d; want %d", tc.method, tc.path, resp.StatusCode, tc.status)
			}
			shape := "error.param"
			if tc.anthropic {
				shape = "request_id"
			}
			if !gjson.GetBytes(body, shape).Exists() || !gjson.GetBytes(body, "error.message").Exists() {
				t.Errorf("body = %s; want the error shape with %s", body, shape)
			}
		})
	}
}
