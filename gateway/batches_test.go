package gateway_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/simupstream"
	"github.com/relaygw/relay/workers/workerstest"
)

// End-to-end tests of Anthropic's Message Batches API on the jobs
// service: the official SDK against a relay with a real router, lanes and
// jobs service on embedded NATS, in front of simulated upstreams (one of
// them OpenAI-compatible, one answering 400 to everything).

// batchJobs are the jobs.Options of the batch tests, with workers job
// workers.
func batchJobs(workers int) jobs.Options {
	return jobs.Options{Workers: workers, CallbackWorkers: 2,
		Lanes: map[string]time.Duration{"batch": time.Hour, "interactive": time.Minute}}
}

// batchSetup is the relay of the batch tests: lanes, a jobs service
// opened with jo on the real job runner, providers of four concurrency
// slots, a third route, claude-bad, whose upstream answers 400 to
// everything, and the keys team-a and limited (interactive only). Later
// options override it.
func batchSetup(t *testing.T, jo jobs.Options, more ...relayOption) []relayOption {
	t.Helper()
	bad := newUpstream(t, "anthropic-bad", simupstream.Options{})
	bad.sim.SetFault(simupstream.Fault400)
	badTarget := bad.target(workerstest.Actor(actor.Options{Name: "anthropic-bad", MaxConcurrency: 4}))
	badTarget.Model = "claude-bad-1"
	return append([]relayOption{
		withLanes(100),
		withJobs(jo),
		withActors(map[string]actor.Options{"anthropic-a": {MaxConcurrency: 4}, "openai-b": {MaxConcurrency: 4}}),
		withRoutes(workers.RouteSpec{Model: "claude-bad", Targets: []workers.Target{badTarget}}),
		withKeys(teamA, limitedInteractive),
	}, more...)
}

// client is an Anthropic SDK client of the relay with key.
func (r *relay) client(key string, opts ...aoption.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]aoption.RequestOption{
		aoption.WithBaseURL(r.URL), aoption.WithAPIKey(key), aoption.WithMaxRetries(0),
	}, opts...)...)
}

// doKey sends a raw request with key, in Anthropic's format, and returns
// status, headers and body.
func (r *relay) doKey(t *testing.T, method, path, key, body string) (int, http.Header, []byte) {
	t.Helper()
	return r.do(t, method, path, map[string]string{"x-api-key": key, "anthropic-version": "2023-06-01"}, body)
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
	var b *anthropic.MessageBatch
	defer func() {
		if t.Failed() && b != nil {
			t.Logf("batch %s is %s %+v; want %s", id, b.ProcessingStatus, b.RequestCounts, status)
		}
	}()
	natstest.Eventually(t, waitLimit, "batch "+id+" "+string(status), func() bool {
		var err error
		if b, err = c.Messages.Batches.Get(t.Context(), id, anthropic.MessageBatchGetParams{}); err != nil {
			t.Fatalf("Batches.Get: %v", err)
		}
		return b.ProcessingStatus == status
	})
	return b
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
	br := newRelay(t, batchSetup(t, batchJobs(4))...)
	c := br.client(canaryKey)

	// Per-item callbacks.
	var mu sync.Mutex
	hooks := map[string]map[string]any{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Errorf("callback body: %v", err)
		}
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
	code, h, body := br.doKey(t, "GET", "/v1/messages/batches/"+b.ID+"/results?beta=true", canaryKey, "")
	if code != 200 || h.Get("Content-Type") != "application/x-jsonl" || strings.Count(string(body), "\n") != 4 {
		t.Errorf("GET results = %d %q %q", code, h.Get("Content-Type"), body)
	}
	if code, _, _ := br.doKey(t, "GET", "/v1/messages/batches/"+b.ID+"?beta=true", canaryKey, ""); code != 200 {
		t.Errorf("GET with ?beta=true = %d", code)
	}

	// Each item is also a job: published on NATS with batch_id and
	// custom_id, and called back.
	cons, err := br.JS.OrderedConsumer(t.Context(), jobs.ResultsStream, jetstream.OrderedConsumerConfig{
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
	natstest.Eventually(t, 10*time.Second, "4 callbacks with batch_id", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(hooks) == 4 && hooks["r4"]["batch_id"] == b.ID
	})

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
	br := newRelay(t, batchSetup(t, batchJobs(1), withHeldJobs())...)
	c := br.client(canaryKey)
	b, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("a", "claude-sonnet"), batchRequest("b", "gpt-4o"), batchRequest("c", "claude-sonnet")}})
	if err != nil {
		t.Fatalf("Batches.New: %v", err)
	}
	select {
	case <-br.Runner.started:
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
	close(br.Runner.release)
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
	// Every job message dismissed or done: no canceled item can run later.
	natstest.Eventually(t, waitLimit, "no job left queued or running", func() bool {
		return strings.Contains(metricsOf(t, br.Registry), "relay_jobs_queued{} 0\n")
	})
	if n := br.Runner.runs.Load(); n != 1 {
		t.Errorf("%d items ran; want 1 (the others were canceled)", n)
	}
}

