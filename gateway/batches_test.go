package gateway_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/bench/simupstream"
	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/workerstest"
)

// End-to-end tests of Anthropic's Message Batches API on the jobs
// service: the official SDK against a relay with a real router, lanes and
// jobs service on embedded NATS, in front of simulated upstreams (one of
// them OpenAI-compatible, one answering 400 to everything).

// holdRunner wraps the real JobRunner; while held, each run waits for
// release before going upstream.
type holdRunner struct {
	inner   jobs.Runner
	held    atomic.Bool
	started chan string
	release chan struct{}
	runs    atomic.Int32
}

func (h *holdRunner) Run(ctx context.Context, j jobs.Job, body []byte) jobs.Outcome {
	h.runs.Add(1)
	if h.held.Load() {
		select {
		case h.started <- j.ID:
		default:
		}
		select {
		case <-h.release:
		case <-ctx.Done():
			return jobs.Outcome{Err: ctx.Err(), Retryable: true}
		}
	}
	return h.inner.Run(ctx, j, body)
}

type batchRelay struct {
	URL    string
	svc    *jobs.Service
	js     jetstream.JetStream
	runner *holdRunner
	gw     *gateway.Server
}

type batchRelayOptions struct {
	workers     int
	held        bool
	window      time.Duration
	maxRequests int
	// maxJSONDepth is the gateway's, router's, runner's and job service's
	// max_json_depth (0: wire.FallbackMaxDepth).
	maxJSONDepth int
	bodyMemory   int64 // Config.BodyMemoryBytes (0: the default)
}

