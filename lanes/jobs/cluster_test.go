package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
)

// Behaviour that matters when several relays share the job store: a
// fresh store declared without warnings, a saturated relay leaving queued
// jobs to others, and a submission whose storing could not be confirmed.

// TestOpenFreshStoreQuiet: opening the service on a fresh store creates
// every stream and bucket in its final shape (RELAY_EXECUTORS and the
// record buckets without direct gets), so nothing is converged and
// nothing is logged at warning level; neither on the next open.
func TestOpenFreshStoreQuiet(t *testing.T) {
	st := newStore(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for range 2 {
		open(t, st.js, okRunner, jobs.Options{Logger: log})
	}
	if logs.Len() > 0 {
		t.Errorf("opening on a fresh store logged warnings:\n%s", logs.String())
	}
	for _, b := range []string{jobs.StateBucket, jobs.IdemBucket, jobs.BatchesBucket, jobs.ExecutorsBucket} {
		s, err := st.js.Stream(t.Context(), "KV_"+b)
		if err != nil {
			t.Fatal(err)
		}
		if s.CachedInfo().Config.AllowDirect {
			t.Errorf("KV_%s allows direct gets; want reads through the leader", b)
		}
	}
}

// idRunner succeeds at once and counts the runs of each job.
type idRunner struct {
	mu   sync.Mutex
	runs map[string]int
}

func newIDRunner() *idRunner { return &idRunner{runs: map[string]int{}} }

func (r *idRunner) Run(ctx context.Context, j jobs.Job, b []byte, start func() bool) jobs.Outcome {
	if !start() {
		return jobs.Outcome{Err: jobs.ErrNotStarted}
	}
	r.mu.Lock()
	r.runs[j.ID]++
	r.mu.Unlock()
	return okRunner(ctx, j, b)
}

func (r *idRunner) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[id]
}

func (r *idRunner) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.runs {
		n += c
	}
	return n
}

// saturated is a relay's runner whose providers never have capacity: a
// job waits (never calling start) until its run is cancelled. It records
// the most jobs waiting at once and every job it saw.
type saturated struct {
	mu       sync.Mutex
	waiting  int
	maxWait  int
	seen     map[string]bool
	handedTo atomic.Int32 // runs that ended (handed back)
}

func (s *saturated) Run(ctx context.Context, j jobs.Job, _ []byte, _ func() bool) jobs.Outcome {
	s.mu.Lock()
	s.waiting++
	s.maxWait = max(s.maxWait, s.waiting)
	s.seen[j.ID] = true
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.waiting--
	s.mu.Unlock()
	s.handedTo.Add(1)
	return jobs.Outcome{Err: ctx.Err(), Retryable: true}
}

func (s *saturated) stats() (maxWait, seen int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxWait, len(s.seen)
}

// TestSaturatedRelayLeavesJobs: a relay whose providers are saturated
// (MaxWaiting 2, HandBack 300 ms, 8 workers) never holds more than two
// pulled jobs waiting, gives them back, still queued and with no attempt
// counted; a second relay with capacity then runs every job exactly once.
func TestSaturatedRelayLeavesJobs(t *testing.T) {
	st := newStore(t)
	busy := &saturated{seen: map[string]bool{}}
	a := start(t, st.js, busy, jobs.Options{Workers: 8, MaxWaiting: 2, HandBack: 300 * time.Millisecond})
	const n = 6
	ids := make([]string, n)
	for i := range ids {
		ids[i] = mustSubmit(t, a, sub("team-a")).ID
	}
	// Handed back and pulled again: the saturated relay has seen more
	// jobs than it may hold, never more than two at once.
	natstest.Eventually(t, 20*time.Second, "the saturated relay cycles through the jobs", func() bool {
		_, seen := busy.stats()
		return seen >= 3 && busy.handedTo.Load() >= 3
	})
	for _, id := range ids {
		j, err := a.Get(t.Context(), "team-a", id)
		if err != nil || j.Status != jobs.StatusQueued || j.Attempts != 0 {
			t.Fatalf("job %s on the saturated relay: %+v, %v; want queued with 0 attempts", id, j, err)
		}
	}

	free := newIDRunner()
	start(t, st.js, free, jobs.Options{Workers: 2})
	for _, id := range ids {
		j := waitJob(t, a.Service, "team-a", id, status(jobs.StatusSucceeded))
		if j.Attempts != 1 {
			t.Errorf("job %s: %d attempts; want 1 (hand-backs are not attempts)", id, j.Attempts)
		}
		if c := free.count(id); c != 1 {
			t.Errorf("job %s ran %d times on the free relay; want 1", id, c)
		}
	}
	if maxWait, _ := busy.stats(); maxWait > 2 {
		t.Errorf("the saturated relay held %d jobs waiting at once; want at most MaxWaiting 2", maxWait)
	}
}

