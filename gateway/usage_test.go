package gateway_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/openai/openai-go/v3"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/gateway/metering"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/pricing"
)

// Streams with prompt-cache usage, as the real APIs send them.
const (
	anthropicCacheStream = "event: message_start\n" +
		`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-cache-model","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":1500,"cache_read_input_tokens":2500,"output_tokens":1}}}` + "\n\n" +
		"event: content_block_start\n" +
		`data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"cached hello"}}` + "\n\n" +
		"event: content_block_stop\n" +
		`data: {"type":"content_block_stop","index":0}` + "\n\n" +
		"event: message_delta\n" +
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":42}}` + "\n\n" +
		"event: message_stop\n" +
		`data: {"type":"message_stop"}` + "\n\n"
	openaiCacheStream = `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-cache-model","choices":[{"index":0,"delta":{"role":"assistant","content":"cached hi"},"finish_reason":null}]}` + "\n\n" +
		`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-cache-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n" +
		`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-cache-model","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920}}}` + "\n\n" +
		"data: [DONE]\n\n"
)

// sseUpstream answers every POST with body as an event stream.
func sseUpstream(t *testing.T, body string) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

// cacheRoutes are routes cached-claude and cached-gpt on upstreams that
// stream usage with cache tokens.
func cacheRoutes(t *testing.T) relayOption {
	pa := mustProvider(t, workers.ProviderOptions{Name: "cache-anthropic", Format: workers.FormatAnthropic,
		BaseURL: sseUpstream(t, anthropicCacheStream), APIKey: providerKeyA, Timeout: 10 * time.Second})
	po := mustProvider(t, workers.ProviderOptions{Name: "cache-openai", Format: workers.FormatOpenAI,
		BaseURL: sseUpstream(t, openaiCacheStream) + "/v1", APIKey: providerKeyOA, Timeout: 10 * time.Second})
	return withRoutes(
		workers.RouteSpec{Model: "cached-claude", Targets: []workers.Target{{Provider: pa, ProviderName: "cache-anthropic",
			Format: workers.FormatAnthropic, Model: "claude-cache-model", Weight: 1, Timeout: 10 * time.Second}}},
		workers.RouteSpec{Model: "cached-gpt", Targets: []workers.Target{{Provider: po, ProviderName: "cache-openai",
			Format: workers.FormatOpenAI, Model: "gpt-cache-model", Weight: 1, Timeout: 10 * time.Second}}},
	)
}

var testPrices = pricing.New([]configs.Price{
	{Model: "claude-cache-model", Input: 3, Output: 15, CacheRead: 0.30, CacheWrite: 3.75},
	{Model: "gpt-cache-model", Input: 2.5, Output: 10, CacheRead: 1.25},
})

// TestStreamedUsageMetered: a streamed Anthropic request and a streamed
// OpenAI request, made with the official SDKs, are metered exactly as the
// upstream reported them (cache tokens included) and priced by the table:
// in relay_tokens_total and relay_cost_usd_total, in the usage event on
// NATS, and in GET /v1/usage, which shows the caller's key only. No secret
// appears in any of them.
func TestStreamedUsageMetered(t *testing.T) {
	r := newRelay(t, withMeter(testPrices), cacheRoutes(t))
	ctx := context.Background()

	ac := anthropicClient(r, canaryKey)
	stream := ac.Messages.NewStreaming(ctx, messageParams("cached-claude"))
	var msg anthropic.Message
	for stream.Next() {
		if err := msg.Accumulate(stream.Current()); err != nil {
			t.Fatalf("Accumulate: %v", err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("anthropic stream: %v", err)
	}
	_ = stream.Close()
	au := msg.Usage
	if au.InputTokens != 12 || au.CacheCreationInputTokens != 1500 || au.CacheReadInputTokens != 2500 || au.OutputTokens != 42 {
		t.Fatalf("the SDK saw usage %+v; want the upstream's 12/1500/2500/42", au)
	}

	params := chatParams("cached-gpt")
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	oc := openaiClient(r, canaryKey)
	ostream := oc.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	for ostream.Next() {
		acc.AddChunk(ostream.Current())
	}
	if err := ostream.Err(); err != nil {
		t.Fatalf("openai stream: %v", err)
	}
	_ = ostream.Close()
	ou := acc.Usage
	if ou.PromptTokens != 2006 || ou.CompletionTokens != 300 || ou.PromptTokensDetails.CachedTokens != 1920 {
		t.Fatalf("the SDK saw usage %+v; want the upstream's 2006/300/1920", ou)
	}

	// The limited key's own call, which team-a must not see.
	if code, _, b := r.do(t, http.MethodPost, "/v1/chat/completions", openaiHeaders(limitedKey),
		`{"model":"gpt-4o","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`); code != 200 {
		t.Fatalf("limited key's call: %d %s", code, b)
	}

	wantA := metering.Totals{Requests: 1, InputTokens: au.InputTokens, OutputTokens: au.OutputTokens,
		CacheReadTokens: au.CacheReadInputTokens, CacheWriteTokens: au.CacheCreationInputTokens,
		CostUSD: (12*3 + 2500*0.30 + 1500*3.75 + 42*15) / 1e6}
	wantO := metering.Totals{Requests: 1, InputTokens: ou.PromptTokens - ou.PromptTokensDetails.CachedTokens,
		OutputTokens: ou.CompletionTokens, CacheReadTokens: ou.PromptTokensDetails.CachedTokens,
		CostUSD: ((2006-1920)*2.5 + 1920*1.25 + 300*10) / 1e6}

	t.Run("metrics", func(t *testing.T) {
		text := r.metricsText(t)
		for _, want := range []string{
			`relay_tokens_total{direction="input",key="team-a",provider="cache-anthropic",route="cached-claude"} 12`,
			`relay_tokens_total{direction="cache_write",key="team-a",provider="cache-anthropic",route="cached-claude"} 1500`,
			`relay_tokens_total{direction="cache_read",key="team-a",provider="cache-anthropic",route="cached-claude"} 2500`,
			`relay_tokens_total{direction="output",key="team-a",provider="cache-anthropic",route="cached-claude"} 42`,
			`relay_tokens_total{direction="input",key="team-a",provider="cache-openai",route="cached-gpt"} 86`,
			`relay_tokens_total{direction="cache_read",key="team-a",provider="cache-openai",route="cached-gpt"} 1920`,
			`relay_tokens_total{direction="output",key="team-a",provider="cache-openai",route="cached-gpt"} 300`,
		} {
			if !strings.Contains(text, want+"\n") {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if !strings.Contains(text, `relay_cost_usd_total{key="team-a",route="cached-claude"} 0.00704`) {
			t.Errorf("/metrics lacks the cost of cached-claude (0.007041)")
		}
		noSecrets(t, "metrics", text)
	})

	t.Run("events", func(t *testing.T) {
		cons, err := r.JS.OrderedConsumer(ctx, metering.StreamName, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{metering.Subject("team-a")}})
		if err != nil {
			t.Fatal(err)
		}
		byModel := map[string]metering.Event{}
		for len(byModel) < 2 {
			m, err := cons.Next(jetstream.FetchMaxWait(waitLimit))
			if err != nil {
				t.Fatalf("events of team-a: %v (have %v)", err, byModel)
			}
			noSecrets(t, "event", string(m.Data()))
			var ev metering.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			byModel[ev.Model] = ev
		}
		for model, want := range map[string]metering.Tokens{
			"claude-cache-model": {Input: 12, Output: 42, CacheRead: 2500, CacheWrite: 1500},
			"gpt-cache-model":    {Input: 86, Output: 300, CacheRead: 1920},
		} {
			ev := byModel[model]
			if ev.Tokens != want || ev.Mode != metering.ModeSync || ev.Key != "team-a" || ev.RequestID == "" || !ev.Priced {
				t.Errorf("event of %s: %+v; want tokens %+v", model, ev, want)
			}
		}
	})

	t.Run("GET /v1/usage", func(t *testing.T) {
		if err := r.Meter.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		code, _, b := r.do(t, http.MethodGet, "/v1/usage", anthropicHeaders(canaryKey), "")
		if code != 200 {
			t.Fatalf("GET /v1/usage: %d %s", code, b)
		}
		noSecrets(t, "usage answer", string(b))
		var ku metering.KeyUsage
		if err := json.Unmarshal(b, &ku); err != nil {
			t.Fatal(err)
		}
		if ku.Key != "team-a" || len(ku.Days) != 1 || ku.Days[0].Date != time.Now().UTC().Format("2006-01-02") {
			t.Fatalf("usage of team-a: %s", b)
		}
		got := map[string]metering.Totals{}
		for _, m := range ku.Days[0].Models {
			got[m.Model] = m.Totals
		}
		if len(got) != 2 || !sameTotals(got["claude-cache-model"], wantA) || !sameTotals(got["gpt-cache-model"], wantO) {
			t.Errorf("usage by model %+v; want claude %+v and gpt %+v only", got, wantA, wantO)
		}
		_, _, lb := r.do(t, http.MethodGet, "/v1/usage", openaiHeaders(limitedKey), "")
		if !strings.Contains(string(lb), `"key":"limited"`) || strings.Contains(string(lb), "cache-model") ||
			!strings.Contains(string(lb), `"model":"gpt-4o-2024"`) {
			t.Errorf("usage of limited: %s", lb)
		}
		noSecrets(t, "usage answer", string(lb))
	})

	t.Run("bad requests", func(t *testing.T) {
		if code, _, b := r.do(t, http.MethodGet, "/v1/usage", nil, ""); code != 401 || !strings.Contains(string(b), "invalid_api_key") {
			t.Errorf("no key: %d %s", code, b)
		}
		if code, _, b := r.do(t, http.MethodGet, "/v1/usage?from=2026-13-01", anthropicHeaders(canaryKey), ""); code != 400 ||
			!strings.Contains(string(b), "invalid_request_error") {
			t.Errorf("bad date: %d %s", code, b)
		}
	})
}