func newBatchRelay(t *testing.T, o batchRelayOptions) *batchRelay {
	t.Helper()
	if o.workers == 0 {
		o.workers = 4
	}
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns)
	reg := prometheus.NewRegistry()
	set, err := lanes.Open(t.Context(), lanes.Options{JetStream: js, Registry: reg, Lanes: []lanes.Spec{
		{Name: "interactive", MaxDepth: 100, MaxWait: 30 * time.Second},
		{Name: "batch", MaxDepth: 1000, MaxWait: time.Hour, MinShare: 0.1},
	}})
	if err != nil {
		t.Fatalf("lanes.Open: %v", err)
	}
	t.Cleanup(func() { _ = set.Close() })
	simA := simupstream.New(simupstream.Options{})
	simO := simupstream.New(simupstream.Options{})
	simBad := simupstream.New(simupstream.Options{})
	simBad.SetFault(simupstream.Fault400)
	var ups []*httptest.Server
	for _, s := range []*simupstream.Server{simA, simO, simBad} {
		ups = append(ups, httptest.NewServer(s.Handler()))
	}
	t.Cleanup(func() {
		for i, s := range []*simupstream.Server{simA, simO, simBad} {
			_ = s.Close()
			ups[i].Close()
		}
	})
	provA := mustProvider(t, workers.ProviderOptions{Name: "anthropic-a", Format: workers.FormatAnthropic,
		BaseURL: ups[0].URL, APIKey: providerKeyA, Timeout: 10 * time.Second})
	provO := mustProvider(t, workers.ProviderOptions{Name: "openai-b", Format: workers.FormatOpenAI,
		BaseURL: ups[1].URL + "/v1", APIKey: providerKeyOA, Timeout: 10 * time.Second})
	provBad := mustProvider(t, workers.ProviderOptions{Name: "anthropic-bad", Format: workers.FormatAnthropic,
		BaseURL: ups[2].URL, APIKey: providerKeyA, Timeout: 10 * time.Second})
	target := func(p *workers.HTTPProvider, name string, f workers.Format, model string) []workers.Target {
		return []workers.Target{{Provider: p, ProviderName: name, Format: f, Model: model, Weight: 1, Timeout: 10 * time.Second,
			Actor: workerstest.Actor(actor.Options{Name: name, MaxConcurrency: 4})}}
	}
	router, err := workerstest.Router(workers.RouterOptions{
		Routes: []workers.RouteSpec{
			{Model: "claude-sonnet", Targets: target(provA, "anthropic-a", workers.FormatAnthropic, "claude-sonnet-4-5")},
			{Model: "gpt-4o", Targets: target(provO, "openai-b", workers.FormatOpenAI, "gpt-4o-2024")},
			{Model: "claude-bad", Targets: target(provBad, "anthropic-bad", workers.FormatAnthropic, "claude-bad-1")},
		},
		Metrics:      workers.NewMetrics(reg),
		OnRelease:    set.Kick,
		MaxJSONDepth: o.maxJSONDepth,
	})
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	hr := &holdRunner{inner: &workers.JobRunner{Router: func() workers.JobDispatcher { return router }, Lanes: set,
		MaxJSONDepth: o.maxJSONDepth},
		started: make(chan string, 16), release: make(chan struct{})}
	hr.held.Store(o.held)
	svc, err := jobs.Open(t.Context(), js, hr, jobs.Options{Registry: reg, Workers: o.workers, CallbackWorkers: 2, Signer: testSigner(t),
		AllowPrivate: true, CallbackBaseBackoff: 10 * time.Millisecond, BatchWindow: o.window, MaxBatchRequests: o.maxRequests,
		MaxJSONDepth: o.maxJSONDepth,
		Lanes:        map[string]time.Duration{"batch": time.Hour, "interactive": time.Minute}})
	if err != nil {
		t.Fatalf("jobs.Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		hr.held.Store(false)
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("jobs Run did not return")
		}
	})
	cfg := gateway.Config{
		Dispatcher:      router,
		MaxJSONDepth:    o.maxJSONDepth,
		BodyMemoryBytes: o.bodyMemory,
		Lanes:           []gateway.Lane{{Name: "interactive", MaxWait: 30 * time.Second}, {Name: "batch", MaxWait: time.Hour}},
		Keys: []gateway.Key{
			{Name: "team-a", SHA256: sha256.Sum256([]byte(canaryKey)), DefaultLane: "interactive",
				Lanes: []string{"interactive", "batch"}, Routes: []string{"*"}},
			{Name: "limited", SHA256: sha256.Sum256([]byte(limitedKey)), DefaultLane: "interactive",
				Lanes: []string{"interactive"}, Routes: []string{"gpt-4o"}},
		},
	}
	gw := gateway.New(cfg, gateway.Options{}, gateway.Deps{Registry: reg, Lanes: set, Jobs: svc})
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return &batchRelay{URL: srv.URL, svc: svc, js: js, runner: hr, gw: gw}
}

func (br *batchRelay) client(key string, opts ...aoption.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]aoption.RequestOption{
		aoption.WithBaseURL(br.URL), aoption.WithAPIKey(key), aoption.WithMaxRetries(0),
	}, opts...)...)
}

