package metering

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/workers/pricing"
	"github.com/relaygw/relay/workers/wire"
)

const waitLimit = 15 * time.Second

// openStore declares the usage assets on s.
func openStore(t *testing.T, js jetstream.JetStream) *Store {
	t.Helper()
	st, err := OpenStore(t.Context(), js, assets.New(js, assets.Options{}),
		StoreOptions{Retention: time.Hour, CounterRetention: 48 * time.Hour})
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return st
}

// startMeter starts a Meter on store, stopped when the test ends.
func startMeter(t *testing.T, store *Store, reg prometheus.Registerer) *Meter {
	t.Helper()
	m := New(Options{Registry: reg, Store: store, FlushInterval: 50 * time.Millisecond})
	m.SetPrices(pricing.New([]configs.Price{
		{Model: "claude-x", Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75, BatchDiscount: 0.5},
	}))
	m.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		m.Stop(ctx)
	})
	return m
}

// call is a finished call of key on model claude-x.
func call(key, model string, mode string, u wire.Usage) Call {
	return Call{Mode: mode, RequestID: "req-1", Key: key, Route: "claude", Provider: "p", Model: model, Usage: u}
}

// usage is 100 plain input, 20 cache reads, 10 cache writes, 7 output.
var usage = wire.Usage{Input: 130, CacheRead: 20, CacheWrite: 10, Output: 7, Known: true}

// consume reads every event on subject with a new durable consumer
// until none arrives for a while.
func consume(t *testing.T, js jetstream.JetStream, durable, subject string, want int) []Event {
	t.Helper()
	c, err := js.CreateOrUpdateConsumer(t.Context(), StreamName, jetstream.ConsumerConfig{
		Durable: durable, FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	var out []Event
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		batch, err := c.Fetch(10, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			var ev Event
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				t.Fatalf("event %s: %v", msg.Data(), err)
			}
			if msg.Headers().Get(nats.MsgIdHdr) != ev.ID {
				t.Errorf("Nats-Msg-Id %q; want the event id %q", msg.Headers().Get(nats.MsgIdHdr), ev.ID)
			}
			out = append(out, ev)
			_ = msg.Ack()
		}
		if n == 0 && len(out) >= want {
			break
		}
	}
	return out
}

// TestEventsExactlyOnce: every recorded call is one event on
// relay.usage.<key>, with its tokens by kind and cost, and a publish
// whose acknowledgement was lost is retried with the same Nats-Msg-Id
// and stored once: a durable consumer sees each event exactly once.
func TestEventsExactlyOnce(t *testing.T) {
	srv := natstest.Start(t)
	js := natstest.JetStream(t, srv)
	store := openStore(t, js)
	var mu sync.Mutex
	lost := 0
	real := store.publish
	store.publish = func(ctx context.Context, msg *nats.Msg) error {
		if err := real(ctx, msg); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if lost < 2 {
			lost++ // stored, but the relay never hears so: it retries
			return errors.New("test: acknowledgement lost")
		}
		return nil
	}
	reg := prometheus.NewRegistry()
	m := startMeter(t, store, reg)
	m.Record(call("team-a", "claude-x", ModeSync, usage))
	m.Record(call("team-a", "claude-x", ModeBatch, usage))
	m.Record(call("team-b", "claude-x", ModeJob, usage))
	m.Record(call("team-a", "unpriced-y", ModeSync, usage))

	evs := consume(t, js, "billing", Subject("team-a"), 3)
	if len(evs) != 3 {
		t.Fatalf("durable consumer of team-a got %d events; want 3: %+v", len(evs), evs)
	}
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.ID] || ev.Key != "team-a" {
			t.Errorf("event %+v repeated or of another key", ev)
		}
		seen[ev.ID] = true
		if ev.Tokens != (Tokens{Input: 100, Output: 7, CacheRead: 20, CacheWrite: 10}) || !ev.UsageKnown {
			t.Errorf("event tokens %+v; want disjoint kinds 100/7/20/10", ev.Tokens)
		}
	}
	full := (100*3 + 20*0.3 + 10*3.75 + 7*15) / 1e6
	byMode := map[string]Event{}
	for _, ev := range evs {
		byMode[ev.Mode+"/"+ev.Model] = ev
	}
	for k, want := range map[string]float64{"sync/claude-x": full, "batch/claude-x": full / 2, "sync/unpriced-y": 0} {
		if got := byMode[k].CostUSD; math.Abs(got-want) > 1e-12 {
			t.Errorf("%s: cost %v; want %v", k, got, want)
		}
	}
	if byMode["sync/unpriced-y"].Priced || !byMode["sync/claude-x"].Priced {
		t.Errorf("priced flags wrong: %+v", byMode)
	}
	if n := natstest.StreamMsgs(t, js, StreamName, ""); n != 4 {
		t.Errorf("RELAY_USAGE holds %d messages after 2 retried publishes; want 4", n)
	}
	if f := testutil.ToFloat64(m.metrics.pubFails); f != 2 {
		t.Errorf("publish failures = %v; want 2", f)
	}
	if d := testutil.ToFloat64(m.metrics.dropped); d != 0 {
		t.Errorf("dropped = %v; want 0", d)
	}
	if u := testutil.ToFloat64(m.metrics.unpriced.WithLabelValues("claude")); u != 1 {
		t.Errorf("unpriced = %v; want 1", u)
	}
	if v := testutil.ToFloat64(m.metrics.tokens.WithLabelValues("team-a", "claude", "p", "cache_write")); v != 30 {
		t.Errorf("relay_tokens_total cache_write of team-a = %v; want 30", v)
	}
	// A second read by the same durable consumer finds nothing new.
	if again := consume(t, js, "billing", Subject("team-a"), 0); len(again) != 0 {
		t.Errorf("durable consumer saw %d events again", len(again))
	}
}

