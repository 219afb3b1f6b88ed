package jobs_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/callbacks"
)

func TestIDs(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 890e6, time.UTC)
	seen := map[string]bool{}
	prev := ""
	for i := range 1000 {
		id := jobs.NewID(now.Add(time.Duration(i) * time.Millisecond))
		if !jobs.ValidID(id) || len(id) != 30 {
			t.Fatalf("NewID = %q; not a valid id", id)
		}
		if seen[id] || id <= prev {
			t.Fatalf("NewID = %q after %q; want unique and increasing", id, prev)
		}
		seen[id], prev = true, id
		got, err := jobs.TimeOf(id)
		if want := now.Add(time.Duration(i) * time.Millisecond); err != nil || !got.Equal(want) {
			t.Fatalf("TimeOf(%q) = %v, %v; want %v", id, got, err, want)
		}
	}
	// Ids of one millisecond sort in the order they were made, from any
	// number of goroutines, and keep their time.
	const workers, each = 8, 500
	ids := make(chan string, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				ids <- jobs.NewID(now)
			}
		})
	}
	wg.Wait()
	close(ids)
	clear(seen)
	for id := range ids {
		if seen[id] {
			t.Fatalf("NewID made %q twice in one millisecond", id)
		}
		seen[id] = true
		if got, err := jobs.TimeOf(id); err != nil || !got.Equal(now) {
			t.Fatalf("TimeOf(%q) = %v, %v; want %v", id, got, err, now)
		}
	}
	prev = jobs.NewID(now)
	for range 1000 {
		id := jobs.NewID(now)
		if id <= prev {
			t.Fatalf("NewID = %q after %q in the same millisecond; want increasing", id, prev)
		}
		prev = id
	}
	for _, bad := range []string{"", "job_", "job_8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "job_0000000000000000000000000I", "msg_00000000000000000000000000"} {
		if jobs.ValidID(bad) {
			t.Errorf("ValidID(%q) = true; want false", bad)
		}
	}
}