// do sends a raw request and returns status, headers and body.
func (br *batchRelay) do(t *testing.T, method, path, key, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, br.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", key)
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func batchRequest(customID, model string) anthropic.MessageBatchNewParamsRequest {
	return anthropic.MessageBatchNewParamsRequest{CustomID: customID, Params: anthropic.MessageBatchNewParamsRequestParams{
		Model: anthropic.Model(model), MaxTokens: 16,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello " + customID))},
	}}
}

// waitBatch polls until the batch reaches status.
func waitBatch(t *testing.T, c anthropic.Client, id string, status anthropic.MessageBatchProcessingStatus) *anthropic.MessageBatch {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := c.Messages.Batches.Get(t.Context(), id, anthropic.MessageBatchGetParams{})
		if err != nil {
			t.Fatalf("Batches.Get: %v", err)
		}
		if b.ProcessingStatus == status {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s is %s %+v; want %s", id, b.ProcessingStatus, b.RequestCounts, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// results reads a batch's results through the SDK.
func results(t *testing.T, c anthropic.Client, id string) []anthropic.MessageBatchIndividualResponse {
	t.Helper()
	s := c.Messages.Batches.ResultsStreaming(t.Context(), id, anthropic.MessageBatchResultsParams{})
	defer s.Close()
	var out []anthropic.MessageBatchIndividualResponse
	for s.Next() {
		out = append(out, s.Current())
	}
	if err := s.Err(); err != nil {
		t.Fatalf("ResultsStreaming: %v", err)
	}
	return out
}

func apiStatus(err error) int {
	var ae *anthropic.Error
	if errors.As(err, &ae) {
		return ae.StatusCode
	}
	return 0
}

func TestBatchSDKLifecycle(t *testing.T) {
	br := newBatchRelay(t, batchRelayOptions{})
	c := br.client(canaryKey)

	// Per-item callbacks.
	var mu sync.Mutex
	hooks := map[string]map[string]any{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		hooks[fmt.Sprint(m["custom_id"])] = m
		mu.Unlock()
	}))
	defer rcv.Close()

	start := time.Now()
	b, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("r1", "claude-sonnet"),
		batchRequest("r2-openai", "gpt-4o"),
		batchRequest("r3_bad", "claude-bad"),
		batchRequest("r4", "claude-sonnet"),
	}}, aoption.WithJSONSet("callback_url", rcv.URL+"/hook"))
	if err != nil {
		t.Fatalf("Batches.New: %v", err)
	}
	if !strings.HasPrefix(b.ID, "msgbatch_") || b.ProcessingStatus != anthropic.MessageBatchProcessingStatusInProgress ||
		b.RequestCounts.Processing != 4 || b.ResultsURL != "" || !b.EndedAt.IsZero() {
		t.Fatalf("created batch %s", b.RawJSON())
	}
	if d := b.ExpiresAt.Sub(b.CreatedAt); d != 24*time.Hour {
		t.Errorf("expires_at - created_at = %v; want 24h", d)
	}
	if b.CreatedAt.Before(start.Add(-time.Second)) || b.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("created_at %v is not now", b.CreatedAt)
	}

	ended := waitBatch(t, c, b.ID, anthropic.MessageBatchProcessingStatusEnded)
	if rc := ended.RequestCounts; rc.Succeeded != 3 || rc.Errored != 1 || rc.Processing != 0 || rc.Canceled != 0 || rc.Expired != 0 {
		t.Errorf("request_counts %+v; want 3 succeeded, 1 errored", rc)
	}
	if want := br.URL + "/v1/messages/batches/" + b.ID + "/results"; ended.ResultsURL != want {
		t.Errorf("results_url %q; want %q", ended.ResultsURL, want)
	}
	if ended.EndedAt.IsZero() || ended.EndedAt.Before(ended.CreatedAt) || !ended.CancelInitiatedAt.IsZero() {
		t.Errorf("ended batch %s", ended.RawJSON())
	}

	res := results(t, c, b.ID)
	if len(res) != 4 {
		t.Fatalf("%d results; want 4", len(res))
	}
	for i, want := range []string{"r1", "r2-openai", "r3_bad", "r4"} {
		r := res[i]
		if r.CustomID != want {
			t.Errorf("result %d is %q; want %q (submission order)", i, r.CustomID, want)
		}
		switch want {
		case "r3_bad":
			e := r.Result.AsErrored()
			if r.Result.Type != "errored" || e.Error.Error.Type != "invalid_request_error" || e.Error.Error.Message == "" {
				t.Errorf("result %s: %s; want errored invalid_request_error", want, r.Result.RawJSON())
			}
		default:
			m := r.Result.AsSucceeded().Message
			if r.Result.Type != "succeeded" || m.Role != "assistant" || len(m.Content) == 0 || m.Content[0].Text == "" ||
				!strings.HasPrefix(m.ID, "msg") && want != "r2-openai" {
				t.Errorf("result %s: %s; want a succeeded Message", want, r.Result.RawJSON())
			}
			if m.Type != "message" || m.Usage.OutputTokens == 0 {
				t.Errorf("result %s message %s; want an Anthropic Message with usage", want, m.RawJSON())
			}
		}
	}

	// Raw: JSONL content type, query strings ignored.
	code, h, body := br.do(t, "GET", "/v1/messages/batches/"+b.ID+"/results?beta=true", canaryKey, "")
	if code != 200 || h.Get("Content-Type") != "application/x-jsonl" || strings.Count(string(body), "\n") != 4 {
		t.Errorf("GET results = %d %q %q", code, h.Get("Content-Type"), body)
	}
	if code, _, _ := br.do(t, "GET", "/v1/messages/batches/"+b.ID+"?beta=true", canaryKey, ""); code != 200 {
		t.Errorf("GET with ?beta=true = %d", code)
	}

	// Each item is also a job: published on NATS with batch_id and
	// custom_id, and called back.
	cons, err := br.js.OrderedConsumer(t.Context(), jobs.ResultsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"relay.results.team-a.>"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for len(seen) < 4 {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("NATS results: %v (got %v)", err, seen)
		}
		var j jobs.Job
		if err := json.Unmarshal(msg.Data(), &j); err != nil || j.BatchID != b.ID || j.Lane != "batch" {
			t.Fatalf("NATS result %s", msg.Data())
		}
		seen[j.CustomID] = j.Status
	}
	if seen["r3_bad"] != "failed" || seen["r1"] != "succeeded" || seen["r2-openai"] != "succeeded" {
		t.Errorf("NATS results %v", seen)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(hooks)
		okBatch := n == 4 && hooks["r4"]["batch_id"] == b.ID
		mu.Unlock()
		if okBatch {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callbacks; want 4 with batch_id", n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// List: newest first, pagination both ways.
	b2, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("only", "gpt-4o")}})
	if err != nil {
		t.Fatal(err)
	}
	page, err := c.Messages.Batches.List(t.Context(), anthropic.MessageBatchListParams{Limit: anthropic.Int(1)})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != b2.ID || !page.HasMore || page.FirstID != b2.ID || page.LastID != b2.ID {
		t.Errorf("List(limit 1) = %s; want the newest batch, has_more", page.RawJSON())
	}
	var all []string
	iterPager := c.Messages.Batches.ListAutoPaging(t.Context(), anthropic.MessageBatchListParams{Limit: anthropic.Int(1)})
	for iterPager.Next() {
		all = append(all, iterPager.Current().ID)
	}
	if err := iterPager.Err(); err != nil || len(all) != 2 || all[0] != b2.ID || all[1] != b.ID {
		t.Errorf("ListAutoPaging = %v, %v; want [%s %s]", all, err, b2.ID, b.ID)
	}
	page, err = c.Messages.Batches.List(t.Context(), anthropic.MessageBatchListParams{BeforeID: anthropic.String(b.ID)})
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != b2.ID || page.HasMore {
		t.Errorf("List(before_id oldest) = %v %v; want the newer one", page, err)
	}
	if page, err = c.Messages.Batches.List(t.Context(), anthropic.MessageBatchListParams{AfterID: anthropic.String(b.ID)}); err != nil ||
		len(page.Data) != 0 || page.HasMore {
		t.Errorf("List(after_id oldest) = %v %v; want empty", page, err)
	}

	// Another key sees none of it.
	other := br.client(limitedKey)
	if _, err := other.Messages.Batches.Get(t.Context(), b.ID, anthropic.MessageBatchGetParams{}); apiStatus(err) != 404 {
		t.Errorf("Get by another key: %v; want 404", err)
	}
	if _, err := other.Messages.Batches.Delete(t.Context(), b.ID, anthropic.MessageBatchDeleteParams{}); apiStatus(err) != 404 {
		t.Errorf("Delete by another key: %v; want 404", err)
	}
	if page, err := other.Messages.Batches.List(t.Context(), anthropic.MessageBatchListParams{}); err != nil || len(page.Data) != 0 {
		t.Errorf("List by another key = %v %v; want empty", page, err)
	}

	// Delete the ended batch.
	del, err := c.Messages.Batches.Delete(t.Context(), b.ID, anthropic.MessageBatchDeleteParams{})
	if err != nil || del.ID != b.ID || del.Type != "message_batch_deleted" {
		t.Fatalf("Delete = %v, %v", del, err)
	}
	if _, err := c.Messages.Batches.Get(t.Context(), b.ID, anthropic.MessageBatchGetParams{}); apiStatus(err) != 404 {
		t.Errorf("Get after delete: %v; want 404", err)
	}
}