func TestBatchExpiry(t *testing.T) {
	const window = 1500 * time.Millisecond
	jo := batchJobs(1)
	jo.BatchWindow = window
	br := newRelay(t, batchSetup(t, jo, withHeldJobs())...)
	c := br.client(canaryKey)
	b, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{
		batchRequest("x", "claude-sonnet"), batchRequest("y", "claude-sonnet"), batchRequest("z", "gpt-4o")}})
	if err != nil {
		t.Fatalf("Batches.New: %v", err)
	}
	if d := b.ExpiresAt.Sub(b.CreatedAt); d != window {
		t.Errorf("window %v; want %v", d, window)
	}
	<-br.Runner.started
	ended := waitBatch(t, c, b.ID, anthropic.MessageBatchProcessingStatusEnded)
	if rc := ended.RequestCounts; rc.Expired != 3 || rc.Processing != 0 {
		t.Errorf("counts %+v; want 3 expired", rc)
	}
	if !ended.EndedAt.Equal(ended.ExpiresAt) {
		t.Errorf("ended_at %v; want expires_at %v", ended.EndedAt, ended.ExpiresAt)
	}
	// The running item finishes late: still expired. The queued ones end
	// without running.
	close(br.Runner.release)
	cons, err := br.JS.OrderedConsumer(t.Context(), jobs.ResultsStream, jetstream.OrderedConsumerConfig{})
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
		if err := json.Unmarshal(msg.Data(), &j); err != nil {
			t.Fatalf("NATS result %s: %v", msg.Data(), err)
		}
		if j.Status == jobs.StatusCanceled && j.Error != nil && j.Error.Type == jobs.ErrorExpired {
			expired++
		}
	}
	if expired != 2 || br.Runner.runs.Load() != 1 {
		t.Errorf("%d items ended expired, %d ran; want 2 and 1", expired, br.Runner.runs.Load())
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
	jo := batchJobs(4)
	jo.MaxBatchRequests = 5
	br := newRelay(t, batchSetup(t, jo)...)
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
			code, h, body := br.doKey(t, "POST", "/v1/messages/batches", tc.key, tc.body)
			var e struct {
				Type  string `json:"type"`
				Error struct {
					Type, Message string
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("POST = %d %s: not JSON: %v", code, body, err)
			}
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
	if code, _, _ := br.doKey(t, "GET", "/v1/messages/batches?limit=0", canaryKey, ""); code != 400 {
		t.Errorf("list limit=0 = %d; want 400", code)
	}
	// The lane: x-relay-lane is honoured and checked.
	code, h, _ := br.doKey(t, "POST", "/v1/messages/batches", canaryKey, reqs(item("a", ok)))
	if code != 200 || h.Get("X-Relay-Lane") != "batch" {
		t.Errorf("create = %d lane %q; want 200 on batch", code, h.Get("X-Relay-Lane"))
	}
	if code, _, _ := br.do(t, "POST", "/v1/messages/batches", map[string]string{"x-api-key": limitedKey, "x-relay-lane": "batch"},
		reqs(item("a", `{"model":"gpt-4o"}`))); code != 403 {
		t.Errorf("create on a lane the key may not use = %d; want 403", code)
	}

	// Over 256 MB: 413 from the declared length, before reading a body.
	conn, err := net.Dial("tcp", strings.TrimPrefix(br.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /v1/messages/batches HTTP/1.1\r\nHost: relay\r\nx-api-key: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"requests\":[", canaryKey, gateway.MaxBatchBytes+1); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("oversized batch: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("oversized batch: read body: %v", err)
	}
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
	br := newRelay(t, batchSetup(t, batchJobs(4), withBodyMemory(budget))...)
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
			code, _, body := br.doKey(t, "POST", "/v1/messages/batches", canaryKey, tc.body)
			if code != tc.code || (tc.errType != "" && errorType(body) != tc.errType) {
				t.Errorf("POST %d bytes = %d %s; want %d %s", len(tc.body), code, body, tc.code, tc.errType)
			}
			natstest.Eventually(t, waitLimit, "budget back to zero", func() bool { return br.Gateway.BodyBytesInUse() == 0 })
		})
	}
}