func TestSubmitRunSucceeds(t *testing.T) {
	st := newStore(t)
	g := newGate()
	s := open(t, st.js, g, jobs.Options{})
	j, created, err := s.Submit(t.Context(), sub("team-a"))
	if err != nil || !created || j.Status != jobs.StatusQueued {
		t.Fatalf("Submit = %+v, %v, %v; want a new queued job", j, created, err)
	}
	if got, _ := s.Get(t.Context(), "team-a", j.ID); got.Status != jobs.StatusQueued {
		t.Fatalf("Get before Run: status %q; want queued", got.Status)
	}
	run(t, s)
	if id := <-g.started; id != j.ID {
		t.Fatalf("runner got %s; want %s", id, j.ID)
	}
	waitJob(t, s, "team-a", j.ID, status(jobs.StatusRunning))
	g.release <- jobs.Outcome{StatusCode: 200, Body: []byte(`{"ok":true}`), Provider: "p1"}
	got := waitJob(t, s, "team-a", j.ID, status(jobs.StatusSucceeded))
	if got.Attempts != 1 || got.Result == nil || string(got.Result.Body) != `{"ok":true}` || got.Result.Provider != "p1" ||
		got.FinishedAt == nil || got.ExpiresAt == nil {
		t.Fatalf("finished job = %+v; want attempts 1 and the result", got)
	}
	// The result is on RELAY_RESULTS, once.
	info, err := st.js.Stream(t.Context(), jobs.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	// The record turns succeeded first; the result is published after it.
	var msg *jetstream.RawStreamMsg
	natstest.Eventually(t, 10*time.Second, "result message", func() bool {
		msg, err = info.GetLastMsgForSubject(t.Context(), jobs.ResultSubject("team-a", j.ID))
		return err == nil
	})
	if msg.Header.Get("Relay-Status") != "succeeded" || msg.Header.Get(jetstream.MsgIDHeader) != j.ID {
		t.Errorf("result headers = %v", msg.Header)
	}
}

func TestValidation(t *testing.T) {
	st := newStore(t)
	s := open(t, st.js, okRunner, jobs.Options{})
	for name, mod := range map[string]func(*jobs.Submission){
		"endpoint":  func(s *jobs.Submission) { s.Endpoint = "/v1/embeddings" },
		"body":      func(s *jobs.Submission) { s.Body = []byte(`[1]`) },
		"no model":  func(s *jobs.Submission) { s.Model = "" },
		"metadata":  func(s *jobs.Submission) { s.Metadata = []byte(`"x"`) },
		"no lane":   func(s *jobs.Submission) { s.Lane = "" },
		"long idem": func(s *jobs.Submission) { s.IdempotencyKey = strings.Repeat("k", 256) },
	} {
		t.Run(name, func(t *testing.T) {
			x := sub("k")
			mod(&x)
			if _, _, err := s.Submit(t.Context(), x); !errors.Is(err, jobs.ErrInvalid) {
				t.Fatalf("Submit = %v; want ErrInvalid", err)
			}
		})
	}
}

func TestIdempotencyKey(t *testing.T) {
	st := newStore(t)
	var calls atomic.Int32
	s := start(t, st.js, jobs.RunnerFunc(func(ctx context.Context, j jobs.Job, b []byte) jobs.Outcome {
		calls.Add(1)
		return okRunner(ctx, j, b)
	}), jobs.Options{})
	x := sub("team-a")
	x.IdempotencyKey = "order-42"
	j1, c1, err := s.Submit(t.Context(), x)
	if err != nil || !c1 {
		t.Fatalf("Submit = %v, %v", c1, err)
	}
	j2, c2, err := s.Submit(t.Context(), x)
	if err != nil || c2 || j2.ID != j1.ID {
		t.Fatalf("second Submit = %s, created %v, %v; want %s, false", j2.ID, c2, err, j1.ID)
	}
	// The same Idempotency-Key with another request is refused, whatever
	// part of it differs, and creates nothing.
	for name, change := range map[string]func(s *jobs.Submission){
		"body":     func(s *jobs.Submission) { s.Body = []byte(`{"model":"m","max_tokens":2}`) },
		"lane":     func(s *jobs.Submission) { s.Lane = "interactive" },
		"metadata": func(s *jobs.Submission) { s.Metadata = []byte(`{"order":43}`) },
		"endpoint": func(s *jobs.Submission) { s.Endpoint = jobs.EndpointChatCompletions },
	} {
		other := x
		change(&other)
		if j, c, err := s.Submit(t.Context(), other); !errors.Is(err, jobs.ErrIdempotencyMismatch) || c ||
			!strings.Contains(err.Error(), `"order-42"`) {
			t.Errorf("Submit with another %s = %s, %v, %v; want ErrIdempotencyMismatch naming the key", name, j.ID, c, err)
		}
	}
	// Another key with the same Idempotency-Key gets its own job.
	y := x
	y.Key = "team-b"
	j3, c3, err := s.Submit(t.Context(), y)
	if err != nil || !c3 || j3.ID == j1.ID {
		t.Fatalf("other key's Submit = %s, %v, %v; want a new job", j3.ID, c3, err)
	}
	waitJob(t, s.Service, "team-a", j1.ID, status(jobs.StatusSucceeded))
	waitJob(t, s.Service, "team-b", j3.ID, status(jobs.StatusSucceeded))
	if j4, c4, err := s.Submit(t.Context(), x); err != nil || c4 || j4.ID != j1.ID || j4.Status != jobs.StatusSucceeded {
		t.Fatalf("Submit after the end = %s %s, %v, %v; want the finished job", j4.ID, j4.Status, c4, err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("runner calls = %d; want 2", n)
	}
}

func TestCancel(t *testing.T) {
	st := newStore(t)
	g := newGate()
	rcv := newReceiver(t, 200)
	s := start(t, st.js, g, jobs.Options{Workers: 1})
	first := mustSubmit(t, s, sub("team-a"))
	<-g.started // the only worker is busy with first
	x := sub("team-a")
	x.CallbackURL = rcv.URL + "/hook"
	second := mustSubmit(t, s, x)

	if _, err := s.Cancel(t.Context(), "team-b", second.ID); !isNotFound(err) {
		t.Errorf("Cancel by another key = %v; want ErrNotFound", err)
	}
	if _, err := s.Cancel(t.Context(), "team-a", first.ID); !errors.Is(err, jobs.ErrNotCancelable) {
		t.Errorf("Cancel(running) = %v; want ErrNotCancelable", err)
	}
	j, err := s.Cancel(t.Context(), "team-a", second.ID)
	if err != nil || j.Status != jobs.StatusCanceled {
		t.Fatalf("Cancel(queued) = %+v, %v; want canceled", j, err)
	}
	if _, err := s.Cancel(t.Context(), "team-a", second.ID); !errors.Is(err, jobs.ErrNotCancelable) {
		t.Errorf("Cancel(canceled) = %v; want ErrNotCancelable", err)
	}
	g.release <- jobs.Outcome{StatusCode: 200, Body: []byte(`{}`)}
	waitJob(t, s.Service, "team-a", first.ID, status(jobs.StatusSucceeded))
	// The canceled job is acknowledged without running, and its callback
	// is delivered once.
	got := waitJob(t, s.Service, "team-a", second.ID, func(j jobs.Job) bool {
		return j.Callback != nil && j.Callback.Outcome == "delivered"
	})
	if got.Status != jobs.StatusCanceled || got.Attempts != 0 || g.count(second.ID) != 0 {
		t.Fatalf("canceled job = %+v, runs %d; want canceled, never run", got, g.count(second.ID))
	}
	waitEmpty(t, st.js, jobs.JobsStream)
	if d := rcv.deliveries(); len(d) != 1 || d[0].id != second.ID || !strings.Contains(string(d[0].body), `"status":"canceled"`) {
		t.Fatalf("deliveries = %+v; want one for the canceled job", d)
	}
}

// waitEmpty waits until a WorkQueue stream holds no message.
func waitEmpty(t *testing.T, js jetstream.JetStream, stream string) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, "stream "+stream+" empty", func() bool {
		return natstest.StreamMsgs(t, js, stream, "") == 0
	})
}