// sameTotals compares totals, cost within rounding.
func sameTotals(a, b metering.Totals) bool {
	ca, cb := a.CostUSD, b.CostUSD
	a.CostUSD, b.CostUSD = 0, 0
	return a == b && math.Abs(ca-cb) < 1e-12
}

// noSecrets fails when s holds a client's or a provider's key.
func noSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{canaryKey, limitedKey, providerKeyA, providerKeyOA} {
		if strings.Contains(s, secret) {
			t.Errorf("%s holds a secret", what)
		}
	}
}

// TestUsageWithoutStore: with no usage store, GET /v1/usage answers 503
// in the caller's format, and requests are still served and counted.
func TestUsageWithoutStore(t *testing.T) {
	r := newRelay(t)
	if code, _, b := r.do(t, http.MethodGet, "/v1/usage", anthropicHeaders(canaryKey), ""); code != 503 ||
		!strings.Contains(string(b), `"type":"error"`) {
		t.Errorf("GET /v1/usage without a store: %d %s", code, b)
	}
}

// TestBatchItemsMetered: message batch items run as jobs are metered with
// mode batch, their job and batch ids, the upstream's usage as their
// results show it, and the batch discount.
func TestBatchItemsMetered(t *testing.T) {
	prices := pricing.New([]configs.Price{{Model: "claude-sonnet-4-5", Input: 3, Output: 15, BatchDiscount: 0.5}})
	r := newRelay(t, batchSetup(t, batchJobs(4), withMeter(prices))...)
	c := r.client(canaryKey)
	b, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{
		Requests: []anthropic.MessageBatchNewParamsRequest{batchRequest("one", "claude-sonnet"), batchRequest("two", "claude-sonnet")}})
	if err != nil {
		t.Fatalf("Batches.New: %v", err)
	}
	waitBatch(t, c, b.ID, anthropic.MessageBatchProcessingStatusEnded)
	want := map[[2]int64]int{}
	for _, res := range results(t, c, b.ID) {
		u := res.Result.Message.Usage
		want[[2]int64{u.InputTokens, u.OutputTokens}]++
	}
	cons, err := r.JS.OrderedConsumer(t.Context(), metering.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{metering.Subject("team-a")}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m, err := cons.Next(jetstream.FetchMaxWait(waitLimit))
		if err != nil {
			t.Fatalf("batch item events: %v", err)
		}
		var ev metering.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		tk := ev.Tokens
		wantCost := (float64(tk.Input)*3 + float64(tk.Output)*15) / 1e6 / 2
		if ev.Mode != metering.ModeBatch || ev.BatchID != b.ID || !strings.HasPrefix(ev.JobID, "job_") ||
			ev.Model != "claude-sonnet-4-5" || ev.Route != "claude-sonnet" || math.Abs(ev.CostUSD-wantCost) > 1e-12 {
			t.Errorf("batch item event %+v; want mode batch of %s at half price %v", ev, b.ID, wantCost)
		}
		if want[[2]int64{tk.Input, tk.Output}] == 0 {
			t.Errorf("event tokens %+v match no item's result usage %v", tk, want)
		}
		want[[2]int64{tk.Input, tk.Output}]--
	}
}
