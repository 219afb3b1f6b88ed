package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"

	"github.com/relaygw/relay/workers"
)

// pacedUpstream streams an Anthropic message whose events are gap apart,
// and reports on cancelled when a client of it goes away mid-stream.
func pacedUpstream(t *testing.T, gap time.Duration, deltas int, cancelled chan<- struct{}) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		send := func(name, data string) {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
			fl.Flush()
		}
		send("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}}`)
		send("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
		for i := 0; i < deltas; i++ {
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				if cancelled != nil {
					close(cancelled)
				}
				return
			}
			send("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"w%d "}}`, i))
		}
		send("content_block_stop", `{"type":"content_block_stop","index":0}`)
		send("message_delta", fmt.Sprintf(`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":%d}}`, deltas))
		send("message_stop", `{"type":"message_stop"}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// pacedRoute adds route "paced" on upstream, whose calls may take a
// minute.
func pacedRoute(t *testing.T, upstream string) relayOption {
	t.Helper()
	p := mustProvider(t, workers.ProviderOptions{Name: "paced", Format: workers.FormatAnthropic, BaseURL: upstream,
		APIKey: providerKeyA, Timeout: time.Minute})
	return withRoutes(workers.RouteSpec{Model: "paced",
		Targets: []workers.Target{{Provider: p, ProviderName: "paced", Format: workers.FormatAnthropic, Weight: 1, Timeout: time.Minute}}})
}

// TestStreamIsIncremental checks events are relayed as they arrive, not
// buffered: the first reaches the client long before the last.
func TestStreamIsIncremental(t *testing.T) {
	const gap, deltas = 150 * time.Millisecond, 6
	up := pacedUpstream(t, gap, deltas, nil)
	url := newRelay(t, pacedRoute(t, up.URL)).URL
	req, err := http.NewRequest(http.MethodPost, url+"/v1/messages", strings.NewReader(`{"model":"paced","stream":true,"max_tokens":9,"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", canaryKey)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content-type = %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var firstDelta, stop time.Duration
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "event: content_block_delta") && firstDelta == 0 {
			firstDelta = time.Since(start)
		}
		if line == "event: message_stop" {
			stop = time.Since(start)
		}
	}
	if firstDelta == 0 || stop == 0 {
		t.Fatalf("stream incomplete: first delta %v, stop %v", firstDelta, stop)
	}
	// The upstream spends (deltas-1)*gap between the first and last delta;
	// a buffering relay would deliver them together.
	if stop-firstDelta < (deltas-2)*gap {
		t.Errorf("first delta at %v, message_stop at %v: events were buffered", firstDelta, stop)
	}
}

// TestClientDisconnectCancelsUpstream checks that a client leaving
// mid-stream ends the upstream call.
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	up := pacedUpstream(t, time.Second, 30, cancelled)
	url := newRelay(t, pacedRoute(t, up.URL)).URL
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/messages", strings.NewReader(`{"model":"paced","stream":true,"max_tokens":99,"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", canaryKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "event: message_start") {
	}
	cancel()
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("upstream call still running 10s after the client left")
	}
}

// TestStreamBrokenMidway checks a stream the upstream cuts ends with an
// error event the SDKs surface as an error.
func TestStreamBrokenMidway(t *testing.T) {
	r := newRelay(t)
	ctx := context.Background()
	t.Run("anthropic", func(t *testing.T) {
		c := anthropicClient(r, canaryKey)
		stream := c.Messages.NewStreaming(ctx, messageParams("claude-sonnet"), aoption.WithHeader("x-sim-fault", "cut"))
		defer stream.Close()
		for stream.Next() {
		}
		if stream.Err() == nil {
			t.Fatal("cut stream ended without error")
		}
	})
	t.Run("openai", func(t *testing.T) {
		c := openaiClient(r, canaryKey)
		stream := c.Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o"), ooption.WithHeader("x-sim-fault", "cut"))
		defer stream.Close()
		for stream.Next() {
		}
		if stream.Err() == nil {
			t.Fatal("cut stream ended without error")
		}
	})
}