func TestGetOtherKeyAndExpiry(t *testing.T) {
	st := newStore(t)
	var now atomic.Pointer[time.Time]
	t0 := time.Now()
	now.Store(&t0)
	clock := func() time.Time { return *now.Load() }
	s := start(t, st.js, okRunner, jobs.Options{ResultTTL: time.Hour, Now: clock})
	j, _, err := s.Submit(t.Context(), sub("team-a"))
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, s.Service, "team-a", j.ID, status(jobs.StatusSucceeded))
	if _, err := s.Get(t.Context(), "team-b", j.ID); !isNotFound(err) {
		t.Errorf("Get by another key = %v; want ErrNotFound", err)
	}
	if _, err := s.Get(t.Context(), "team-a", jobs.NewID(t0)); !isNotFound(err) {
		t.Errorf("Get(unknown recent id) = %v; want ErrNotFound", err)
	}
	if _, err := s.Get(t.Context(), "team-a", "job_nonsense"); !isNotFound(err) {
		t.Errorf("Get(malformed id) = %v; want ErrNotFound", err)
	}
	if _, err := s.Get(t.Context(), "team-a", jobs.NewID(t0.Add(-2*time.Hour))); !errors.Is(err, jobs.ErrExpired) {
		t.Errorf("Get(unknown id older than the TTL) = %v; want ErrExpired", err)
	}
	later := t0.Add(61 * time.Minute)
	now.Store(&later)
	if _, err := s.Get(t.Context(), "team-a", j.ID); !errors.Is(err, jobs.ErrExpired) {
		t.Errorf("Get after the TTL = %v; want ErrExpired", err)
	}
}

func TestUpstreamClientError(t *testing.T) {
	st := newStore(t)
	body := `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}`
	s := start(t, st.js, jobs.RunnerFunc(func(context.Context, jobs.Job, []byte) jobs.Outcome {
		return jobs.Outcome{StatusCode: 400, Body: []byte(body), Provider: "p1"}
	}), jobs.Options{})
	j := mustSubmit(t, s, sub("team-a"))
	got := waitJob(t, s.Service, "team-a", j.ID, status(jobs.StatusFailed))
	if got.Result == nil || got.Result.StatusCode != 400 || string(got.Result.Body) != body || got.Error == nil || got.Error.Type != jobs.ErrorUpstream {
		t.Fatalf("failed job = %+v; want the upstream 400 and its body", got)
	}
}