// TestCountersAddUpAcrossMeters: two meters (two relays) sharing the
// bucket add their calls to the same entries with compare-and-set; no
// delta is lost to a conflict.
func TestCountersAddUpAcrossMeters(t *testing.T) {
	srv := natstest.Start(t)
	js := natstest.JetStream(t, srv)
	m1 := startMeter(t, openStore(t, js), prometheus.NewRegistry())
	m2 := startMeter(t, openStore(t, js), prometheus.NewRegistry())
	const n = 200
	var wg sync.WaitGroup
	for _, m := range []*Meter{m1, m2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				m.Record(call("team-a", "claude-x", ModeSync, usage))
			}
		}()
	}
	wg.Wait()
	for _, m := range []*Meter{m1, m2} {
		if err := m.Flush(t.Context()); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	ku, err := m1.KeyUsage(t.Context(), "team-a", today, today)
	if err != nil {
		t.Fatal(err)
	}
	if ku.Total.Requests != 2*n || ku.Total.CacheReadTokens != 2*n*20 || ku.Total.OutputTokens != 2*n*7 {
		t.Errorf("totals %+v; want %d requests", ku.Total, 2*n)
	}
}

// TestCountersSurviveRestart: counters flushed by a stopping relay are
// read back by the next one, after the NATS server itself restarted on
// the same store directory.
func TestCountersSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	srv, err := embeddednats.Start(t.Context(), embeddednats.Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	store := openStore(t, js)
	m := New(Options{Store: store, FlushInterval: time.Hour}) // only Stop flushes
	m.SetPrices(pricing.New([]configs.Price{{Model: "claude-x", Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75}}))
	m.Start()
	m.Record(call("team-a", "claude-x", ModeSync, usage))
	m.Record(call("team-a", "claude-x", ModeJob, usage))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	m.Stop(ctx)
	nc.Close()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	srv2 := natstest.StartWith(t, embeddednats.Options{StoreDir: dir})
	m2 := startMeter(t, openStore(t, natstest.JetStream(t, srv2)), prometheus.NewRegistry())
	today := time.Now().UTC().Truncate(24 * time.Hour)
	ku, err := m2.KeyUsage(t.Context(), "team-a", today, today)
	if err != nil {
		t.Fatal(err)
	}
	if len(ku.Days) != 1 || len(ku.Days[0].Models) != 1 || ku.Total.Requests != 2 || ku.Total.InputTokens != 200 {
		t.Fatalf("after restart: %+v", ku)
	}
	if got, want := ku.Days[0].Models[0].CostUSD, 2*(100*3+20*0.3+10*3.75+7*15)/1e6; math.Abs(got-want) > 1e-12 {
		t.Errorf("cost %v; want %v", got, want)
	}
}