func TestBatchCancel(t *testing.T) {
	br := newBatchRelay(t, batchRelayOptions{workers: 1, held: true})
	c := br.client(canaryKey)
	b, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("a", "claude-sonnet"), batchRequest("b", "gpt-4o"), batchRequest("c", "claude-sonnet")}})
	if err != nil {
		t.Fatalf("Batches.New: %v", err)
	}
	select {
	case <-br.runner.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no item started")
	}
	// Still processing: no results, no delete.
	s := c.Messages.Batches.ResultsStreaming(t.Context(), b.ID, anthropic.MessageBatchResultsParams{})
	if s.Next() || apiStatus(s.Err()) != 400 {
		t.Errorf("results while in progress: %v; want 400", s.Err())
	}
	s.Close()
	if _, err := c.Messages.Batches.Delete(t.Context(), b.ID, anthropic.MessageBatchDeleteParams{}); apiStatus(err) != 409 {
		t.Errorf("Delete in progress: %v; want 409", err)
	}

	cb, err := c.Messages.Batches.Cancel(t.Context(), b.ID, anthropic.MessageBatchCancelParams{})
	if err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if cb.ProcessingStatus != anthropic.MessageBatchProcessingStatusCanceling || cb.CancelInitiatedAt.IsZero() ||
		cb.RequestCounts.Processing != 1 || cb.RequestCounts.Canceled != 2 {
		t.Fatalf("after cancel: %s; want canceling, 1 processing, 2 canceled", cb.RawJSON())
	}
	close(br.runner.release)
	ended := waitBatch(t, c, b.ID, anthropic.MessageBatchProcessingStatusEnded)
	if rc := ended.RequestCounts; rc.Succeeded != 1 || rc.Canceled != 2 || rc.Processing != 0 {
		t.Errorf("ended counts %+v; want 1 succeeded, 2 canceled", rc)
	}
	types := map[string]int{}
	for _, r := range results(t, c, b.ID) {
		types[r.Result.Type]++
	}
	if types["succeeded"] != 1 || types["canceled"] != 2 {
		t.Errorf("result types %v", types)
	}
	if _, err := c.Messages.Batches.Cancel(t.Context(), b.ID, anthropic.MessageBatchCancelParams{}); apiStatus(err) != 409 {
		t.Errorf("Cancel of an ended batch: %v; want 409", err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := br.runner.runs.Load(); n != 1 {
		t.Errorf("%d items ran; want 1 (the others were canceled)", n)
	}
}

func TestBatchExpiry(t *testing.T) {
	const window = 1500 * time.Millisecond
	br := newBatchRelay(t, batchRelayOptions{workers: 1, held: true, window: window})
	c := br.client(canaryKey)
	b, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("x", "claude-sonnet"), batchRequest("y", "claude-sonnet"), batchRequest("z", "gpt-4o")}})
	if err != nil {
		t.Fatalf("Batches.New: %v", err)
	}
	if d := b.ExpiresAt.Sub(b.CreatedAt); d != window {
		t.Errorf("window %v; want %v", d, window)
	}
	<-br.runner.started
	time.Sleep(time.Until(b.ExpiresAt) + 50*time.Millisecond)
	ended := waitBatch(t, c, b.ID, anthropic.MessageBatchProcessingStatusEnded)
	if rc := ended.RequestCounts; rc.Expired != 3 || rc.Processing != 0 {
		t.Errorf("counts %+v; want 3 expired", rc)
	}
	if !ended.EndedAt.Equal(ended.ExpiresAt) {
		t.Errorf("ended_at %v; want expires_at %v", ended.EndedAt, ended.ExpiresAt)
	}
	// The running item finishes late: still expired. The queued ones end
	// without running.
	close(br.runner.release)
	cons, err := br.js.OrderedConsumer(t.Context(), jobs.ResultsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	expired := 0
	for range 3 {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("NATS results: %v", err)
		}
		var j jobs.Job
		_ = json.Unmarshal(msg.Data(), &j)
		if j.Status == jobs.StatusCanceled && j.Error != nil && j.Error.Type == jobs.ErrorExpired {
			expired++
		}
	}
	if expired != 2 || br.runner.runs.Load() != 1 {
		t.Errorf("%d items ended expired, %d ran; want 2 and 1", expired, br.runner.runs.Load())
	}
	for _, r := range results(t, c, b.ID) {
		if r.Result.Type != "expired" {
			t.Errorf("result %s: %s; want expired", r.CustomID, r.Result.RawJSON())
		}
	}
	again, err := c.Messages.Batches.Get(t.Context(), b.ID, anthropic.MessageBatchGetParams{})
	if err != nil || again.RequestCounts.Expired != 3 || !again.EndedAt.Equal(ended.EndedAt) {
		t.Errorf("after the late finish: %v %v; want still 3 expired", again, err)
	}
}