// TestKeysStayPrivate checks the upstream sees the provider's key and the
// renamed model, never the relay key, and that no key reaches a log line,
// a metric or an error.
func TestKeysStayPrivate(t *testing.T) {
	r := newRelay(t)
	ctx := context.Background()
	ac := anthropicClient(r, canaryKey)
	oc := openaiClient(r, canaryKey)
	if _, err := ac.Messages.New(ctx, messageParams("claude-sonnet")); err != nil {
		t.Fatal(err)
	}
	stream := ac.Messages.NewStreaming(ctx, messageParams("claude-sonnet"))
	defer stream.Close()
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if _, err := oc.Chat.Completions.New(ctx, chatParams("gpt-4o")); err != nil {
		t.Fatal(err)
	}
	// Failures and errors log their causes; none may hold a key.
	mustFail := func(what string) func(any, error) {
		return func(_ any, err error) {
			if err == nil {
				t.Errorf("%s: succeeded; want an error", what)
			}
		}
	}
	mustFail("upstream 401")(ac.Messages.New(ctx, messageParams("claude-sonnet"), aoption.WithHeader("x-sim-fault", "401")))
	mustFail("upstream 500")(ac.Messages.New(ctx, messageParams("claude-sonnet"), aoption.WithHeader("x-sim-fault", "500")))
	bad := anthropicClient(r, canaryKey+"x")
	mustFail("unknown key")(bad.Messages.New(ctx, messageParams("claude-sonnet")))
	oc2 := openai.NewClient(ooption.WithBaseURL(r.URL+"/v1"), ooption.WithAPIKey(canaryKey), ooption.WithMaxRetries(0))
	mustFail("unknown model")(oc2.Chat.Completions.New(ctx, chatParams("nope")))

	for _, req := range r.Anthropic.Requests() {
		if got := req.Header.Get("X-Api-Key"); got != providerKeyA {
			t.Errorf("anthropic upstream got x-api-key %q; want the provider key", got)
		}
		if req.Header.Get("Authorization") != "" {
			t.Errorf("anthropic upstream got an Authorization header")
		}
		if !strings.Contains(string(req.Body), `"model":"claude-sonnet-4-5"`) {
			t.Errorf("anthropic upstream body has no renamed model: %s", req.Body)
		}
	}
	for _, req := range r.OpenAI.Requests() {
		if got := req.Header.Get("Authorization"); got != "Bearer "+providerKeyOA {
			t.Errorf("openai upstream got authorization %q; want the provider key", got)
		}
		if !strings.Contains(string(req.Body), `"model":"gpt-4o-2024"`) {
			t.Errorf("openai upstream body has no renamed model: %s", req.Body)
		}
	}
	for _, req := range append(r.Anthropic.Requests(), r.OpenAI.Requests()...) {
		for k, vv := range req.Header {
			for _, v := range vv {
				if strings.Contains(v, canaryKey) {
					t.Errorf("upstream header %s carries the relay key", k)
				}
			}
		}
	}
	logs, metrics := r.logs.String(), r.metricsText(t)
	if !strings.Contains(logs, `"key":"team-a"`) {
		t.Errorf("request log does not name the key: %s", logs)
	}
	for _, secret := range []string{canaryKey, providerKeyA, providerKeyOA} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain secret %q", secret)
		}
		if strings.Contains(metrics, secret) {
			t.Errorf("metrics contain secret %q", secret)
		}
	}
}

