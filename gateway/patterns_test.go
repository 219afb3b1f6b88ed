package gateway_test

// Pattern routes (issue 16): Claude Code with no --model, the official
// SDKs on a model only a pattern matches, keys' allowed routes, metrics
// and logs by route, jobs and batches, and /v1/models with the models
// the upstreams list.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/simupstream"
)

// Claude Code 2.1.332's default models: the main model (claude-opus-5-5,
// seen from `claude -p` with no --model against the demo) and the small/fast
// model ids its binary holds. A relay with one claude-* route serves them
// all without any --model or ANTHROPIC_MODEL.
const (
	claudeCodeMain = "claude-opus-5-5"
	claudeCodeFast = "claude-haiku-4-5-20251001"
	claudeCodeNext = "claude-haiku-5-5"
)

// claudeOnlyKey may use the claude-* pattern route only.
const claudeOnlyKey = "relay-claude-only-key-8c1f"

var claudeOnly = key("claude-only", claudeOnlyKey, "interactive", []string{"interactive", "batch"}, "claude-*")

// patternUpstreams are the simulated upstreams behind the pattern routes.
type patternUpstreams struct {
	anthropic *upstream // route claude-*, passing the client's model through
	openai    *simupstream.Server
}

// withPatternRoutes adds the routes claude-* (an Anthropic upstream) and
// gpt-4.1* (an OpenAI one), whose targets name no model, to the default
// claude-sonnet and gpt-4o.
func withPatternRoutes(t *testing.T) (relayOption, *patternUpstreams) {
	t.Helper()
	up := &patternUpstreams{anthropic: newUpstream(t, "anthropic-p", simupstream.Options{Record: 64})}
	var urlO string
	up.openai, urlO = startSim(t, simupstream.Options{Record: 64})
	provO := mustProvider(t, workers.ProviderOptions{Name: "openai-p", Format: workers.FormatOpenAI,
		BaseURL: urlO + "/v1", APIKey: providerKeyOA, Timeout: 5 * time.Second})
	claude := up.anthropic.target(nil)
	claude.Model = ""
	gpt := workers.Target{Provider: provO, ProviderName: "openai-p", Format: workers.FormatOpenAI, Weight: 1, Timeout: 5 * time.Second}
	return withRoutes(
		workers.RouteSpec{Model: "claude-*", Targets: []workers.Target{claude}},
		workers.RouteSpec{Model: "gpt-4.1*", Targets: []workers.Target{gpt}},
	), up
}

// lastRequest returns the last request sim recorded on path.
func lastRequest(t *testing.T, sim *simupstream.Server, path string) simupstream.Request {
	t.Helper()
	reqs := sim.Requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Path == path {
			return reqs[i]
		}
	}
	t.Fatalf("upstream got no request on %s", path)
	return simupstream.Request{}
}

// claudeCodeHeaders are the headers Claude Code 2.1.332 sends (see
// wire-formats.md §1.1), with key as x-api-key (ANTHROPIC_API_KEY).
func claudeCodeHeaders(key string) map[string]string {
	return map[string]string{
		"x-api-key":         key,
		"anthropic-version": "2023-06-01",
		"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14," +
			"context-management-2025-06-27,effort-2025-11-24",
		"anthropic-dangerous-direct-browser-access": "true",
		"content-type":                "application/json",
		"accept":                      "application/json",
		"x-app":                       "cli",
		"user-agent":                  "claude-cli/2.1.332 (external, sdk-cli)",
		"x-claude-code-session-id":    "5f0c4a52-3c1e-4a8e-9f57-2b1f0d9a6e11",
		"x-stainless-retry-count":     "0",
		"x-stainless-timeout":         "600",
		"x-stainless-lang":            "js",
		"x-stainless-package-version": "0.70.0",
	}
}

// claudeCodeBody is a message request shaped like Claude Code's: the
// body keys it sends (system, tools, metadata.user_id as a JSON string,
// thinking, context_management, output_config), with a system-reminder
// block before the prompt.
func claudeCodeBody(model string, stream bool) string {
	b, _ := json.Marshal(map[string]any{
		"model": model,
		"messages": []any{map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "text", "text": "<system-reminder>context</system-reminder>"},
			map[string]any{"type": "text", "text": "say hi", "cache_control": map[string]any{"type": "ephemeral"}},
		}}},
		"system": []any{map[string]any{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."}},
		"tools": []any{map[string]any{"name": "Bash", "description": "Run a command",
			"input_schema": map[string]any{"type": "object", "properties": map[string]any{"command": map[string]any{"type": "string"}},
				"required": []string{"command"}}}},
		"metadata":           map[string]any{"user_id": `{"device_id":"d1","session_id":"5f0c4a52"}`},
		"max_tokens":         32000,
		"thinking":           map[string]any{"type": "adaptive"},
		"context_management": map[string]any{"edits": []any{map[string]any{"type": "clear_thinking_20251015", "keep": "all"}}},
		"output_config":      map[string]any{"effort": "high"},
		"stream":             stream,
	})
	return string(b)
}