func TestBatchValidation(t *testing.T) {
	br := newBatchRelay(t, batchRelayOptions{maxRequests: 5})
	item := func(id, params string) string { return `{"custom_id":"` + id + `","params":` + params + `}` }
	ok := `{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	reqs := func(items ...string) string { return `{"requests":[` + strings.Join(items, ",") + `]}` }
	long := strings.Repeat("a", 65)
	six := make([]string, 6)
	for i := range six {
		six[i] = item(fmt.Sprint("i", i), ok)
	}
	for _, tc := range []struct {
		name, key, body string
		code            int
		errType         string
	}{
		{"no key", "", reqs(item("a", ok)), 401, "authentication_error"},
		{"malformed", canaryKey, `{"requests":[`, 400, "invalid_request_error"},
		{"not an object", canaryKey, `[]`, 400, "invalid_request_error"},
		{"no requests", canaryKey, `{}`, 400, "invalid_request_error"},
		{"empty requests", canaryKey, reqs(), 400, "invalid_request_error"},
		{"duplicate custom_id", canaryKey, reqs(item("a", ok), item("a", ok)), 400, "invalid_request_error"},
		{"custom_id with a space", canaryKey, reqs(item("a b", ok)), 400, "invalid_request_error"},
		{"custom_id too long", canaryKey, reqs(item(long, ok)), 400, "invalid_request_error"},
		{"empty custom_id", canaryKey, reqs(item("", ok)), 400, "invalid_request_error"},
		{"no params", canaryKey, `{"requests":[{"custom_id":"a"}]}`, 400, "invalid_request_error"},
		{"no model", canaryKey, reqs(item("a", `{"max_tokens":5}`)), 400, "invalid_request_error"},
		{"stream", canaryKey, reqs(item("a", `{"model":"claude-sonnet","stream":true}`)), 400, "invalid_request_error"},
		{"unknown model", canaryKey, reqs(item("a", ok), item("b", `{"model":"nope"}`)), 404, "not_found_error"},
		{"route not allowed", limitedKey, reqs(item("a", ok)), 403, "permission_error"},
		{"too many requests", canaryKey, reqs(six...), 400, "invalid_request_error"},
		{"bad callback scheme", canaryKey, `{"callback_url":"ftp://hooks.example.com/","requests":[` + item("a", ok) + `]}`, 400, "invalid_request_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := br.do(t, "POST", "/v1/messages/batches", tc.key, tc.body)
			var e struct {
				Type  string `json:"type"`
				Error struct {
					Type, Message string
				} `json:"error"`
			}
			_ = json.Unmarshal(body, &e)
			if code != tc.code || e.Type != "error" || e.Error.Type != tc.errType || h.Get("Request-Id") == "" {
				t.Fatalf("POST = %d %s; want %d %s", code, body, tc.code, tc.errType)
			}
		})
	}
	// The SDK gets the same answers.
	c := br.client(canaryKey)
	_, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("a", "claude-sonnet"), batchRequest("a", "gpt-4o")}})
	if apiStatus(err) != 400 || !strings.Contains(err.Error(), "duplicate custom_id") {
		t.Errorf("SDK duplicate custom_id: %v; want 400", err)
	}
	if _, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("a", "unknown-model")}}); apiStatus(err) != 404 {
		t.Errorf("SDK unknown model: %v; want 404", err)
	}
	for _, id := range []string{"msgbatch_01000000000000000000000000", "msgbatch_nope", "job_01000000000000000000000000"} {
		if _, err := c.Messages.Batches.Get(t.Context(), id, anthropic.MessageBatchGetParams{}); apiStatus(err) != 404 {
			t.Errorf("Get %s: %v; want 404", id, err)
		}
	}
	if code, _, _ := br.do(t, "GET", "/v1/messages/batches?limit=0", canaryKey, ""); code != 400 {
		t.Errorf("list limit=0 = %d; want 400", code)
	}
	// The lane: x-relay-lane is honoured and checked.
	code, h, _ := br.do(t, "POST", "/v1/messages/batches", canaryKey, reqs(item("a", ok)))
	if code != 200 || h.Get("X-Relay-Lane") != "batch" {
		t.Errorf("create = %d lane %q; want 200 on batch", code, h.Get("X-Relay-Lane"))
	}
	req, _ := http.NewRequest("POST", br.URL+"/v1/messages/batches", strings.NewReader(reqs(item("a", `{"model":"gpt-4o"}`))))
	req.Header.Set("x-api-key", limitedKey)
	req.Header.Set("x-relay-lane", "batch")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("create on a lane the key may not use = %v %v; want 403", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}

	// Over 256 MB: 413 from the declared length, before reading a body.
	conn, err := net.Dial("tcp", strings.TrimPrefix(br.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = fmt.Fprintf(conn, "POST /v1/messages/batches HTTP/1.1\r\nHost: relay\r\nx-api-key: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"requests\":[", canaryKey, gateway.MaxBatchBytes+1)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("oversized batch: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || !strings.Contains(string(b), "request_too_large") {
		t.Errorf("oversized batch = %d %s; want 413 request_too_large", resp.StatusCode, b)
	}
}

// TestBatchBodyBudget: a batch creation body is charged to the body
// memory budget as it is decoded: one that fits is stored, one larger
// than the whole budget gets 413, and the budget is back to zero after
// each.
func TestBatchBodyBudget(t *testing.T) {
	const budget = 64 << 10
	br := newBatchRelay(t, batchRelayOptions{bodyMemory: budget})
	params := func(pad int) string {
		return `{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("x", pad) + `"}]}`
	}
	batch := func(items, pad int) string {
		var b strings.Builder
		b.WriteString(`{"requests":[`)
		for i := range items {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"custom_id":"r%d","params":%s}`, i, params(pad))
		}
		b.WriteString("]}")
		return b.String()
	}
	for _, tc := range []struct {
		name    string
		body    string
		code    int
		errType string
	}{
		{"fits", batch(4, 4<<10), 200, ""},
		{"larger than the budget", batch(8, 16<<10), 413, "request_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := br.do(t, "POST", "/v1/messages/batches", canaryKey, tc.body)
			if code != tc.code || (tc.errType != "" && errorType(body) != tc.errType) {
				t.Errorf("POST %d bytes = %d %s; want %d %s", len(tc.body), code, body, tc.code, tc.errType)
			}
			pollFor(t, "budget back to zero", func() bool { return br.gw.BodyBytesInUse() == 0 })
		})
	}
}
