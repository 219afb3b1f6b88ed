package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
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
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/workerstest"
)

// End-to-end tests of the priority lanes: real HTTP, a real lanes.Set on
// a real embedded NATS server, simulated upstreams behind providers whose
// actors allow one call at a time.

// laneRelay is a gateway with lanes in front of two simulated upstreams,
// each behind a provider with one concurrency slot.
type laneRelay struct {
	URL       string
	Anthropic *simupstream.Server // route claude-sonnet, provider anthropic-a
	OpenAI    *simupstream.Server // route gpt-4o, provider openai-b
	Lanes     *lanes.Set
	JS        jetstream.JetStream
	Registry  *prometheus.Registry
	ActorA    *actor.Actor // anthropic-a's actor
}

type laneRelayOptions struct {
	latency          time.Duration // upstream latency
	interactiveDepth int           // max_depth of interactive (0: 1000)
	// frontDoor serves the gateway with its own http.Server (HTTP/1.1 and
	// h2c) instead of httptest's (HTTP/1.1 only).
	frontDoor bool
}

// The key that may only use the batch lane.
const batchOnlyKey = "relay-batch-only-key-31d7"

func newLaneRelay(t *testing.T, o laneRelayOptions) *laneRelay {
	t.Helper()
	if o.interactiveDepth == 0 {
		o.interactiveDepth = 1000
	}
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns)
	reg := prometheus.NewRegistry()
	specs := []lanes.Spec{
		{Name: "interactive", MaxDepth: o.interactiveDepth, MaxWait: 30 * time.Second},
		{Name: "batch", MaxDepth: 1000, MaxWait: time.Hour, MinShare: 0.1},
	}
	set, err := lanes.Open(t.Context(), lanes.Options{Lanes: specs, JetStream: js, Registry: reg})
	if err != nil {
		t.Fatalf("lanes.Open: %v", err)
	}
	t.Cleanup(func() { _ = set.Close() })

	simA := simupstream.New(simupstream.Options{Latency: o.latency, Record: 64})
	simO := simupstream.New(simupstream.Options{Latency: o.latency, Record: 64})
	upA := httptest.NewServer(simA.Handler())
	upO := httptest.NewServer(simO.Handler())
	t.Cleanup(func() {
		_ = simA.Close()
		_ = simO.Close()
		upA.Close()
		upO.Close()
	})
	provA := mustProvider(t, workers.ProviderOptions{Name: "anthropic-a", Format: workers.FormatAnthropic,
		BaseURL: upA.URL, APIKey: providerKeyA, Timeout: 20 * time.Second})
	provO := mustProvider(t, workers.ProviderOptions{Name: "openai-b", Format: workers.FormatOpenAI,
		BaseURL: upO.URL + "/v1", APIKey: providerKeyOA, Timeout: 20 * time.Second})
	actA := workerstest.Actor(actor.Options{Name: "anthropic-a", MaxConcurrency: 1})
	router, err := workerstest.Router(workers.RouterOptions{
		Routes: []workers.RouteSpec{
			{Model: "claude-sonnet", Targets: []workers.Target{{Provider: provA, ProviderName: "anthropic-a",
				Format: workers.FormatAnthropic, Model: "claude-sonnet-4-5", Weight: 1, Timeout: 20 * time.Second,
				Actor: actA}}},
			{Model: "gpt-4o", Targets: []workers.Target{{Provider: provO, ProviderName: "openai-b",
				Format: workers.FormatOpenAI, Model: "gpt-4o-2024", Weight: 1, Timeout: 20 * time.Second,
				Actor: workerstest.Actor(actor.Options{Name: "openai-b", MaxConcurrency: 1})}}},
		},
		Metrics:   workers.NewMetrics(reg),
		OnRelease: set.Kick,
	})
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	cfg := gateway.Config{
		Dispatcher: router,
		Lanes:      []gateway.Lane{{Name: "interactive", MaxWait: 30 * time.Second}, {Name: "batch", MaxWait: time.Hour}},
		Keys: []gateway.Key{
			{Name: "team-a", SHA256: sha256.Sum256([]byte(canaryKey)), DefaultLane: "interactive",
				Lanes: []string{"interactive", "batch"}, Routes: []string{"*"}},
			{Name: "nightly", SHA256: sha256.Sum256([]byte(batchOnlyKey)), DefaultLane: "batch",
				Lanes: []string{"batch"}, Routes: []string{"*"}},
		},
	}
	gw := gateway.New(cfg, gateway.Options{}, gateway.Deps{Registry: reg, Lanes: set})
	r := &laneRelay{Anthropic: simA, OpenAI: simO, Lanes: set, JS: js, Registry: reg, ActorA: actA}
	if o.frontDoor {
		r.URL = serveFrontDoor(t, gw)
	} else {
		srv := httptest.NewServer(gw.Handler())
		t.Cleanup(srv.Close)
		r.URL = srv.URL
	}
	return r
}