// TestHeaders checks what passes upstream and what the relay adds.
func TestHeaders(t *testing.T) {
	r := newRelay(t)
	hdr := anthropicHeaders(canaryKey)
	hdr["anthropic-version"] = "2026-10-21"
	hdr["anthropic-beta"] = "claude-code-20250219,context-management-2025-06-27"
	hdr["Connection"] = "keep-alive, X-Hop-Secret"
	hdr["X-Hop-Secret"] = "1"
	hdr["Accept-Encoding"] = "br, zstd"
	hdr["Cookie"] = "session=1"
	hdr["X-Stainless-Retry-Count"] = "0"
	hdr["X-Claude-Code-Session-Id"] = "abc"
	status, h, b := r.do(t, http.MethodPost, "/v1/messages?beta=true", hdr, body("claude-sonnet", ""))
	if status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	for _, name := range []string{"X-Request-Id", "X-Relay-Provider", "X-Relay-Attempts", "X-Relay-Lane", "X-Relay-Queue-Ms"} {
		if h.Get(name) == "" {
			t.Errorf("response lacks %s", name)
		}
	}
	if h.Get("X-Relay-Provider") != "anthropic-a" || h.Get("X-Relay-Attempts") != "1" || h.Get("X-Relay-Queue-Ms") != "0" ||
		h.Get("X-Relay-Lane") != "interactive" {
		t.Errorf("relay headers = %v", h)
	}
	reqs := r.Anthropic.Requests()
	up := reqs[len(reqs)-1].Header
	checks := []struct{ name, want string }{
		{"Anthropic-Version", "2026-10-21"},
		{"Anthropic-Beta", "claude-code-20250219,context-management-2025-06-27"},
		{"X-Stainless-Retry-Count", "0"},
		{"X-Claude-Code-Session-Id", "abc"},
		{"X-Hop-Secret", ""},
		{"Cookie", ""},
	}
	for _, c := range checks {
		if got := up.Get(c.name); got != c.want {
			t.Errorf("upstream %s = %q; want %q", c.name, got, c.want)
		}
	}
	if ae := up.Get("Accept-Encoding"); strings.Contains(ae, "br") {
		t.Errorf("client Accept-Encoding went upstream: %q", ae)
	}
}

func TestModels(t *testing.T) {
	r := newRelay(t)
	ctx := context.Background()
	t.Run("anthropic", func(t *testing.T) {
		c := anthropicClient(r, canaryKey)
		page, err := c.Models.List(ctx, anthropic.ModelListParams{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		if strings.Join(ids, ",") != "claude-sonnet,gpt-4o" {
			t.Errorf("models = %v", ids)
		}
	})
	t.Run("openai limited key", func(t *testing.T) {
		c := openaiClient(r, limitedKey)
		page, err := c.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) != 1 || page.Data[0].ID != "gpt-4o" {
			t.Errorf("models = %+v", page.Data)
		}
	})
	t.Run("one model", func(t *testing.T) {
		c := openaiClient(r, canaryKey)
		m, err := c.Models.Get(ctx, "gpt-4o")
		if err != nil || m.ID != "gpt-4o" {
			t.Errorf("Models.Get = %+v, %v", m, err)
		}
	})
	t.Run("count tokens", func(t *testing.T) {
		c := anthropicClient(r, canaryKey)
		n, err := c.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
			Model:    "claude-sonnet",
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(strings.Repeat("word ", 100)))},
		})
		if err != nil || n.InputTokens < 100 {
			t.Errorf("CountTokens = %+v, %v", n, err)
		}
	})
	t.Run("unknown path", func(t *testing.T) {
		status, _, b := r.do(t, http.MethodGet, "/v1/nothing", anthropicHeaders(canaryKey), "")
		if status != 404 || !strings.Contains(string(b), "not_found_error") {
			t.Errorf("unknown path: %d %s", status, b)
		}
	})
}

// TestOpenAIStreamUsageAskedForTheClient checks that the relay asks an
// OpenAI upstream for the usage chunk it accounts tokens with, and hides
// that chunk from a client that did not ask for it.
func TestOpenAIStreamUsageAskedForTheClient(t *testing.T) {
	r := newRelay(t)
	status, _, b := r.do(t, http.MethodPost, "/v1/chat/completions", openaiHeaders(canaryKey),
		`{"model":"gpt-4o","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	if strings.Contains(string(b), `"choices":[]`) || !strings.HasSuffix(strings.TrimSpace(string(b)), "data: [DONE]") {
		t.Errorf("client stream shows the usage chunk or lacks [DONE]:\n%s", b)
	}
	reqs := r.OpenAI.Requests()
	if up := string(reqs[len(reqs)-1].Body); !strings.Contains(up, `"include_usage":true`) {
		t.Errorf("upstream body did not ask for usage: %s", up)
	}
	if m := r.metricsText(t); !strings.Contains(m, `relay_tokens_total{direction="output",key="team-a",provider="openai-b",route="gpt-4o"}`) ||
		strings.Contains(m, `relay_tokens_total{direction="output",key="team-a",provider="openai-b",route="gpt-4o"} 0`+"\n") {
		t.Errorf("output tokens not counted from the stream:\n%s", m)
	}
}