func TestRetryableThenFailedAfterMaxWait(t *testing.T) {
	st := newStore(t)
	var calls atomic.Int32
	s := start(t, st.js, busyRunner(&calls), jobs.Options{Lanes: map[string]time.Duration{"batch": 400 * time.Millisecond}})
	j := mustSubmit(t, s, sub("team-a"))
	got := waitJob(t, s.Service, "team-a", j.ID, status(jobs.StatusFailed))
	if got.Error == nil || got.Error.Type != jobs.ErrorOverloaded || got.Attempts < 3 || int(calls.Load()) != got.Attempts {
		t.Fatalf("job = %+v after %d calls; want overloaded after several attempts", got, calls.Load())
	}
	if d := got.FinishedAt.Sub(got.CreatedAt); d < 400*time.Millisecond {
		t.Errorf("failed after %v; want at least the lane's max_wait", d)
	}
}

// busyRunner answers every run that no provider could serve it
// (retryable), counting the runs.
func busyRunner(calls *atomic.Int32) jobs.Runner {
	return jobs.RunnerFunc(func(context.Context, jobs.Job, []byte) jobs.Outcome {
		calls.Add(1)
		return jobs.Outcome{Err: errors.New("every provider is at its limit"), Retryable: true}
	})
}

// TestLaneWaitsFollowReload checks that a job waiting between retries
// follows its lane's max_wait as SetLaneWaits changes it (a reload), and
// that a max_wait that is not positive is refused.
func TestLaneWaitsFollowReload(t *testing.T) {
	st := newStore(t)
	var calls atomic.Int32
	s := start(t, st.js, busyRunner(&calls), jobs.Options{Lanes: map[string]time.Duration{"batch": 24 * time.Hour}})
	for _, bad := range []map[string]time.Duration{{"batch": 0}, {"batch": -time.Second}} {
		if err := s.SetLaneWaits(bad); err == nil {
			t.Errorf("SetLaneWaits(%v) = nil; want an error", bad)
		}
	}
	j, _, err := s.Submit(t.Context(), sub("team-a"))
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, s.Service, "team-a", j.ID, func(j jobs.Job) bool { return j.Attempts >= 2 && j.Status == jobs.StatusQueued })
	if err := s.SetLaneWaits(map[string]time.Duration{"batch": time.Millisecond, "interactive": time.Minute}); err != nil {
		t.Fatalf("SetLaneWaits: %v", err)
	}
	got := waitJob(t, s.Service, "team-a", j.ID, status(jobs.StatusFailed))
	if got.Error == nil || got.Error.Type != jobs.ErrorOverloaded || !strings.Contains(got.Error.Message, "max_wait (1ms)") {
		t.Fatalf("job = %+v; want overloaded after the new max_wait of 1ms", got)
	}
}

// TestRetryWaitsCanBeCanceled checks that a job waiting between retries
// is queued, and cancelable.
func TestRetryWaitsCanBeCanceled(t *testing.T) {
	st := newStore(t)
	s := start(t, st.js, jobs.RunnerFunc(func(context.Context, jobs.Job, []byte) jobs.Outcome {
		return jobs.Outcome{Err: errors.New("no capacity"), Retryable: true, RetryAfter: time.Hour}
	}), jobs.Options{RetryMax: time.Hour})
	j := mustSubmit(t, s, sub("team-a"))
	waitJob(t, s.Service, "team-a", j.ID, func(j jobs.Job) bool { return j.Attempts == 1 && j.Status == jobs.StatusQueued })
	if c, err := s.Cancel(t.Context(), "team-a", j.ID); err != nil || c.Status != jobs.StatusCanceled {
		t.Fatalf("Cancel = %+v, %v", c, err)
	}
}

func TestCallbackRetriedThenDelivered(t *testing.T) {
	st := newStore(t)
	secret := newSecret(t)
	rcv := newReceiver(t, 503, 503, 200)
	s := start(t, st.js, okRunner, jobs.Options{Callbacks: sender(t, callbacks.DelivererOptions{Signer: signer(t, secret)})})
	x := sub("team-a")
	x.CallbackURL = rcv.URL + "/cb?x=1"
	j := mustSubmit(t, s, x)
	got := waitJob(t, s.Service, "team-a", j.ID, func(j jobs.Job) bool { return j.Callback != nil && j.Callback.Outcome == "delivered" })
	if got.Callback.Attempts != 3 || got.Callback.LastStatus != 200 || got.Callback.DeliveredAt == nil {
		t.Fatalf("callback = %+v; want delivered on attempt 3", got.Callback)
	}
	d := rcv.deliveries()
	if len(d) != 3 {
		t.Fatalf("deliveries = %d; want 3", len(d))
	}
	for i, x := range d {
		if x.id != j.ID || string(x.body) != string(d[0].body) {
			t.Errorf("delivery %d: webhook-id %q; want %q and an identical body", i, x.id, j.ID)
		}
		if err := verifyIndependently(secret, x.id, x.ts, x.sig, x.body); err != nil {
			t.Errorf("delivery %d: %v", i, err)
		}
	}
	waitEmpty(t, st.js, jobs.CallbacksStream)
}