const (
	claudeBody = `{"model":"claude-sonnet","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
	gptBody    = `{"model":"gpt-4o","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
)

// laneReply is one answer, with the time it completed.
type laneReply struct {
	name   string
	status int
	header http.Header
	body   []byte
	err    error
	done   time.Time
}

// post sends a request to the relay; it may run in any goroutine.
func (r *laneRelay) post(ctx context.Context, name, path string, hdr map[string]string, body string) laneReply {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+path, strings.NewReader(body))
	if err != nil {
		return laneReply{name: name, err: err}
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return laneReply{name: name, err: err, done: time.Now()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return laneReply{name: name, status: resp.StatusCode, header: resp.Header, body: b, err: err, done: time.Now()}
}

// postAsync sends a request in a goroutine; its reply arrives on the
// channel returned.
func (r *laneRelay) postAsync(ctx context.Context, name, path string, hdr map[string]string, body string) <-chan laneReply {
	ch := make(chan laneReply, 1)
	go func() { ch <- r.post(ctx, name, path, hdr, body) }()
	return ch
}

// withLane returns h with x-relay-lane: lane and the extra header pairs kv.
func withLane(h map[string]string, lane string, kv ...string) map[string]string {
	out := map[string]string{"x-relay-lane": lane}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// occupy takes the only slot of the upstream sim with one request that
// takes hold, and waits until it is being served upstream.
func (r *laneRelay) occupy(t *testing.T, sim *simupstream.Server, path, body string, hdr map[string]string, hold time.Duration) <-chan laneReply {
	t.Helper()
	before := sim.Stats().Requests
	ch := r.postAsync(context.Background(), "occupant", path, withLane(hdr, "interactive", "x-sim-latency", hold.String()), body)
	pollFor(t, "occupying request upstream", func() bool { return sim.Stats().Requests > before })
	return ch
}

// pollFor waits, for at most 15 s, until cond holds.
func pollFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func recvReply(t *testing.T, ch <-chan laneReply) laneReply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no reply within 30s")
	}
	return laneReply{}
}

// metric returns the value of the series named exactly (name and labels
// as exposed), or -1 when absent.
func (r *laneRelay) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(r.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// errorType returns the error type (Anthropic) or code (OpenAI) of body.
func errorType(body []byte) string {
	var e struct {
		Error struct {
			Type string `json:"type"`
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	if e.Error.Code != "" {
		return e.Error.Code
	}
	return e.Error.Type
}

// TestLanePriorityOrder: one slot, 300 ms upstream; 6 batch requests,
// then, once 5 of them are parked, 3 interactive ones: the interactive
// ones are served before the parked batch ones.
func TestLanePriorityOrder(t *testing.T) {
	r := newLaneRelay(t, laneRelayOptions{latency: 300 * time.Millisecond})
	hdr := anthropicHeaders(canaryKey)
	var (
		mu    sync.Mutex
		order []string
		wg    sync.WaitGroup
		bad   []laneReply
	)
	send := func(name, lane string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep := r.post(context.Background(), name, "/v1/messages", withLane(hdr, lane), claudeBody)
			mu.Lock()
			defer mu.Unlock()
			order = append(order, name)
			if rep.err != nil || rep.status != http.StatusOK || rep.header.Get("X-Relay-Lane") != lane {
				bad = append(bad, rep)
			}
		}()
	}
	send("b0", "batch")
	pollFor(t, "b0 upstream", func() bool { return r.Anthropic.Stats().Requests == 1 })
	for i := 1; i < 6; i++ {
		send(fmt.Sprintf("b%d", i), "batch")
	}
	pollFor(t, "5 batch parked", func() bool { return r.Lanes.Depth("batch") == 5 })
	if got := r.metric(t, `relay_lane_depth{lane="batch"}`); got != 5 {
		t.Errorf(`relay_lane_depth{lane="batch"} = %v while 5 are parked`, got)
	}
	pollFor(t, "5 batch mirrored", func() bool { return laneStreamMsgs(t, r.JS) == 5 })
	for i := range 3 {
		send(fmt.Sprintf("i%d", i), "interactive")
	}
	pollFor(t, "3 interactive parked", func() bool { return r.Lanes.Depth("interactive") == 3 })
	if r.Anthropic.Stats().Requests != 1 {
		t.Fatalf("b0 finished before the interactive requests were parked: raise the upstream latency")
	}
	wg.Wait()
	for _, rep := range bad {
		t.Errorf("%s: status %d err %v lane %q body %s", rep.name, rep.status, rep.err, rep.header.Get("X-Relay-Lane"), rep.body)
	}
	t.Logf("completion order: %v", order)
	if len(order) != 9 || order[0] != "b0" {
		t.Fatalf("completion order %v, want b0 first", order)
	}
	for _, name := range order[1:4] {
		if name[0] != 'i' {
			t.Errorf("completion order %v: want the 3 interactive requests right after b0", order)
			break
		}
	}
	if got := r.Anthropic.Stats().MaxInFlight; got != 1 {
		t.Errorf("upstream saw %d calls at once, want 1", got)
	}
	if got := r.metric(t, `relay_lane_dispatched_total{lane="batch"}`); got != 5 {
		t.Errorf(`relay_lane_dispatched_total{lane="batch"} = %v, want 5`, got)
	}
	if got := r.metric(t, `relay_lane_dispatched_total{lane="interactive"}`); got != 3 {
		t.Errorf(`relay_lane_dispatched_total{lane="interactive"} = %v, want 3`, got)
	}
	if got := r.metric(t, `relay_lane_wait_seconds_count{lane="batch"}`); got != 5 {
		t.Errorf(`relay_lane_wait_seconds_count{lane="batch"} = %v, want 5`, got)
	}
	// b5 waited for b0..b4 and the interactive ones: well over a second.
	if got := r.metric(t, `relay_lane_wait_seconds_sum{lane="batch"}`); got < 1 {
		t.Errorf(`relay_lane_wait_seconds_sum{lane="batch"} = %v, want the batch waits`, got)
	}
	if got := r.metric(t, `relay_lane_depth{lane="batch"}`); got != 0 {
		t.Errorf(`relay_lane_depth{lane="batch"} = %v after the run`, got)
	}
	pollFor(t, "mirror empty", func() bool { return laneStreamMsgs(t, r.JS) == 0 })
}

func laneStreamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), lanes.StreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", lanes.StreamName, err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestLaneFullAnswers429(t *testing.T) {
	r := newLaneRelay(t, laneRelayOptions{latency: time.Millisecond, interactiveDepth: 2})
	a, o := anthropicHeaders(canaryKey), openaiHeaders(canaryKey)
	occA := r.occupy(t, r.Anthropic, "/v1/messages", claudeBody, a, time.Second)
	occO := r.occupy(t, r.OpenAI, "/v1/chat/completions", gptBody, o, time.Second)
	p1 := r.postAsync(context.Background(), "p1", "/v1/messages", withLane(a, "interactive"), claudeBody)
	p2 := r.postAsync(context.Background(), "p2", "/v1/messages", withLane(a, "interactive"), claudeBody)
	pollFor(t, "2 parked", func() bool { return r.Lanes.Depth("interactive") == 2 })
	for _, c := range []struct {
		name, path, body string
		hdr              map[string]string
		typ              string
	}{
		{"anthropic", "/v1/messages", claudeBody, a, "rate_limit_error"},
		{"openai", "/v1/chat/completions", gptBody, o, "rate_limit_exceeded"},
	} {
		rep := r.post(context.Background(), c.name, c.path, withLane(c.hdr, "interactive"), c.body)
		if rep.status != http.StatusTooManyRequests || errorType(rep.body) != c.typ {
			t.Errorf("%s on a full lane: %d %s, want 429 %s", c.name, rep.status, rep.body, c.typ)
		}
		ra, err := strconv.Atoi(rep.header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 30 {
			t.Errorf("%s: retry-after %q, want 1..30 s", c.name, rep.header.Get("Retry-After"))
		}
		if rep.header.Get("X-Should-Retry") == "false" {
			t.Errorf("%s: x-should-retry false on a full lane", c.name)
		}
	}
	if got := r.metric(t, `relay_lane_rejected_total{lane="interactive",reason="full"}`); got != 2 {
		t.Errorf(`relay_lane_rejected_total{reason="full"} = %v, want 2`, got)
	}
	for _, ch := range []<-chan laneReply{occA, occO, p1, p2} {
		if rep := recvReply(t, ch); rep.status != http.StatusOK {
			t.Errorf("%s: %d %s", rep.name, rep.status, rep.body)
		}
	}
}

func TestLaneWaitExpired(t *testing.T) {
	r := newLaneRelay(t, laneRelayOptions{latency: time.Millisecond})
	a, o := anthropicHeaders(canaryKey), openaiHeaders(canaryKey)
	occA := r.occupy(t, r.Anthropic, "/v1/messages", claudeBody, a, time.Second)
	occO := r.occupy(t, r.OpenAI, "/v1/chat/completions", gptBody, o, time.Second)
	for _, c := range []struct {
		name, path, body string
		hdr              map[string]string
		status           int
		typ              string
		sim              *simupstream.Server
	}{
		{"anthropic", "/v1/messages", claudeBody, a, 529, "overloaded_error", r.Anthropic},
		{"openai", "/v1/chat/completions", gptBody, o, 503, "service_unavailable", r.OpenAI},
	} {
		start := time.Now()
		rep := r.post(context.Background(), c.name, c.path, withLane(c.hdr, "interactive", "x-relay-max-wait", "200ms"), c.body)
		took := time.Since(start)
		if rep.status != c.status || errorType(rep.body) != c.typ {
			t.Errorf("%s past x-relay-max-wait: %d %s, want %d %s", c.name, rep.status, rep.body, c.status, c.typ)
		}
		if ra, err := strconv.Atoi(rep.header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("%s: retry-after %q", c.name, rep.header.Get("Retry-After"))
		}
		if got := rep.header.Get("X-Should-Retry"); got != "false" {
			t.Errorf("%s: x-should-retry %q, want false", c.name, got)
		}
		if took < 200*time.Millisecond {
			t.Errorf("%s: answered after %v, before the 200ms wait", c.name, took)
		}
		if n := c.sim.Stats().Requests; n != 1 {
			t.Errorf("%s: upstream saw %d requests, want only the occupant", c.name, n)
		}
	}
	if got := r.metric(t, `relay_lane_rejected_total{lane="interactive",reason="expired"}`); got != 2 {
		t.Errorf(`relay_lane_rejected_total{reason="expired"} = %v, want 2`, got)
	}
	recvReply(t, occA)
	recvReply(t, occO)
}

func TestLaneDisconnectWhileParked(t *testing.T) {
	r := newLaneRelay(t, laneRelayOptions{latency: time.Millisecond})
	a := anthropicHeaders(canaryKey)
	occ := r.occupy(t, r.Anthropic, "/v1/messages", claudeBody, a, 500*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	gone := r.postAsync(ctx, "gone", "/v1/messages", withLane(a, "batch"), claudeBody)
	pollFor(t, "parked", func() bool { return r.Lanes.Depth("batch") == 1 })
	cancel()
	if rep := recvReply(t, gone); !errors.Is(rep.err, context.Canceled) {
		t.Errorf("canceled request: %v %d", rep.err, rep.status)
	}
	pollFor(t, "removed from the lane", func() bool { return r.Lanes.Depth("batch") == 0 })
	pollFor(t, `relay_lane_rejected_total{reason="canceled"}`, func() bool {
		return r.metric(t, `relay_lane_rejected_total{lane="batch",reason="canceled"}`) == 1
	})
	if rep := recvReply(t, occ); rep.status != http.StatusOK {
		t.Fatalf("occupant: %d", rep.status)
	}
	// The slot is free again: the next request is the only one sent after
	// the occupant; the one that left never was.
	if rep := r.post(context.Background(), "next", "/v1/messages", a, claudeBody); rep.status != http.StatusOK {
		t.Fatalf("next: %d %s", rep.status, rep.body)
	}
	if n := r.Anthropic.Stats().Requests; n != 2 {
		t.Errorf("upstream saw %d requests, want 2 (the canceled one never sent)", n)
	}
}

func TestLaneNotAllowedForKey(t *testing.T) {
	r := newLaneRelay(t, laneRelayOptions{latency: time.Millisecond})
	for _, c := range []struct {
		name, path, body string
		hdr              map[string]string
		typ              string
	}{
		{"anthropic", "/v1/messages", claudeBody, anthropicHeaders(batchOnlyKey), "permission_error"},
		{"openai", "/v1/chat/completions", gptBody, openaiHeaders(batchOnlyKey), "permission_denied"},
	} {
		rep := r.post(context.Background(), c.name, c.path, withLane(c.hdr, "interactive"), c.body)
		if rep.status != http.StatusForbidden || errorType(rep.body) != c.typ {
			t.Errorf("%s: lane not allowed: %d %s, want 403 %s", c.name, rep.status, rep.body, c.typ)
		}
		// Its own lane is fine, and direct: queue-ms 0.
		rep = r.post(context.Background(), c.name, c.path, c.hdr, c.body)
		if rep.status != http.StatusOK || rep.header.Get("X-Relay-Lane") != "batch" || rep.header.Get("X-Relay-Queue-Ms") != "0" {
			t.Errorf("%s: default lane: %d lane %q queue-ms %q", c.name, rep.status,
				rep.header.Get("X-Relay-Lane"), rep.header.Get("X-Relay-Queue-Ms"))
		}
	}
	if n := r.Anthropic.Stats().Requests + r.OpenAI.Stats().Requests; n != 2 {
		t.Errorf("upstreams saw %d requests, want 2", n)
	}
}

// TestLaneStreamAfterParking: a streaming request that waited on a lane
// streams every event, as a direct one does.
func TestLaneStreamAfterParking(t *testing.T) {
	r := newLaneRelay(t, laneRelayOptions{latency: 50 * time.Millisecond})
	occ := r.occupy(t, r.Anthropic, "/v1/messages", claudeBody, anthropicHeaders(canaryKey), 300*time.Millisecond)
	c := anthropic.NewClient(aoption.WithBaseURL(r.URL), aoption.WithAPIKey(canaryKey), aoption.WithMaxRetries(0),
		aoption.WithHeader("x-relay-lane", "batch"))
	var resp *http.Response
	stream := c.Messages.NewStreaming(t.Context(), anthropic.MessageNewParams{
		Model: "claude-sonnet", MaxTokens: 16,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello there"))},
	}, aoption.WithResponseInto(&resp))
	defer stream.Close()
	var msg anthropic.Message
	var events []string
	for stream.Next() {
		ev := stream.Current()
		events = append(events, ev.Type)
		if err := msg.Accumulate(ev); err != nil {
			t.Fatalf("Accumulate: %v", err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if resp == nil {
		t.Fatal("no response captured")
	}
	qms, err := strconv.Atoi(resp.Header.Get("X-Relay-Queue-Ms"))
	if err != nil || qms <= 0 {
		t.Errorf("x-relay-queue-ms %q, want > 0 after parking", resp.Header.Get("X-Relay-Queue-Ms"))
	}
	if got := resp.Header.Get("X-Relay-Lane"); got != "batch" {
		t.Errorf("x-relay-lane %q", got)
	}
	if events[0] != "message_start" || events[len(events)-1] != "message_stop" || len(events) < 6 {
		t.Errorf("events %v, want message_start .. message_stop", events)
	}
	if len(msg.Content) != 1 || !strings.HasPrefix(msg.Content[0].Text, "tok0") || msg.Usage.OutputTokens == 0 ||
		msg.StopReason == "" {
		t.Errorf("accumulated %+v", msg)
	}
	if got := strings.Count(msg.Content[0].Text, "tok"); int64(got) != msg.Usage.OutputTokens {
		t.Errorf("text %q has %d tokens, usage says %d", msg.Content[0].Text, got, msg.Usage.OutputTokens)
	}
	if rep := recvReply(t, occ); rep.status != http.StatusOK {
		t.Errorf("occupant: %d", rep.status)
	}
}

// TestLaneTenThroughOneSlot: 10 requests at once through one 100 ms slot
// are all served, none refused.
func TestLaneTenThroughOneSlot(t *testing.T) {
	r := newLaneRelay(t, laneRelayOptions{latency: 100 * time.Millisecond})
	a := anthropicHeaders(canaryKey)
	start := time.Now()
	var chans []<-chan laneReply
	for i := range 10 {
		chans = append(chans, r.postAsync(context.Background(), fmt.Sprintf("r%d", i), "/v1/messages", a, claudeBody))
	}
	var queued int
	for _, ch := range chans {
		rep := recvReply(t, ch)
		if rep.status != http.StatusOK {
			t.Errorf("%s: %d %s", rep.name, rep.status, rep.body)
		}
		if rep.header.Get("X-Relay-Queue-Ms") != "0" {
			queued++
		}
	}
	wall := time.Since(start)
	t.Logf("10 requests through one 100ms slot: %v wall, %d parked", wall, queued)
	if queued == 0 {
		t.Error("no request was parked")
	}
	if n := r.Anthropic.Stats(); n.Requests != 10 || n.MaxInFlight != 1 {
		t.Errorf("upstream: %d requests, %d at once; want 10, 1", n.Requests, n.MaxInFlight)
	}
	if wall > 10*time.Second {
		t.Errorf("took %v", wall)
	}
}

// TestLaneReparksAfterUpstream429 checks that a request whose upstream
// answered 429 goes back to its lane (held by the cool-down the 429
// started) and is served once the upstream has room, instead of failing.
func TestLaneReparksAfterUpstream429(t *testing.T) {
	r := newLaneRelay(t, laneRelayOptions{})
	r.Anthropic.SetFault(simupstream.Fault429) // retry-after: 1
	done := r.postAsync(t.Context(), "a", "/v1/messages", anthropicHeaders(canaryKey), body("claude-sonnet", ""))
	pollFor(t, "the first 429", func() bool { return r.Anthropic.Stats().RateLimited > 0 })
	r.Anthropic.SetFault(simupstream.FaultNone)
	rep := recvReply(t, done)
	if rep.status != 200 {
		t.Fatalf("status = %d (%s); want 200 after going back to the lane", rep.status, rep.body)
	}
	if got := r.Anthropic.Stats().RateLimited; got != 1 {
		t.Errorf("upstream sent %d 429s; want 1 (the cool-down holds the request)", got)
	}
	if q := rep.header.Get("X-Relay-Queue-Ms"); q == "" || q == "0" {
		t.Errorf("x-relay-queue-ms = %q; want the time spent back on the lane", q)
	}
}