// TestClaudeCodeWithoutModel replays Claude Code's own requests, with its
// default models, against a relay with one claude-* route: model
// discovery, the main model streaming, the small/fast model, and token
// counting, all on the beta paths.
func TestClaudeCodeWithoutModel(t *testing.T) {
	opt, up := withPatternRoutes(t)
	r := newRelay(t, opt)
	hdr := claudeCodeHeaders(canaryKey)

	t.Run("discovery", func(t *testing.T) {
		status, _, b := r.do(t, http.MethodGet, "/v1/models?limit=1000", hdr, "")
		if status != 200 {
			t.Fatalf("GET /v1/models?limit=1000 = %d %s", status, b)
		}
		var ids []string
		for _, id := range gjson.GetBytes(b, "data.#.id").Array() {
			ids = append(ids, id.String())
		}
		for _, want := range []string{claudeCodeMain, claudeCodeFast, claudeCodeNext, "claude-sonnet"} {
			if !slices.Contains(ids, want) {
				t.Errorf("models %v lack %s", ids, want)
			}
		}
		if slices.Contains(ids, "claude-*") || gjson.GetBytes(b, "has_more").Bool() {
			t.Errorf("models = %s; want upstream ids, not the pattern, on one page", b)
		}
	})
	tests := []struct {
		name, model string
		stream      bool
	}{
		{"main model streams", claudeCodeMain, true},
		{"small fast model", claudeCodeFast, false},
		{"newer small fast model", claudeCodeNext, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := sendWith(t, http.DefaultClient, http.MethodPost, r.URL+"/v1/messages?beta=true", hdr, claudeCodeBody(tc.model, tc.stream))
			if resp.StatusCode != 200 || resp.Header.Get("X-Relay-Provider") != "anthropic-p" {
				t.Fatalf("POST /v1/messages?beta=true = %d (provider %q) %s", resp.StatusCode, resp.Header.Get("X-Relay-Provider"), body)
			}
			if tc.stream {
				checkAnthropicSSE(t, body, tc.model)
			} else if got := gjson.GetBytes(body, "model").String(); got != tc.model {
				t.Errorf("answer model = %q; want %q", got, tc.model)
			}
			got := lastRequest(t, up.anthropic.sim, "/v1/messages")
			if m := gjson.GetBytes(got.Body, "model").String(); m != tc.model {
				t.Errorf("upstream got model %q; want %q passed through", m, tc.model)
			}
			if got.Header.Get("Anthropic-Beta") != hdr["anthropic-beta"] || got.Header.Get("X-Api-Key") != providerKeyA {
				t.Errorf("upstream headers: anthropic-beta %q, x-api-key %q; want the client's beta list and the provider's key",
					got.Header.Get("Anthropic-Beta"), got.Header.Get("X-Api-Key"))
			}
			if strings.Contains(string(got.Body)+strings.Join(headerValues(got.Header), " "), canaryKey) {
				t.Error("the client's relay key went upstream")
			}
		})
	}
	t.Run("count tokens", func(t *testing.T) {
		status, _, b := r.do(t, http.MethodPost, "/v1/messages/count_tokens?beta=true", hdr, claudeCodeBody(claudeCodeMain, false))
		if status != 200 || gjson.GetBytes(b, "input_tokens").Int() < 1 {
			t.Errorf("count_tokens = %d %s", status, b)
		}
	})
	t.Run("a model no route matches", func(t *testing.T) {
		status, _, b := r.do(t, http.MethodPost, "/v1/messages?beta=true", hdr, claudeCodeBody("gemini-2.5-pro", false))
		if status != 404 || gjson.GetBytes(b, "error.type").String() != "not_found_error" {
			t.Errorf("unknown model = %d %s; want 404 not_found_error", status, b)
		}
	})
}

