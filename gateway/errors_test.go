package gateway_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/simupstream"
)

// apiFormat describes how one API is called and how its errors look.
type apiFormat struct {
	name    string
	path    string
	model   string
	headers func(key string) map[string]string
}

var formats = []apiFormat{
	{"anthropic", "/v1/messages", "claude-sonnet", anthropicHeaders},
	{"openai", "/v1/chat/completions", "gpt-4o", openaiHeaders},
}

// errorShape reads an error body of either format.
type errorShape struct {
	Type  string `json:"type"`
	Error struct {
		Type    string  `json:"type"`
		Message string  `json:"message"`
		Code    *string `json:"code"`
		Param   *string `json:"param"`
	} `json:"error"`
}

func parseError(t *testing.T, f apiFormat, body []byte) errorShape {
	t.Helper()
	var e errorShape
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, body)
	}
	if e.Error.Message == "" {
		t.Errorf("error body has no message: %s", body)
	}
	if f.name == "anthropic" && e.Type != "error" {
		t.Errorf("anthropic error body type = %q; want \"error\": %s", e.Type, body)
	}
	if f.name == "openai" {
		var raw map[string]map[string]json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatalf("openai error body: %v", err)
		}
		for _, k := range []string{"message", "type", "param", "code"} {
			if _, ok := raw["error"][k]; !ok {
				t.Errorf("openai error body lacks error.%s: %s", k, body)
			}
		}
	}
	return e
}

func body(model string, extra string) string {
	return `{"model":"` + model + `","max_tokens":16` + extra + `,"messages":[{"role":"user","content":"hello"}]}`
}

// TestErrorTable covers every row of SPEC §3's error table for both formats.
func TestErrorTable(t *testing.T) {
	r := newRelay(t, withMaxBody(4096))
	type want struct {
		status    int    // Anthropic status
		oaStatus  int    // OpenAI status, when different
		anthropic string // Anthropic error.type
		openai    string // OpenAI error.code (or type when code is null)
		retry     bool   // retry-after expected
	}
	cases := []struct {
		name   string
		key    string
		hdr    map[string]string
		body   func(f apiFormat) string
		want   want
		passed bool // upstream error passed through: compare to the upstream's own
	}{
		{name: "malformed JSON", key: canaryKey, body: func(f apiFormat) string { return `{"model":"` + f.model + `",` },
			want: want{status: 400, anthropic: "invalid_request_error", openai: "invalid_request_error"}},
		{name: "not an object", key: canaryKey, body: func(apiFormat) string { return `["model"]` },
			want: want{status: 400, anthropic: "invalid_request_error", openai: "invalid_request_error"}},
		{name: "missing model", key: canaryKey, body: func(apiFormat) string { return `{"max_tokens":5,"messages":[]}` },
			want: want{status: 400, anthropic: "invalid_request_error", openai: "invalid_request_error"}},
		{name: "model not a string", key: canaryKey, body: func(apiFormat) string { return `{"model":5}` },
			want: want{status: 400, anthropic: "invalid_request_error", openai: "invalid_request_error"}},
		{name: "model twice", key: canaryKey, body: func(f apiFormat) string { return `{"model":"` + f.model + `","model":"gpt-4o"}` },
			want: want{status: 400, anthropic: "invalid_request_error", openai: "invalid_request_error"}},
		{name: "empty body", key: canaryKey, body: func(apiFormat) string { return `` },
			want: want{status: 400, anthropic: "invalid_request_error", openai: "invalid_request_error"}},
		{name: "bad header", key: canaryKey, hdr: map[string]string{"x-relay-max-wait": "soon"},
			body: func(f apiFormat) string { return body(f.model, "") },
			want: want{status: 400, anthropic: "invalid_request_error", openai: "invalid_request_error"}},
		{name: "unknown lane", key: canaryKey, hdr: map[string]string{"x-relay-lane": "nope"},
			body: func(f apiFormat) string { return body(f.model, "") },
			want: want{status: 400, anthropic: "invalid_request_error", openai: "invalid_request_error"}},
		{name: "no key", key: "", body: func(f apiFormat) string { return body(f.model, "") },
			want: want{status: 401, anthropic: "authentication_error", openai: "invalid_api_key"}},
		{name: "unknown key", key: "relay-wrong-key", body: func(f apiFormat) string { return body(f.model, "") },
			want: want{status: 401, anthropic: "authentication_error", openai: "invalid_api_key"}},
		{name: "lane not allowed", key: limitedKey, hdr: map[string]string{"x-relay-lane": "interactive"},
			body: func(apiFormat) string { return body("gpt-4o", "") },
			want: want{status: 403, anthropic: "permission_error", openai: "permission_denied"}},
		{name: "route not allowed", key: limitedKey, body: func(apiFormat) string { return body("claude-sonnet", "") },
			want: want{status: 403, anthropic: "permission_error", openai: "permission_denied"}},
		{name: "unknown model", key: canaryKey, body: func(apiFormat) string { return body("no-such-model", "") },
			want: want{status: 404, anthropic: "not_found_error", openai: "model_not_found"}},
		{name: "body too large", key: canaryKey, body: func(f apiFormat) string {
			return body(f.model, `,"pad":"`+strings.Repeat("x", 8192)+`"`)
		}, want: want{status: 413, anthropic: "request_too_large", openai: "request_too_large"}},
		{name: "every target failed", key: canaryKey, hdr: map[string]string{"x-sim-fault": "500"},
			body: func(f apiFormat) string { return body(f.model, "") },
			want: want{status: 529, oaStatus: 503, anthropic: "overloaded_error", openai: "service_unavailable", retry: true}},
		{name: "upstream overloaded", key: canaryKey, hdr: map[string]string{"x-sim-fault": "529"},
			body: func(f apiFormat) string { return body(f.model, "") },
			want: want{status: 529, oaStatus: 503, anthropic: "overloaded_error", openai: "service_unavailable", retry: true}},
		{name: "upstream garbage", key: canaryKey, hdr: map[string]string{"x-sim-fault": "garbage"},
			body: func(f apiFormat) string { return body(f.model, "") },
			want: want{status: 502, anthropic: "api_error", openai: "upstream_error"}},
		{name: "upstream refuses provider key", key: canaryKey, hdr: map[string]string{"x-sim-fault": "401"},
			body: func(f apiFormat) string { return body(f.model, "") },
			want: want{status: 502, anthropic: "api_error", openai: "upstream_error"}},
		{name: "upstream connection reset", key: canaryKey, hdr: map[string]string{"x-sim-fault": "reset"},
			body: func(f apiFormat) string { return body(f.model, "") },
			want: want{status: 529, oaStatus: 503, anthropic: "overloaded_error", openai: "service_unavailable", retry: true}},
		{name: "upstream 4xx passed through", key: canaryKey, hdr: map[string]string{"x-sim-fault": "400"},
			body: func(f apiFormat) string { return body(f.model, "") }, passed: true,
			want: want{status: 400, anthropic: "invalid_request_error", openai: "invalid_request_error"}},
	}
	for _, f := range formats {
		for _, tc := range cases {
			t.Run(f.name+"/"+tc.name, func(t *testing.T) {
				hdr := f.headers(tc.key)
				if tc.key == "" {
					delete(hdr, "x-api-key")
					delete(hdr, "Authorization")
				}
				for k, v := range tc.hdr {
					hdr[k] = v
				}
				status, h, b := r.do(t, http.MethodPost, f.path, hdr, tc.body(f))
				wantStatus := tc.want.status
				if f.name == "openai" && tc.want.oaStatus != 0 {
					wantStatus = tc.want.oaStatus
				}
				if status != wantStatus {
					t.Fatalf("status = %d; want %d (body %s)", status, wantStatus, b)
				}
				if h.Get("X-Request-Id") == "" {
					t.Errorf("no x-request-id header")
				}
				e := parseError(t, f, b)
				if f.name == "anthropic" {
					if e.Error.Type != tc.want.anthropic {
						t.Errorf("error.type = %q; want %q", e.Error.Type, tc.want.anthropic)
					}
				} else {
					got := e.Error.Type
					if e.Error.Code != nil {
						got = *e.Error.Code
					}
					if got != tc.want.openai {
						t.Errorf("error code = %q; want %q (body %s)", got, tc.want.openai, b)
					}
				}
				if tc.want.retry && h.Get("Retry-After") == "" {
					t.Errorf("no retry-after header on %d", status)
				}
				if tc.passed && !strings.Contains(string(b), "simulated") && len(b) == 0 {
					t.Errorf("upstream error body not passed through: %s", b)
				}
				if strings.Contains(string(b), canaryKey) || strings.Contains(string(b), providerKeyA) ||
					strings.Contains(string(b), providerKeyOA) {
					t.Errorf("error body leaks a key: %s", b)
				}
			})
		}
	}
}

