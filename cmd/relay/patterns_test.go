package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestDemoClaudeCodeDefaults runs Claude Code's requests with its default
// models, and no --model, against the demo: its claude-* pattern route
// passes them to the simulated upstream, and /v1/models lists them.
func TestDemoClaudeCodeDefaults(t *testing.T) {
	t.Parallel()
	p := startDemo(t)
	client := sdkHTTPClient(t)
	send := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, "http://"+p.addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("x-api-key", "relay-demo-key")
		req.Header.Set("anthropic-version", "2023-06-01")
		req.Header.Set("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14")
		req.Header.Set("content-type", "application/json")
		req.Header.Set("x-app", "cli")
		req.Header.Set("user-agent", "claude-cli/2.1.332 (external, sdk-cli)")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	status, list := send(http.MethodGet, "/v1/models?limit=1000", "")
	for _, want := range []string{`"id":"claude-opus-5-5"`, `"id":"claude-haiku-4-5-20251001"`, `"id":"claude-sonnet"`, `"id":"gpt-4o-mini"`} {
		if status != 200 || !strings.Contains(list, want) {
			t.Errorf("GET /v1/models?limit=1000 = %d %s; want %s", status, list, want)
		}
	}
	tests := []struct {
		model  string
		stream bool
	}{
		{"claude-opus-5-5", true}, // Claude Code 2.1.332's default main model
		{"claude-haiku-4-5-20251001", false},
		{"claude-haiku-5-5", false},
	}
	for _, tc := range tests {
		body := `{"model":"` + tc.model + `","max_tokens":32000,"stream":` + map[bool]string{true: "true", false: "false"}[tc.stream] +
			`,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`
		status, answer := send(http.MethodPost, "/v1/messages?beta=true", body)
		if status != 200 || !strings.Contains(answer, `"model":"`+tc.model+`"`) || !strings.Contains(answer, "said") {
			t.Errorf("%s (stream %v) = %d %s", tc.model, tc.stream, status, answer)
		}
	}
	status, n := send(http.MethodPost, "/v1/messages/count_tokens?beta=true",
		`{"model":"claude-opus-5-5","messages":[{"role":"user","content":"hi there"}]}`)
	if status != 200 || gjson.Get(n, "input_tokens").Int() < 1 {
		t.Errorf("count_tokens = %d %s", status, n)
	}
	p.stop()
}