// errLostAnswer is what a lost publish acknowledgement looks like: the
// connection closed before the answer, whether or not the message was
// stored.
var errLostAnswer = nats.ErrConnectionClosed

// TestUnknownPublishOutcome: a submission whose job message may or may
// not have been stored (the publish's answer was lost) is settled by its
// record. When the "not accepted" record wins, Submit fails and the job
// never runs (its message, if stored, is dropped) and is not shown; a
// retry with the same Idempotency-Key then creates the job under a fresh
// id, which runs once, and a further retry returns that same job. When
// the executor recorded the stored message first, Submit succeeds and the
// job runs once.
func TestUnknownPublishOutcome(t *testing.T) {
	tests := []struct {
		name   string
		stored bool // the message reached the stream before the answer was lost
		idem   string
	}{
		{"stored, answer lost", true, ""},
		{"never stored", false, ""},
		{"stored, answer lost, retried with idempotency key", true, "idem-1"},
		{"never stored, retried with idempotency key", false, "idem-2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			runs := newIDRunner()
			s := open(t, st.js, runs, jobs.Options{AckWait: time.Second})
			var lostID string
			s.SetPublish(func(ctx context.Context, m *nats.Msg, publish func(context.Context, *nats.Msg) (*jetstream.PubAck, error)) (*jetstream.PubAck, error) {
				lostID = m.Header.Get(jetstream.MsgIDHeader)
				if tc.stored {
					if _, err := publish(ctx, m); err != nil {
						t.Errorf("publish: %v", err)
					}
				}
				return nil, errLostAnswer
			})
			x := sub("team-a")
			x.IdempotencyKey = tc.idem
			if j, _, err := s.Submit(t.Context(), x); !errors.Is(err, errLostAnswer) {
				t.Fatalf("Submit = %+v, %v; want the publish error", j, err)
			}
			if want := map[bool]uint64{true: 1, false: 0}[tc.stored]; natstest.StreamMsgs(t, st.js, jobs.JobsStream, "") != want {
				t.Fatalf("RELAY_JOBS does not hold %d message(s)", want)
			}
			if _, err := s.Get(t.Context(), "team-a", lostID); !isNotFound(err) {
				t.Errorf("Get(not accepted job) = %v; want not found", err)
			}
			s.SetPublish(nil)
			svc := run(t, s)
			control := mustSubmit(t, svc, sub("team-a")) // the executor runs
			waitJob(t, s, "team-a", control.ID, status(jobs.StatusSucceeded))
			waitEmpty(t, st.js, jobs.JobsStream) // the stored message is dropped, not run

			if tc.idem != "" {
				j, created, err := svc.Submit(t.Context(), x)
				if err != nil || !created || j.ID == lostID {
					t.Fatalf("retry = %s, created %v, %v; want a new job under a fresh id", j.ID, created, err)
				}
				waitJob(t, s, "team-a", j.ID, status(jobs.StatusSucceeded))
				again, created, err := svc.Submit(t.Context(), x)
				if err != nil || created || again.ID != j.ID {
					t.Errorf("second retry = %s, created %v, %v; want the same job %s", again.ID, created, err, j.ID)
				}
				time.Sleep(1500 * time.Millisecond) // a stray redelivery (ack wait 1 s) would run now
				if c := runs.count(j.ID); c != 1 {
					t.Errorf("retried job ran %d times; want 1", c)
				}
			}
			if c := runs.count(lostID); c != 0 {
				t.Errorf("the job answered with an error ran %d times; want 0", c)
			}
		})
	}
}

