package gateway_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDeepJSONRefused sends bodies nested millions of levels deep, in
// several shapes, to every endpoint that reads JSON: each gets 400
// invalid_request_error in the caller's format naming the limit, quickly,
// and the relay (this test process) lives on to answer a normal request.
func TestDeepJSONRefused(t *testing.T) {
	const limit = 64
	br := newRelay(t, batchSetup(t, batchJobs(4), withMaxJSONDepth(limit))...)
	const n = 1 << 20 // levels per shape: 1-6 MB bodies
	rep := func(s string, k int) string { return strings.Repeat(s, k) }
	shapes := []struct {
		name string
		body func(model string) string
		raw  bool // sent as is, not wrapped in a job or batch envelope
	}{
		{name: "arrays", raw: true, body: func(string) string { return rep("[", 3*n) }},
		{name: "objects", raw: true, body: func(string) string { return rep(`{"a":`, n) }},
		{name: "in messages content", body: func(m string) string {
			return `{"model":"` + m + `","max_tokens":5,"messages":[{"role":"user","content":` + rep("[", 3*n)
		}},
		{name: "after escaped strings", body: func(m string) string {
			return `{"model":"` + m + `","s":"\"[[\\","t":"\\\\","x":` + rep(`[{"\"":`, n/2)
		}},
		{name: "mixed closed", body: func(m string) string {
			return `{"model":"` + m + `","messages":[],"x":` + rep(`[{"a":`, n/2) + "1" + rep("}]", n/2) + "}"
		}},
		{name: "unclosed objects and arrays", body: func(m string) string {
			return `{"model":"` + m + `","messages":[{"role":"user","content":"hi"}],"metadata":` + rep(`{"a":[`, n/2)
		}},
	}
	endpoints := []struct {
		path, model string
		openai      bool
		wrap        func(string) string
	}{
		{path: "/v1/messages", model: "claude-sonnet"},
		{path: "/v1/messages/count_tokens", model: "claude-sonnet"},
		{path: "/v1/chat/completions", model: "gpt-4o", openai: true},
		{path: "/v1/jobs", model: "claude-sonnet", wrap: func(b string) string {
			return `{"endpoint":"/v1/messages","body":` + b + `}`
		}},
		{path: "/v1/messages/batches", model: "claude-sonnet", wrap: func(b string) string {
			return `{"requests":[{"custom_id":"a","params":` + b + `}]}`
		}},
	}
	for _, ep := range endpoints {
		for _, sh := range shapes {
			t.Run(strings.TrimPrefix(ep.path, "/v1/")+"/"+sh.name, func(t *testing.T) {
				body := sh.body(ep.model)
				if ep.wrap != nil && !sh.raw {
					body = ep.wrap(body)
				}
				start := time.Now()
				status, _, b := br.doKey(t, http.MethodPost, ep.path, canaryKey, body)
				if status != http.StatusBadRequest {
					t.Fatalf("status %d; want 400 (body %.300s)", status, b)
				}
				f := formats[0]
				if ep.openai {
					f = formats[1]
				}
				e := parseError(t, f, b)
				if e.Error.Type != "invalid_request_error" {
					t.Errorf("error type %q; want invalid_request_error", e.Error.Type)
				}
				if !strings.Contains(e.Error.Message, "limit of 64 levels") {
					t.Errorf("message %q does not name the limit", e.Error.Message)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("took %s", d)
				}
			})
		}
	}
	status, _, b := br.doKey(t, http.MethodPost, "/v1/messages", canaryKey,
		`{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"still alive?"}]}]}`)
	if status != http.StatusOK || !bytes.Contains(b, []byte(`"type":"message"`)) {
		t.Fatalf("normal request after the deep ones: %d %s", status, b)
	}
}