// TestReport: the admin report lists every key's days and models in the
// range, and nothing outside it.
func TestReport(t *testing.T) {
	srv := natstest.Start(t)
	js := natstest.JetStream(t, srv)
	m := startMeter(t, openStore(t, js), prometheus.NewRegistry())
	day := func(s string) time.Time { d, _ := time.Parse(dayFormat, s); return d }
	at := func(c Call, d string) Call { c.Time = day(d).Add(5 * time.Hour); return c }
	m.Record(at(call("team-a", "claude-x", ModeSync, usage), "2026-11-30"))
	m.Record(at(call("team-a", "claude-x", ModeSync, usage), "2026-12-01"))
	m.Record(at(call("team-a", "gpt-y", ModeSync, usage), "2026-12-01"))
	m.Record(at(call("team-b", "claude-x", ModeSync, usage), "2026-12-02"))
	if err := m.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep, err := m.Usage(t.Context(), day("2026-12-01"), day("2026-12-31"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Keys) != 2 || rep.Keys[0].Key != "team-a" || rep.Keys[1].Key != "team-b" || rep.Total.Requests != 3 {
		t.Fatalf("report %+v", rep)
	}
	a := rep.Keys[0]
	if len(a.Days) != 1 || a.Days[0].Date != "2026-12-01" || len(a.Days[0].Models) != 2 ||
		a.Days[0].Models[0].Model != "claude-x" || a.Days[0].Models[1].Model != "gpt-y" {
		t.Errorf("team-a: %+v", a)
	}
	empty, err := m.Usage(t.Context(), day("2025-01-01"), day("2025-01-31"))
	if err != nil || len(empty.Keys) != 0 || empty.Total.Requests != 0 {
		t.Errorf("a range without usage: %+v, %v; want no keys", empty, err)
	}
	ku, err := m.KeyUsage(t.Context(), "team-a", day("2026-11-01"), day("2026-12-31"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ku.Days) != 2 || ku.Total.Requests != 3 {
		t.Errorf("KeyUsage: %+v", ku)
	}
}

func TestParseRange(t *testing.T) {
	now := time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)
	tests := []struct {
		query, from, to, err string
	}{
		{"", "2026-12-01", "2026-12-02", ""},
		{"from=2026-11-15", "2026-11-15", "2026-12-02", ""},
		{"to=2026-10-31", "2026-10-01", "2026-10-31", ""},
		{"from=2026-12-02&to=2026-12-02", "2026-12-02", "2026-12-02", ""},
		{"from=yesterday", "", "", `from: "yesterday" is not a date`},
		{"from=2026-12-03", "", "", "is after to"},
		{"from=2024-01-01", "", "", "more than 366 days"},
	}
	for _, tc := range tests {
		q, _ := url.ParseQuery(tc.query)
		from, to, err := ParseRange(q, now)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v; want %q", tc.query, err, tc.err)
			}
			continue
		}
		if err != nil || from.Format(dayFormat) != tc.from || to.Format(dayFormat) != tc.to {
			t.Errorf("%q: %s..%s, %v; want %s..%s", tc.query, from.Format(dayFormat), to.Format(dayFormat), err, tc.from, tc.to)
		}
	}
}

// TestQueueFullDrops: past the queue's bound, events are dropped and
// counted, never blocking the caller; metrics still count the call.
func TestQueueFullDrops(t *testing.T) {
	srv := natstest.Start(t)
	store := openStore(t, natstest.JetStream(t, srv))
	m := New(Options{Store: store, QueueSize: 2}) // not started: nothing drains the queue
	for range 5 {
		m.Record(call("team-a", "claude-x", ModeSync, usage))
	}
	if d := testutil.ToFloat64(m.metrics.dropped); d != 3 {
		t.Errorf("dropped = %v; want 3", d)
	}
	if v := testutil.ToFloat64(m.metrics.tokens.WithLabelValues("team-a", "claude", "p", "output")); v != 35 {
		t.Errorf("output tokens = %v; want 35", v)
	}
}