// TestUnknownPublishOutcomeExecutorFirst: when the executor pulled the
// stored message and recorded it before Submit could settle the lost
// answer, the job is accepted: Submit returns it and it runs once.
func TestUnknownPublishOutcomeExecutorFirst(t *testing.T) {
	st := newStore(t)
	runs := newIDRunner()
	s := start(t, st.js, runs, jobs.Options{})
	var lostID string
	s.SetPublish(func(ctx context.Context, m *nats.Msg, publish func(context.Context, *nats.Msg) (*jetstream.PubAck, error)) (*jetstream.PubAck, error) {
		lostID = m.Header.Get(jetstream.MsgIDHeader)
		if _, err := publish(ctx, m); err != nil {
			return nil, err
		}
		// The answer is lost; meanwhile the executor takes the job.
		natstest.Eventually(t, 10*time.Second, "executor recorded the job", func() bool {
			_, err := s.Get(t.Context(), "team-a", lostID)
			return err == nil
		})
		return nil, errLostAnswer
	})
	j, created, err := s.Submit(t.Context(), sub("team-a"))
	if err != nil || !created || j.ID != lostID {
		t.Fatalf("Submit = %s, created %v, %v; want job %s accepted", j.ID, created, err, lostID)
	}
	waitJob(t, s.Service, "team-a", j.ID, status(jobs.StatusSucceeded))
	waitEmpty(t, st.js, jobs.JobsStream)
	if c := runs.total(); c != 1 {
		t.Errorf("%d runs; want 1", c)
	}
}

// TestLiveOwnerNotDoubled: a job redelivered while the relay that claimed
// it still beats (its InProgress were lost, its liveness key is fresh)
// is left to it: not run again, still running. Once that relay stops
// beating (its key expires), another relay runs it, once, counting one
// interrupted run.
func TestLiveOwnerNotDoubled(t *testing.T) {
	st := newStore(t)
	const ackWait = 600 * time.Millisecond
	other := open(t, st.js, okRunner, jobs.Options{AckWait: ackWait})
	other.SetInstance("xotherrelay")
	j := mustSubmit(t, other, sub("team-a"))
	if id, err := other.SimulateCrash(t.Context(), jobs.CrashWhileRunning, jobs.Outcome{}); err != nil || id != j.ID {
		t.Fatalf("SimulateCrash = %s, %v", id, err)
	}
	kv, err := st.js.KeyValue(t.Context(), jobs.ExecutorsBucket)
	if err != nil {
		t.Fatal(err)
	}
	// The other relay beats (its job message gets no InProgress).
	ctx, stopBeat := context.WithCancel(t.Context())
	beatDone := make(chan struct{})
	go func() {
		defer close(beatDone)
		for ctx.Err() == nil {
			_, _ = kv.Put(ctx, "xotherrelay", []byte("alive"))
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	defer func() { stopBeat(); <-beatDone }()

	runs := newIDRunner()
	s := start(t, st.js, runs, jobs.Options{AckWait: ackWait})
	time.Sleep(5 * ackWait) // several redeliveries
	if c := runs.count(j.ID); c != 0 {
		t.Fatalf("the job of a live relay ran %d times here; want 0", c)
	}
	if got, err := s.Get(t.Context(), "team-a", j.ID); err != nil || got.Status != jobs.StatusRunning {
		t.Fatalf("job = %+v, %v; want still running under the live relay", got, err)
	}

	stopBeat()
	<-beatDone
	got := waitJob(t, s.Service, "team-a", j.ID, status(jobs.StatusSucceeded))
	if c := runs.count(j.ID); c != 1 || got.Interrupted != 1 {
		t.Errorf("after the owner stopped: %d runs, interrupted %d; want 1 and 1", c, got.Interrupted)
	}
}