// checkAnthropicSSE checks an Anthropic stream: named events, the model,
// and message_stop at the end.
func checkAnthropicSSE(t *testing.T, body []byte, model string) {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if ev, ok := strings.CutPrefix(line, "event: "); ok {
			events = append(events, ev)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok && gjson.Get(data, "type").String() == "message_start" {
			if got := gjson.Get(data, "message.model").String(); got != model {
				t.Errorf("message_start model = %q; want %q", got, model)
			}
		}
	}
	if len(events) < 3 || events[0] != "message_start" || events[len(events)-1] != "message_stop" {
		t.Errorf("stream events = %v; want message_start … message_stop", events)
	}
}

func headerValues(h http.Header) []string {
	var out []string
	for _, vv := range h {
		out = append(out, vv...)
	}
	return out
}

// TestPatternRouteSDKs: the official anthropic-sdk-go and openai-go
// clients on models only a pattern route matches, streaming and not, in
// the route's own format and across formats, and listing models with
// the SDKs' pagination.
func TestPatternRouteSDKs(t *testing.T) {
	opt, up := withPatternRoutes(t)
	r := newRelay(t, opt)
	ctx := t.Context()
	t.Run("anthropic", func(t *testing.T) {
		c := anthropicClient(r, canaryKey)
		msg, err := c.Messages.New(ctx, messageParams(claudeCodeMain))
		if err != nil || string(msg.Model) != claudeCodeMain || len(msg.Content) == 0 {
			t.Fatalf("Messages.New(%s) = %+v, %v", claudeCodeMain, msg, err)
		}
		stream := c.Messages.NewStreaming(ctx, messageParams("claude-sonnet-4-6"))
		var acc anthropic.Message
		for stream.Next() {
			if err := acc.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil || string(acc.Model) != "claude-sonnet-4-6" || acc.StopReason == "" {
			t.Errorf("stream = %+v, %v", acc, err)
		}
	})
	t.Run("openai", func(t *testing.T) {
		c := openaiClient(r, canaryKey)
		cc, err := c.Chat.Completions.New(ctx, chatParams("gpt-4.1-mini"))
		if err != nil || len(cc.Choices) == 0 {
			t.Fatalf("Chat.Completions.New(gpt-4.1-mini) = %+v, %v", cc, err)
		}
		if m := gjson.GetBytes(lastRequest(t, up.openai, "/v1/chat/completions").Body, "model").String(); m != "gpt-4.1-mini" {
			t.Errorf("upstream got model %q; want gpt-4.1-mini", m)
		}
	})
	t.Run("openai client, anthropic upstream", func(t *testing.T) {
		c := openaiClient(r, canaryKey)
		stream := c.Chat.Completions.NewStreaming(ctx, chatParams(claudeCodeFast))
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil || len(acc.Choices) == 0 || acc.Choices[0].Message.Content == "" {
			t.Fatalf("stream(%s) = %+v, %v", claudeCodeFast, acc.ChatCompletion, err)
		}
		if m := gjson.GetBytes(lastRequest(t, up.anthropic.sim, "/v1/messages").Body, "model").String(); m != claudeCodeFast {
			t.Errorf("upstream got model %q; want %q", m, claudeCodeFast)
		}
	})
	t.Run("anthropic models, paged by 2", func(t *testing.T) {
		c := anthropicClient(r, canaryKey)
		var ids []string
		iter := c.Models.ListAutoPaging(ctx, anthropic.ModelListParams{Limit: anthropic.Int(2)})
		for iter.Next() {
			ids = append(ids, iter.Current().ID)
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) ||
			!slices.Contains(ids, claudeCodeMain) || !slices.Contains(ids, "gpt-4o") {
			t.Errorf("auto-paged models = %v; want every model once, sorted", ids)
		}
		m, err := c.Models.Get(ctx, claudeCodeFast, anthropic.ModelGetParams{})
		if err != nil || m.ID != claudeCodeFast {
			t.Errorf("Models.Get(%s) = %+v, %v", claudeCodeFast, m, err)
		}
	})
	t.Run("openai models", func(t *testing.T) {
		c := openaiClient(r, canaryKey)
		page, err := c.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		if !slices.Contains(ids, claudeCodeMain) || !slices.Contains(ids, "gpt-4o") {
			t.Errorf("models = %v", ids)
		}
	})
}

// TestPatternRouteKeys: a key allowed a pattern route may use every model
// it serves, and sees those in /v1/models; no other route's.
func TestPatternRouteKeys(t *testing.T) {
	opt, _ := withPatternRoutes(t)
	r := newRelay(t, opt, withKeys(teamA, claudeOnly, limitedInteractive))
	msg := func(model string) string {
		return `{"model":"` + model + `","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	}
	tests := []struct {
		key, model string
		status     int
	}{
		{claudeOnlyKey, claudeCodeMain, 200},
		{claudeOnlyKey, claudeCodeFast, 200},
		{claudeOnlyKey, "claude-sonnet", 403}, // an exact route: not the pattern
		{claudeOnlyKey, "gpt-4.1", 403},
		{claudeOnlyKey, "gpt-4o", 403},
		{limitedKey, claudeCodeMain, 403},
		{limitedKey, "gpt-4o", 200},
		{canaryKey, "gpt-4.1-nano", 200},
		{canaryKey, "claude", 404}, // claude-* needs the dash
	}
	for _, tc := range tests {
		status, _, b := r.do(t, http.MethodPost, "/v1/messages", anthropicHeaders(tc.key), msg(tc.model))
		if status != tc.status {
			t.Errorf("key %s, model %s = %d %s; want %d", tc.key, tc.model, status, b, tc.status)
		}
	}
	_, _, b := r.do(t, http.MethodGet, "/v1/models?limit=1000", anthropicHeaders(claudeOnlyKey), "")
	for _, id := range gjson.GetBytes(b, "data.#.id").Array() {
		if !strings.HasPrefix(id.String(), "claude-") || id.String() == "claude-sonnet" {
			t.Errorf("claude-only key sees model %s", id)
		}
	}
	if !strings.Contains(string(b), claudeCodeMain) {
		t.Errorf("claude-only key's models = %s; want %s", b, claudeCodeMain)
	}
	status, _, _ := r.do(t, http.MethodGet, "/v1/models/claude-sonnet", anthropicHeaders(claudeOnlyKey), "")
	if status != 404 {
		t.Errorf("GET /v1/models/claude-sonnet with the claude-only key = %d; want 404", status)
	}
}

// TestPatternRouteLabels: metrics and request logs name the pattern, never
// the client's model (bounded label values); the log line also has the
// client's model.
func TestPatternRouteLabels(t *testing.T) {
	opt, _ := withPatternRoutes(t)
	r := newRelay(t, opt)
	models := []string{"claude-a", "claude-b", "claude-c-" + strings.Repeat("x", 300)}
	for _, m := range models {
		status, _, b := r.do(t, http.MethodPost, "/v1/messages", anthropicHeaders(canaryKey),
			`{"model":"`+m+`","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
		if status != 200 {
			t.Fatalf("model %s = %d %s", m, status, b)
		}
	}
	mt := r.metricsText(t)
	for _, want := range []string{
		`relay_requests_total{code="200",lane="interactive",mode="direct",provider="anthropic-p",route="claude-*"} 3`,
		`relay_fast_rejections_total{reason="breaker_open",route="claude-*"} 0`, // seeded by pattern
	} {
		if !strings.Contains(mt, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	logs := r.logs.String()
	for _, m := range models {
		if strings.Contains(mt, `"`+m+`"`) {
			t.Errorf("metrics carry the client's model %q as a label", m)
		}
	}
	if !strings.Contains(logs, `"route":"claude-*","model":"claude-a"`) {
		t.Errorf("request log lacks route and model; logs:\n%s", logs)
	}
	if strings.Contains(logs, strings.Repeat("x", 201)) {
		t.Error("request log holds a model id longer than 200 bytes")
	}
}

// TestPatternRouteJobsAndBatches: a job's and a batch item's model
// resolves through the same matching; the job shows the client's model.
func TestPatternRouteJobsAndBatches(t *testing.T) {
	opt, up := withPatternRoutes(t)
	r := newRelay(t, opt, withLanes(100), withJobs(jobs.Options{Workers: 2}), withKeys(teamA, claudeOnly))
	body := `{"endpoint":"/v1/messages","body":{"model":"` + claudeCodeMain + `","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}}`
	status, _, j := r.doJSON(t, http.MethodPost, "/v1/jobs", claudeOnlyKey, nil, body)
	if status != 202 || j["model"] != claudeCodeMain {
		t.Fatalf("POST /v1/jobs = %d %v; want 202 with model %s", status, j, claudeCodeMain)
	}
	id, _ := j["id"].(string)
	waitJobStatus(t, r, claudeOnlyKey, id, "succeeded")
	if m := gjson.GetBytes(lastRequest(t, up.anthropic.sim, "/v1/messages").Body, "model").String(); m != claudeCodeMain {
		t.Errorf("job's upstream model = %q; want %q", m, claudeCodeMain)
	}
	denied := strings.Replace(body, claudeCodeMain, "gpt-4o", 1)
	if status, _, j := r.doJSON(t, http.MethodPost, "/v1/jobs", claudeOnlyKey, nil, denied); status != 403 {
		t.Errorf("job on a route the key may not use = %d %v; want 403", status, j)
	}

	c := r.client(claudeOnlyKey)
	b, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("main", claudeCodeMain), batchRequest("fast", claudeCodeFast),
	}})
	if err != nil {
		t.Fatalf("Batches.New: %v", err)
	}
	if done := waitBatch(t, c, b.ID, anthropic.MessageBatchProcessingStatusEnded); done.RequestCounts.Succeeded != 2 {
		t.Errorf("batch counts = %+v; want 2 succeeded", done.RequestCounts)
	}
	_, err = c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("denied", "claude-sonnet"),
	}})
	if err == nil {
		t.Error("a batch item on a route the key may not use was accepted")
	}
}

