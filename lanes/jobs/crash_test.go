package jobs_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/lanes/jobs"
)

// countingRunner counts calls and succeeds.
type countingRunner struct{ n atomic.Int32 }

func (c *countingRunner) Run(ctx context.Context, j jobs.Job, b []byte, start func() bool) jobs.Outcome {
	if !start() {
		return jobs.Outcome{Err: jobs.ErrNotStarted}
	}
	c.n.Add(1)
	return okRunner(ctx, j, b)
}

// TestCrashPoints kills the executor (by abandoning its message and
// restarting the NATS server on the same store) after each step of a job's
// end, restarts, and checks that the caller sees exactly one result: one
// record, one NATS result message, one webhook-id.
func TestCrashPoints(t *testing.T) {
	const ackWait = 900 * time.Millisecond
	for _, tc := range []struct {
		name     string
		point    int
		wantRuns int32 // upstream calls after the restart
	}{
		{"while running", jobs.CrashWhileRunning, 1},
		{"after record", jobs.CrashAfterRecord, 0},
		{"after result", jobs.CrashAfterResult, 0},
		{"before ack", jobs.CrashBeforeAck, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			rcv := newReceiver(t, 200)
			crashed := open(t, st.js, okRunner, jobs.Options{AckWait: ackWait})
			x := sub("team-a")
			x.CallbackURL = rcv.URL
			j, _, err := crashed.Submit(t.Context(), x)
			if err != nil {
				t.Fatal(err)
			}
			id, err := crashed.SimulateCrash(t.Context(), tc.point, jobs.Outcome{StatusCode: 200, Body: []byte(`{"first":true}`)})
			if err != nil || id != j.ID {
				t.Fatalf("SimulateCrash = %s, %v", id, err)
			}
			st.restart()

			var runs countingRunner
			s := start(t, st.js, &runs, jobs.Options{AckWait: ackWait})
			got := waitJob(t, s.Service, "team-a", j.ID, func(j jobs.Job) bool {
				return j.Terminal() && j.Callback != nil && j.Callback.Outcome == "delivered"
			})
			waitEmpty(t, st.js, jobs.JobsStream)
			waitEmpty(t, st.js, jobs.CallbacksStream)
			time.Sleep(2 * ackWait) // any stray redelivery would show now
			if got.Status != jobs.StatusSucceeded {
				t.Errorf("status %q; want succeeded", got.Status)
			}
			if n := runs.n.Load(); n != tc.wantRuns {
				t.Errorf("upstream calls after restart = %d; want %d", n, tc.wantRuns)
			}
			if n := natstest.StreamMsgs(t, st.js, jobs.ResultsStream, ""); n != 1 {
				t.Errorf("RELAY_RESULTS holds %d messages; want 1", n)
			}
			d := rcv.deliveries()
			if len(d) != 1 || d[0].id != j.ID {
				t.Errorf("deliveries = %d; want 1 with webhook-id %s", len(d), j.ID)
			}
			if tc.point == jobs.CrashWhileRunning && got.Interrupted != 1 {
				t.Errorf("interrupted = %d; want 1", got.Interrupted)
			}
		})
	}
}

// TestCrashAfterPublishBeforeRecord: the job message is stored but Submit
// died before the record. The executor creates the record and runs the
// job; a retry of the submission with its Idempotency-Key returns it.
func TestCrashAfterPublishBeforeRecord(t *testing.T) {
	st := newStore(t)
	crashed := open(t, st.js, okRunner, jobs.Options{})
	x := sub("team-a")
	x.IdempotencyKey = "retry-me"
	id, err := crashed.PublishOnly(t.Context(), x)
	if err != nil {
		t.Fatal(err)
	}
	st.restart()
	var runs countingRunner
	s := open(t, st.js, &runs, jobs.Options{})
	j, created, err := s.Submit(t.Context(), x)
	if err != nil || created || j.ID != id {
		t.Fatalf("resubmit = %s, created %v, %v; want %s", j.ID, created, err, id)
	}
	run(t, s)
	waitJob(t, s, "team-a", id, status(jobs.StatusSucceeded))
	waitEmpty(t, st.js, jobs.JobsStream)
	if n := runs.n.Load(); n != 1 {
		t.Errorf("upstream calls = %d; want 1", n)
	}
}

// TestDeadLetter: a job whose runs keep being lost ends failed.
func TestDeadLetter(t *testing.T) {
	st := newStore(t)
	const ackWait = 600 * time.Millisecond
	s := open(t, st.js, okRunner, jobs.Options{AckWait: ackWait, MaxInterrupted: 2})
	j := mustSubmit(t, s, sub("team-a"))
	for range 2 {
		if _, err := s.SimulateCrash(t.Context(), jobs.CrashWhileRunning, jobs.Outcome{}); err != nil {
			t.Fatal(err)
		}
	}
	var runs countingRunner
	s2 := start(t, st.js, &runs, jobs.Options{AckWait: ackWait, MaxInterrupted: 2})
	got := waitJob(t, s2.Service, "team-a", j.ID, status(jobs.StatusFailed))
	if got.Error == nil || got.Error.Type != jobs.ErrorDeadLetter || runs.n.Load() != 0 {
		t.Fatalf("job = %+v, runs %d; want dead-lettered without running", got, runs.n.Load())
	}
}

// TestClusterR3 runs jobs on a 3-node cluster with every asset at R3:
// concurrent cancels race the executor (compare-and-set conflicts come
// back as 10164 there), and every job ends with one terminal record read
// back at once from any node (leader reads).
func TestClusterR3(t *testing.T) {
	nodes := natstest.StartCluster(t, 3)
	js := natstest.JetStream(t, nodes[1])
	decl := assets.New(js, assets.Options{Replicas: 3})
	var runs countingRunner
	// Under load the new cluster may still be electing leaders: retry as
	// the relay does at start.
	var opened *jobs.Service
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := assets.UntilPlaced(ctx, slog.New(slog.DiscardHandler), "open jobs", func(ctx context.Context) (err error) {
		opened, err = jobs.Open(ctx, js, &runs, defaultOpts(t, jobs.Options{Assets: decl}))
		return err
	}); err != nil {
		t.Fatalf("Open: %v", err)
	}
	s := run(t, opened)
	const n = 40
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range ids {
		ids[i] = mustSubmit(t, s.Service, sub("team-a")).ID
		if i%2 == 0 {
			wg.Go(func() { _, _ = s.Cancel(context.Background(), "team-a", ids[i]) })
		}
	}
	wg.Wait()
	for _, id := range ids {
		waitJob(t, s.Service, "team-a", id, func(j jobs.Job) bool { return j.Terminal() })
	}
	waitEmpty(t, js, jobs.JobsStream)
	if n := natstest.StreamMsgs(t, js, jobs.ResultsStream, ""); n != uint64(len(ids)) {
		t.Errorf("RELAY_RESULTS holds %d; want %d", n, len(ids))
	}
	st, err := js.Stream(t.Context(), "KV_"+jobs.StateBucket)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.Replicas != 3 || c.AllowDirect {
		t.Errorf("job records: %d replicas, direct gets %v; want 3, false", c.Replicas, c.AllowDirect)
	}
}
