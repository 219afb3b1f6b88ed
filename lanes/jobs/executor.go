package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The executor: what a worker does with one delivery of a job message, from
// claiming the job to recording its end (see the package doc, Lifecycle).

// execute handles one delivery of a job message.
func (s *Service) execute(ctx context.Context, msg jetstream.Msg) {
	var m message
	if err := json.Unmarshal(msg.Data(), &m); err != nil || !ValidID(m.ID) {
		s.log.Error("undecodable job message; dropped", "error", err)
		_ = msg.Term()
		return
	}
	// A store outage longer than the ack wait (heartbeats lost, or a
	// JetStream restart) redelivers a job this process still runs or
	// finishes: that run acknowledges it; never start a second one.
	if _, busy := s.active.LoadOrStore(m.ID, struct{}{}); busy {
		return
	}
	defer s.active.Delete(m.ID)
	ctx, span := startRun(ctx, &m)
	defer span.End()
	rec, err := bounded(ctx, func(ctx context.Context) (Job, error) {
		rec, _, err := s.ensure(ctx, &m)
		return rec, err
	})
	if err != nil {
		s.retryLater(msg, m.ref(), err)
		return
	}
	if notAccepted(&rec) {
		_ = msg.Term() // its submitter was answered with an error
		return
	}
	if rec.Status == StatusRunning {
		if alive, again := s.ownerAlive(ctx, rec.Owner); alive {
			// Redelivered while its owner still runs it (heartbeats
			// late): never a second run; look again when the owner's
			// key would have expired.
			_ = msg.NakWithDelay(again)
			return
		}
	}
	if m.BatchID != "" && s.batchGate(ctx, msg, &m) {
		return // ended without running: batch expired, canceled or gone
	}
	var claimed bool
	j, err := bounded(ctx, func(ctx context.Context) (j Job, err error) {
		j, claimed, err = s.prepare(ctx, m.ID)
		return j, err
	})
	if err != nil {
		s.retryLater(msg, m.ref(), err)
		return
	}
	if j.Terminal() {
		if claimed { // dead-lettered just now
			s.metrics.jobs.WithLabelValues(j.Status).Inc()
			s.metrics.dead.Inc()
			s.log.Error("job dead-lettered", j.ref().attrs("lane", j.Lane, "interrupted", j.Interrupted)...)
		}
		s.complete(ctx, msg, &j)
		return
	}
	out, started, handedBack := s.run(ctx, msg, &j, m.Body)
	if handedBack && !started {
		// No capacity here within HandBack: back to the queue, still
		// queued and with no attempt counted, for a relay that has some.
		_ = msg.NakWithDelay(jitter(10*time.Millisecond, 200*time.Millisecond, 1))
		return
	}
	if !started && errors.Is(out.Err, ErrNotStarted) {
		// Canceled while it waited for capacity (its record is terminal:
		// publish and acknowledge), or the start could not be recorded
		// (try again later).
		cur, _, err := s.update(ctx, j.ID, func(*Job) bool { return false })
		if err != nil || !cur.Terminal() {
			s.retryLater(msg, j.ref(), fmt.Errorf("start job: %w", err))
			return
		}
		s.complete(ctx, msg, &cur)
		return
	}
	if ctx.Err() != nil {
		// Shutting down: the job goes back to the queue for the next
		// start, without counting as interrupted.
		s.requeue(msg, &j, 0, nil)
		return
	}
	s.settle(ctx, msg, &j, out)
}

// takeoverOpTimeout bounds the store steps before a delivered job runs
// (reading or creating its record, taking over a dead owner's run). A
// bucket electing a new leader (its node died with a relay) answers
// nothing until elected, and JetStream's default timeout is 5 s: with
// this bound the delivery goes back (retryLater) and is tried again soon
// after the election, not up to 5 s after it. Both steps may be repeated.
const takeoverOpTimeout = 2 * time.Second

// bounded runs op with a context bounded by takeoverOpTimeout.
func bounded(ctx context.Context, op func(context.Context) (Job, error)) (Job, error) {
	ctx, cancel := context.WithTimeout(ctx, takeoverOpTimeout)
	defer cancel()
	return op(ctx)
}