// waitJobStatus polls GET /v1/jobs/{id} until the job has status.
func waitJobStatus(t *testing.T, r *relay, key, id, status string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		_, _, j := r.doJSON(t, http.MethodGet, "/v1/jobs/"+id, key, nil, "")
		if j["status"] == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %v; want %s", id, j["status"], status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestModelsSlowUpstream: an upstream whose model list hangs never holds
// /v1/models more than about a second; the exact routes are listed
// meanwhile.
func TestModelsSlowUpstream(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(hang.Close)
	prov := mustProvider(t, workers.ProviderOptions{Name: "hung", Format: workers.FormatAnthropic,
		BaseURL: hang.URL, APIKey: providerKeyA, Timeout: 5 * time.Second})
	r := newRelay(t, withRoutes(workers.RouteSpec{Model: "claude-*", Targets: []workers.Target{
		{Provider: prov, ProviderName: "hung", Format: workers.FormatAnthropic, Weight: 1, Timeout: 5 * time.Second}}}))
	for range 2 {
		start := time.Now()
		status, _, b := r.do(t, http.MethodGet, "/v1/models?limit=1000", anthropicHeaders(canaryKey), "")
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("/v1/models took %v with the upstream's list hanging", d)
		}
		if ids := gjson.GetBytes(b, "data.#.id").String(); status != 200 || ids != `["claude-sonnet","gpt-4o"]` {
			t.Errorf("/v1/models = %d %s; want the exact routes", status, b)
		}
	}
}