func TestCallbackGone(t *testing.T) {
	st := newStore(t)
	rcv := newReceiver(t, 410)
	s := start(t, st.js, okRunner, jobs.Options{})
	x := sub("team-a")
	x.CallbackURL = rcv.URL
	j := mustSubmit(t, s, x)
	got := waitJob(t, s.Service, "team-a", j.ID, func(j jobs.Job) bool { return j.Callback != nil && j.Callback.Outcome == "gone" })
	waitEmpty(t, st.js, jobs.CallbacksStream)
	time.Sleep(200 * time.Millisecond)
	if n := len(rcv.deliveries()); n != 1 || got.Callback.Attempts != 1 {
		t.Fatalf("deliveries = %d, callback %+v; want exactly 1 attempt", n, got.Callback)
	}
}

func TestCallbackResumesAfterRestart(t *testing.T) {
	st := newStore(t)
	rcv := newReceiver(t, 500, 200)
	s := start(t, st.js, okRunner, jobs.Options{CallbackSchedule: []time.Duration{700 * time.Millisecond}})
	x := sub("team-a")
	x.CallbackURL = rcv.URL
	j := mustSubmit(t, s, x)
	waitJob(t, s.Service, "team-a", j.ID, func(j jobs.Job) bool { return j.Callback != nil && j.Callback.Attempts == 1 })
	s.stop()
	st.restart() // the whole store restarts too, as after a process crash
	s2 := start(t, st.js, okRunner, jobs.Options{CallbackSchedule: []time.Duration{700 * time.Millisecond}})
	got := waitJob(t, s2.Service, "team-a", j.ID, func(j jobs.Job) bool { return j.Callback != nil && j.Callback.Outcome == "delivered" })
	if got.Callback.Attempts != 2 || len(rcv.deliveries()) != 2 {
		t.Fatalf("callback %+v, deliveries %d; want delivered on attempt 2", got.Callback, len(rcv.deliveries()))
	}
}

// TestOpenRefusesMissingSettings checks that the settings the relay's
// configuration owns have no default here: zero (or negative) is refused.
func TestOpenRefusesMissingSettings(t *testing.T) {
	st := newStore(t)
	cases := []struct {
		name  string
		spoil func(o *jobs.Options)
	}{
		{"no result TTL", func(o *jobs.Options) { o.ResultTTL = 0 }},
		{"no workers", func(o *jobs.Options) { o.Workers = 0 }},
		{"no callback sender", func(o *jobs.Options) { o.Callbacks = nil }},
		{"no callback URL check", func(o *jobs.Options) { o.CallbackURLs = nil }},
		{"no callback timeout", func(o *jobs.Options) { o.CallbackTimeout = 0 }},
		{"a lane without max_wait", func(o *jobs.Options) { o.Lanes = map[string]time.Duration{"batch": 0} }},
		{"negative ack wait", func(o *jobs.Options) { o.AckWait = -time.Second }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := defaultOpts(t, jobs.Options{})
			tc.spoil(&o)
			if s, err := jobs.Open(t.Context(), st.js, okRunner, o); err == nil || s != nil {
				t.Errorf("Open = %v, %v; want an error", s, err)
			}
		})
	}
}

// TestRunStopsWhenIdle: with nothing running, Run returns as soon as its
// context ends, not after the shutdown grace period that running work
// may use (the executor heartbeat once kept it for the whole grace).
func TestRunStopsWhenIdle(t *testing.T) {
	st := newStore(t)
	s := open(t, st.js, okRunner, jobs.Options{ShutdownGrace: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	mustSubmit(t, s, sub("team-a")) // a job that runs and ends at once
	natstest.Eventually(t, 30*time.Second, "queue empty", func() bool {
		return natstest.StreamMsgs(t, st.js, jobs.JobsStream, "") == 0
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second): // half the grace period
		t.Fatal("idle Run still running 30 s after its context ended (grace period 1 min)")
	}
}