// run calls the Runner for j (whose record it updates to running when
// the runner starts it), telling JetStream meanwhile that the message is
// in progress, so a long wait or generation is never redelivered
// mid-flight. With Options.HandBack, a job not started within it is
// handed back: start refuses from then on. It reports whether the job
// started, and whether it was handed back.
func (s *Service) run(ctx context.Context, msg jetstream.Msg, j *Job, body []byte) (out Outcome, started, handedBack bool) {
	runCtx, cancel := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		s.heartbeat(runCtx, msg)
	}()
	defer func() { cancel(); <-hbDone }()
	var mu sync.Mutex // orders start and the hand-back
	if s.opts.HandBack > 0 {
		t := time.AfterFunc(s.opts.HandBack, func() {
			mu.Lock()
			defer mu.Unlock()
			if !started {
				handedBack = true
				cancel()
			}
		})
		defer t.Stop()
	}
	start := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if handedBack {
			return false
		}
		sj, ok, err := s.start(ctx, j.ID)
		if err != nil {
			s.log.Warn("start job", j.ref().attrs("error", err)...)
			return false
		}
		if ok {
			*j, started = sj, true
			releaseSlot(ctx)
		}
		return ok
	}
	out = s.runner.Run(runCtx, j.clone(), body, start)
	mu.Lock()
	defer mu.Unlock()
	return out, started, handedBack
}

// heartbeat tells JetStream every AckWait/3 that msg is in progress,
// until ctx ends.
func (s *Service) heartbeat(ctx context.Context, msg jetstream.Msg) {
	t := time.NewTicker(s.opts.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = msg.InProgress()
		}
	}
}

// settle ends a run of j that returned out: back to the queue for a retry
// while its lane's max_wait allows, else terminal.
func (s *Service) settle(ctx context.Context, msg jetstream.Msg, j *Job, out Outcome) {
	now := s.now().UTC()
	switch {
	case out.Err != nil && out.Retryable:
		wait := s.laneMaxWait(j.Lane)
		deadline := j.CreatedAt.Add(wait)
		if now.Before(deadline) {
			delay := max(jitter(s.opts.RetryBase, s.opts.RetryMax, j.Attempts), out.RetryAfter)
			delay = min(delay, deadline.Sub(now))
			s.log.Info("job will retry", j.ref().attrs("delay_ms", delay.Milliseconds(), "error", out.Err)...)
			s.requeue(msg, j, delay, out.Err)
			return
		}
		s.terminal(ctx, msg, j.ref(), StatusFailed, nil, &Error{Type: ErrorOverloaded, Message: fmt.Sprintf(
			"no provider could serve the job within its lane's max_wait (%s); last error: %v", wait, out.Err)})
	case out.Err != nil:
		s.terminal(ctx, msg, j.ref(), StatusFailed, nil, &Error{Type: ErrorInternal, Message: out.Err.Error()})
	case out.StatusCode >= 200 && out.StatusCode < 300:
		s.terminal(ctx, msg, j.ref(), StatusSucceeded, result(out), nil)
	default:
		s.terminal(ctx, msg, j.ref(), StatusFailed, result(out), &Error{Type: ErrorUpstream,
			Message: fmt.Sprintf("the upstream provider answered %d", out.StatusCode)})
	}
}

// ErrNotStarted is what a Runner returns when start refused: the
// job was canceled while it waited for capacity.
var ErrNotStarted = errors.New("job not started")

// prepare readies a delivered job for running. A record found running
// means the previous run was lost (a crash, or a hang past the ack wait):
// it goes back to queued, and after MaxInterrupted such losses the job is
// dead-lettered: failed, and changed reports it. A terminal job is
// returned unchanged. A job that was only waiting for capacity when a
// crash came is still queued and is not counted as interrupted.
func (s *Service) prepare(ctx context.Context, id string) (Job, bool, error) {
	now := s.now().UTC()
	j, changed, err := s.update(ctx, id, func(j *Job) bool {
		if j.Terminal() || j.Status != StatusRunning {
			return false
		}
		j.Owner = ""
		j.Interrupted++
		if j.Interrupted >= s.opts.MaxInterrupted {
			j.Status = StatusFailed
			s.finishFields(j, now)
			j.Error = &Error{Type: ErrorDeadLetter, Message: fmt.Sprintf(
				"the job was interrupted %d times while running (relay crash or hang) and was given up", j.Interrupted)}
			return true
		}
		j.Status = StatusQueued
		return true
	})
	if err == nil && changed {
		// Its upstream call may have been made: it is made again
		// (counted once the takeover is written, not per try).
		s.metrics.repeated.Inc()
	}
	return j, changed, err
}

// start moves a queued job to running (attempts+1), reporting false when
// it is no longer queued (canceled while it waited).
func (s *Service) start(ctx context.Context, id string) (Job, bool, error) {
	now := s.now().UTC()
	started := false
	j, _, err := s.update(ctx, id, func(j *Job) bool {
		if j.Status != StatusQueued {
			return false
		}
		j.Status = StatusRunning
		j.Owner = s.instance
		j.Attempts++
		j.StartedAt = &now
		started = true
		return true
	})
	if started && err == nil {
		s.starts.observe(j.Lane, now)
	}
	return j, started, err
}

