package gateway_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/relaygw/relay/workers/simupstream"
)

// families parses the relay's /metrics.
func (r *relay) families(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(r.metricsText(t)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// histogram returns the count and sum of the histogram series of family
// name with label route, or ok false when it is absent.
func histogram(fams map[string]*dto.MetricFamily, name, route string) (count uint64, sum float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, 0, false
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && l.GetValue() == route {
				return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum(), true
			}
		}
	}
	return 0, 0, false
}

// TestTimeToFirstTokenAndAddedLatency streams through both APIs from an
// upstream that takes latency to its first byte, and checks what the two
// histograms recorded: the routes' series exist at zero before the first
// request; a stream observes its time to first token (at least the
// upstream's latency, no more than its whole duration); a non-streamed
// answer observes none; and the added latency leaves out the time spent
// waiting on the upstream (so it is at most duration - latency).
func TestTimeToFirstTokenAndAddedLatency(t *testing.T) {
	const latency = 150 * time.Millisecond
	r := newRelay(t, withUpstreams(simupstream.Options{Latency: latency, TokenInterval: 5 * time.Millisecond}))
	before := r.families(t)
	for _, route := range []string{"claude-sonnet", "gpt-4o"} {
		for _, name := range []string{"relay_time_to_first_token_seconds", "relay_added_latency_seconds"} {
			if n, _, ok := histogram(before, name, route); !ok || n != 0 {
				t.Fatalf("before any request, %s{route=%q}: present %v, count %d; want present at 0", name, route, ok, n)
			}
		}
	}

	ctx := t.Context()
	ac, oc := anthropicClient(r, canaryKey), openaiClient(r, canaryKey)
	as := ac.Messages.NewStreaming(ctx, messageParams("claude-sonnet"))
	for as.Next() {
	}
	if err := as.Err(); err != nil {
		t.Fatalf("anthropic stream: %v", err)
	}
	os := oc.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "gpt-4o", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	for os.Next() {
	}
	if err := os.Err(); err != nil {
		t.Fatalf("openai stream: %v", err)
	}
	// Not streamed: no time to first token.
	if _, err := ac.Messages.New(ctx, anthropic.MessageNewParams{
		Model: "claude-sonnet", MaxTokens: 8, Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}}); err != nil {
		t.Fatalf("anthropic message: %v", err)
	}

	after := r.families(t)
	tests := []struct {
		route        string
		ttft, served uint64
	}{
		{"claude-sonnet", 1, 2},
		{"gpt-4o", 1, 1},
	}
	for _, tc := range tests {
		n, ttft, _ := histogram(after, "relay_time_to_first_token_seconds", tc.route)
		if n != tc.ttft {
			t.Errorf("%s: time to first token observed %d times, want %d", tc.route, n, tc.ttft)
		}
		dn, dsum, _ := histogram(after, "relay_request_duration_seconds", tc.route)
		an, asum, _ := histogram(after, "relay_added_latency_seconds", tc.route)
		if dn != tc.served || an != tc.served {
			t.Errorf("%s: durations %d, added latencies %d; want %d each", tc.route, dn, an, tc.served)
		}
		if ttft < latency.Seconds() {
			t.Errorf("%s: time to first token %.3fs, shorter than the upstream's latency %s", tc.route, ttft, latency)
		}
		if asum < 0 || asum > dsum-float64(tc.served)*latency.Seconds() {
			t.Errorf("%s: added latency %.4fs over %d requests lasting %.3fs in all with %s of upstream latency each: upstream time counted as the relay's",
				tc.route, asum, tc.served, dsum, latency)
		}
	}
}

// TestRequestSeriesAtZero checks that relay_requests_total has, before any
// request, a code="200" series at zero for each route's provider on each
// lane and mode, so that an error ratio has its denominator at once.
func TestRequestSeriesAtZero(t *testing.T) {
	r := newRelay(t)
	text := r.metricsText(t)
	for _, want := range []string{
		`relay_requests_total{code="200",lane="interactive",mode="direct",provider="anthropic-a",route="claude-sonnet"} 0`,
		`relay_requests_total{code="200",lane="batch",mode="queued",provider="openai-b",route="gpt-4o"} 0`,
		`relay_upstream_attempts_total{outcome="429",provider="anthropic-a"} 0`,
		`relay_tokens_total{direction="output",key="team-a",provider="openai-b",route="gpt-4o"} 0`,
		`relay_tokens_total{direction="cache_write",key="team-a",provider="anthropic-a",route="claude-sonnet"} 0`,
		`relay_tokens_total{direction="input",key="limited",provider="openai-b",route="gpt-4o"} 0`,
		`relay_cost_usd_total{key="limited",route="gpt-4o"} 0`,
		`relay_admission_refusals_total{provider="openai-b",reason="breaker_open"} 0`,
		`relay_request_duration_seconds_count{mode="queued",route="gpt-4o"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// Series exist for the routes a key may use only.
	if strings.Contains(text, `key="limited",route="claude-sonnet"`) {
		t.Errorf("/metrics has series of key limited on a route it may not use")
	}
	if code, _, _ := r.do(t, http.MethodGet, "/metrics", nil, ""); code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
}