// TestModelsPagination: Anthropic's limit, after_id and before_id, and
// bad values answered 400 in Anthropic's shape.
func TestModelsPagination(t *testing.T) {
	opt, _ := withPatternRoutes(t)
	r := newRelay(t, opt)
	get := func(q string) (int, []byte) {
		status, _, b := r.do(t, http.MethodGet, "/v1/models"+q, anthropicHeaders(canaryKey), "")
		return status, b
	}
	_, all := get("?limit=1000")
	ids := gjson.GetBytes(all, "data.#.id").Array()
	if len(ids) < 5 {
		t.Fatalf("models = %s; want at least 5", all)
	}
	_, first := get("?limit=2")
	if gjson.GetBytes(first, "data.#").Int() != 2 || !gjson.GetBytes(first, "has_more").Bool() ||
		gjson.GetBytes(first, "last_id").String() != ids[1].String() {
		t.Errorf("limit=2: %s", first)
	}
	_, next := get("?limit=2&after_id=" + ids[1].String())
	if gjson.GetBytes(next, "first_id").String() != ids[2].String() {
		t.Errorf("after_id=%s: %s", ids[1], next)
	}
	_, before := get("?limit=2&before_id=" + ids[4].String())
	if gjson.GetBytes(before, "data.#.id").String() != `["`+ids[2].String()+`","`+ids[3].String()+`"]` ||
		!gjson.GetBytes(before, "has_more").Bool() {
		t.Errorf("before_id=%s: %s", ids[4], before)
	}
	_, none := get("?after_id=" + ids[len(ids)-1].String())
	if gjson.GetBytes(none, "data.#").Int() != 0 || gjson.GetBytes(none, "first_id").Type != gjson.Null {
		t.Errorf("after the last: %s", none)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=ten", "?after_id=a&before_id=b"} {
		if status, b := get(q); status != 400 || gjson.GetBytes(b, "error.type").String() != "invalid_request_error" {
			t.Errorf("GET /v1/models%s = %d %s; want 400 invalid_request_error", q, status, b)
		}
	}
}

var _ gateway.Dispatcher = (*workers.Router)(nil)