// TestUpstreamPassThroughVerbatim checks that an upstream 4xx body reaches
// the client byte for byte, as Claude Code's recovery relies on its wording.
func TestUpstreamPassThroughVerbatim(t *testing.T) {
	r := newRelay(t)
	sim := simupstream.New(simupstream.Options{})
	up := httptest.NewServer(sim.Handler())
	defer func() { _ = sim.Close(); up.Close() }()
	req, err := http.NewRequest(http.MethodPost, up.URL+"/v1/messages", strings.NewReader(body("claude-sonnet-4-5", "")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-sim-fault", "400")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	want, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("upstream body: %v", err)
	}

	hdr := anthropicHeaders(canaryKey)
	hdr["x-sim-fault"] = "400"
	status, _, got := r.do(t, http.MethodPost, "/v1/messages", hdr, body("claude-sonnet", ""))
	if status != resp.StatusCode || !bytes.Equal(got, want) {
		t.Fatalf("relay answered %d %s; upstream answers %d %s", status, got, resp.StatusCode, want)
	}
}

// TestUpstreamUnreachableAndTimeout covers the two failures that produce no
// upstream answer at all: both end as 529 with retry-after.
func TestUpstreamUnreachableAndTimeout(t *testing.T) {
	dead := mustProvider(t, workers.ProviderOptions{Name: "dead", Format: workers.FormatAnthropic,
		BaseURL: "http://" + deadAddr(t), APIKey: "k", Timeout: time.Second})
	r := newRelay(t, withTimeout(300*time.Millisecond), withRoutes(
		workers.RouteSpec{Model: "dead", Targets: []workers.Target{{Provider: dead, ProviderName: "dead", Format: workers.FormatAnthropic,
			Model: "dead", Weight: 1, Timeout: time.Second}}},
	))
	cases := []struct {
		name  string
		model string
		hdr   map[string]string
	}{
		{"unreachable", "dead", nil},
		{"timeout", "claude-sonnet", map[string]string{"x-sim-fault": "hang"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := anthropicHeaders(canaryKey)
			for k, v := range tc.hdr {
				hdr[k] = v
			}
			status, h, b := r.do(t, http.MethodPost, "/v1/messages", hdr, body(tc.model, ""))
			if status != 529 {
				t.Fatalf("status = %d; want 529 (body %s)", status, b)
			}
			if h.Get("Retry-After") == "" {
				t.Errorf("no retry-after")
			}
			if strings.Contains(string(b), "127.0.0.1") {
				t.Logf("note: error names the upstream address: %s", b)
			}
		})
	}
}