// result turns an Outcome into a Result.
func result(out Outcome) *Result {
	r := &Result{StatusCode: out.StatusCode, Provider: out.Provider}
	switch {
	case len(out.Body) == 0:
	case json.Valid(out.Body):
		r.Body = append(json.RawMessage(nil), out.Body...)
	default:
		r.Body, _ = json.Marshal(string(out.Body))
	}
	return r
}

// requeue puts a running job back to queued and redelivers its message
// after delay.
func (s *Service) requeue(msg jetstream.Msg, j *Job, delay time.Duration, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := s.update(ctx, j.ID, func(r *Job) bool {
		if r.Status != StatusRunning {
			return false
		}
		r.Status = StatusQueued
		r.Owner = ""
		if cause != nil {
			r.Error = &Error{Type: ErrorOverloaded, Message: "will retry: " + cause.Error()}
		}
		return true
	}); err != nil {
		s.log.Warn("requeue job", j.ref().attrs("error", err)...)
	}
	if err := msg.NakWithDelay(delay); err != nil {
		s.log.Warn("nak job message", j.ref().attrs("error", err)...)
	}
}

// retryLater redelivers a message whose handling hit a store error.
func (s *Service) retryLater(msg jetstream.Msg, ref jobRef, err error) {
	s.log.Warn("job store error; will retry", ref.attrs("error", err)...)
	s.storeTrouble()
	_ = msg.NakWithDelay(time.Second)
}

// errRetry makes persist try again at once.
var errRetry = errors.New("jobs: try again")

// storeBackoffMax caps the wait between tries of a finished job's writes.
const storeBackoffMax = 5 * time.Second

// persist runs write until it succeeds, for a job whose run is over: a
// store error (a full disk, a restarting JetStream) is waited out, with
// the message kept in progress, so the run is never repeated for want of
// recording it. It returns false, after a retryLater, when ctx ends first
// (shutting down).
func (s *Service) persist(ctx context.Context, msg jetstream.Msg, ref jobRef, write func() error) bool {
	delay := 100 * time.Millisecond
	for n := 1; ; n++ {
		err := write()
		if err == nil {
			return true
		}
		if errors.Is(err, errRetry) {
			continue
		}
		if ctx.Err() != nil {
			s.retryLater(msg, ref, err)
			return false
		}
		if n == 1 {
			s.log.Warn("job store error; retrying until the store is back", ref.attrs("error", err)...)
		}
		s.storeTrouble()
		_ = msg.InProgress()
		select {
		case <-ctx.Done():
			s.retryLater(msg, ref, err)
			return false
		case <-time.After(delay):
		}
		delay = min(2*delay, storeBackoffMax)
	}
}

// terminal records the end of job ref (once), then completes it.
func (s *Service) terminal(ctx context.Context, msg jetstream.Msg, ref jobRef, status string, r *Result, e *Error) {
	now := s.now().UTC()
	var j Job
	var changed bool
	if !s.persist(ctx, msg, ref, func() (err error) {
		j, changed, err = s.update(ctx, ref.id, func(j *Job) bool {
			if j.Terminal() {
				return false
			}
			j.Status = status
			s.finishFields(j, now)
			j.Result = r
			j.Error = e
			return true
		})
		if errors.Is(err, ErrNotFound) {
			// The record went with a deleted bucket: make it again from
			// the message, then record the end.
			var m message
			if err := json.Unmarshal(msg.Data(), &m); err != nil {
				return fmt.Errorf("jobs: decode job message: %w", err)
			}
			if _, _, err := s.ensure(ctx, &m); err != nil {
				return err
			}
			return errRetry
		}
		return err
	}) {
		return
	}
	if changed {
		s.metrics.jobs.WithLabelValues(j.Status).Inc()
	}
	s.complete(ctx, msg, &j)
}

// complete publishes a terminal job's result and callback (idempotently)
// and acknowledges its message.
func (s *Service) complete(ctx context.Context, msg jetstream.Msg, j *Job) {
	if !s.persist(ctx, msg, j.ref(), func() error { return s.afterTerminal(ctx, j) }) {
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		s.log.Warn("ack job message", j.ref().attrs("error", err)...)
	}
}

// jitter returns a full-jitter delay in [0, min(max, base*2^(n-1))].
func jitter(base, maxD time.Duration, n int) time.Duration {
	ceiling := maxD
	if n < 1 {
		n = 1
	}
	if shift := n - 1; shift < 40 {
		if b := base << shift; b > 0 && b < ceiling {
			ceiling = b
		}
	}
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}
