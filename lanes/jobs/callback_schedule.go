package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The callback retry schedule: the workers that deliver RELAY_CALLBACKS
// messages (deliverOne), dead letters and re-sends (ResendCallback).
//
// A callback's attempt count and next attempt time are stored in its
// job's record (CallbackState), not in JetStream's delivery count: every
// delivery of the message first reads the record, and one whose attempt
// is not due yet goes back with NakWithDelay until it is, without an
// attempt. So a restart (whether or not the server kept the nak delays)
// neither resets a count nor fires waiting callbacks early, and a clock
// injected in tests decides every due time (Options.CallbackRecheck bounds
// the real waits between checks).

// CallbackJitter is the jitter of the retry schedule: each delay is drawn
// uniformly within ±10% of its scheduled value.
const CallbackJitter = 0.10

// ErrNoCallback, ErrNotFinished and ErrCallbackPending refuse a re-send
// (ResendCallback). Their messages are safe to show clients.
var (
	// ErrNoCallback means the job was submitted without a callback_url.
	ErrNoCallback = errors.New("the job has no callback_url")
	// ErrNotFinished means the job has not finished, so its callback was
	// never sent.
	ErrNotFinished = errors.New("the job has not finished; its callback is sent when it does")
	// ErrCallbackPending means the callback is still being delivered.
	ErrCallbackPending = errors.New("the job's callback is still being delivered")
)

// deadPrefix starts the dead-letter markers in StateBucket: "d.<job-id>"
// while the job's callback is a dead letter (counted by the
// relay_callbacks_dead_letters gauge).
const deadPrefix = "d."

// roundState returns the state of round of a callback whose record holds
// cs: a fresh one when the record has not reached that round yet; false
// when the round is over (or an older round was re-sent since).
func roundState(cs *CallbackState, round int) (CallbackState, bool) {
	switch {
	case cs == nil || cs.Resends < round:
		return CallbackState{Outcome: CallbackPending, Resends: round}, true
	case cs.Resends > round || cs.Outcome != CallbackPending:
		return CallbackState{}, false
	}
	return *cs, true
}

// deliverOne handles one delivery of a RELAY_CALLBACKS message: it
// makes the attempt that is due, or waits (NakWithDelay) until it is.
func (s *Service) deliverOne(ctx context.Context, msg jetstream.Msg) {
	var cb callbackMsg
	if err := json.Unmarshal(msg.Data(), &cb); err != nil || cb.ID == "" {
		s.log.Error("undecodable callback message; dropped", "error", err)
		_ = msg.Term()
		return
	}
	j, _, err := s.load(ctx, cb.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		s.log.Warn("callback of an expired job dropped", cb.ref().attrs()...)
		s.ack(ctx, msg, cb.ref())
		return
	case err != nil:
		s.log.Warn("read job for its callback", cb.ref().attrs("error", err)...)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	st, ok := roundState(j.Callback, cb.Round)
	if !ok { // a duplicate of a round that has ended
		s.ack(ctx, msg, cb.ref())
		return
	}
	if now := s.now(); st.NextAttemptAt != nil && now.Before(*st.NextAttemptAt) {
		s.nakUntil(msg, cb.ref(), st.NextAttemptAt.Sub(now))
		return
	}
	s.attempt(ctx, msg, &cb, st.Attempts+1)
}

// attempt makes attempt n of cb's round, records it and acknowledges the
// message or sends it back until the next attempt is due.
func (s *Service) attempt(ctx context.Context, msg jetstream.Msg, cb *callbackMsg, n int) {
	ctx, span := startCallback(ctx, cb, n)
	start := time.Now()
	res := s.opts.Callbacks.Attempt(ctx, CallbackAttempt{URL: cb.URL, MsgID: cb.ID, Body: cb.Body, Attempt: n})
	endCallback(span, &res)
	s.log.Info("callback attempt", cb.ref().attrs("attempt", n, "round", cb.Round,
		"outcome", res.Outcome, "status", res.Status, "duration_ms", time.Since(start).Milliseconds())...)
	if ctx.Err() != nil && res.Outcome != CallbackDelivered {
		// Shutting down mid-attempt: the attempt is not recorded and is
		// made again after the restart.
		_ = msg.Nak()
		return
	}
	next := s.nextState(&res, cb.Round, n)
	// The outcome is recorded before the message is settled, waiting out
	// a store outage (a leader election), so a delivered callback is not
	// made again and never stays "pending" in the record.
	var wrote, gone bool
	if !s.persist(ctx, msg, cb.ref(), func() error {
		_, w, err := s.update(ctx, cb.ID, func(j *Job) bool {
			cur, ok := roundState(j.Callback, cb.Round)
			if !ok || cur.Attempts >= n { // another delivery recorded this attempt
				return false
			}
			j.Callback = &next
			return true
		})
		if errors.Is(err, ErrNotFound) {
			gone = true
			return nil
		}
		wrote = w
		return err
	}) {
		return // shutting down: the attempt is made again after the restart
	}
	if gone || !wrote { // an expired job, or a duplicate message of this round
		s.ack(ctx, msg, cb.ref())
		return
	}
	s.finishAttempt(ctx, msg, cb, &next)
}

// finishAttempt counts a recorded attempt and acknowledges its message,
// or sends it back until the next attempt is due.
func (s *Service) finishAttempt(ctx context.Context, msg jetstream.Msg, cb *callbackMsg, st *CallbackState) {
	label := st.Outcome
	if label == CallbackPending {
		label = CallbackRetry
	}
	s.metrics.callbacks.WithLabelValues(label).Inc()
	switch st.Outcome {
	case CallbackPending:
		s.nakUntil(msg, cb.ref(), st.NextAttemptAt.Sub(s.now()))
		return
	case CallbackDeadLetter:
		s.log.Warn("callback given up: dead letter", cb.ref().attrs("attempts", st.Attempts, "status", st.LastStatus,
			"error", st.LastError)...)
		if _, err := s.state.Put(ctx, deadPrefix+cb.ID, []byte(cb.ID)); err != nil {
			s.log.Warn("record dead letter", cb.ref().attrs("error", err)...)
		}
	default:
		if st.Outcome == CallbackGone {
			s.log.Warn("callback receiver answered 410 gone", cb.ref().attrs()...)
		}
		if cb.Round > 0 { // a re-sent dead letter is one no more
			_ = s.state.Purge(ctx, deadPrefix+cb.ID)
		}
	}
	s.ack(ctx, msg, cb.ref())
}

// nextState is the callback state after attempt n of round ended with res.
func (s *Service) nextState(res *CallbackResult, round, n int) CallbackState {
	now := s.now().UTC()
	st := CallbackState{Attempts: n, Resends: round, LastStatus: res.Status, LastAttemptAt: &now}
	if res.Err != nil {
		st.LastError = res.Err.Error()
	}
	switch res.Outcome {
	case CallbackDelivered:
		st.Outcome, st.DeliveredAt, st.LastError = CallbackDelivered, &now, ""
	case CallbackGone:
		st.Outcome = CallbackGone
	case CallbackRetry:
		if n > len(s.opts.CallbackSchedule) {
			st.Outcome = CallbackDeadLetter
			st.LastError = fmt.Sprintf("giving up after %d attempts: %s", n, st.LastError)
			break
		}
		at := now.Add(max(s.callbackDelay(n), res.RetryAfter))
		st.Outcome, st.NextAttemptAt = CallbackPending, &at
	default:
		st.Outcome = CallbackDeadLetter
	}
	return st
}

// callbackDelay is the jittered delay after failed attempt n (1-based):
// Options.CallbackSchedule[n-1], ±CallbackJitter.
func (s *Service) callbackDelay(n int) time.Duration {
	d := float64(s.opts.CallbackSchedule[n-1])
	return time.Duration(d * (1 + CallbackJitter*(2*rand.Float64()-1)))
}

// nakUntil sends a callback message back to be delivered again after d
// (at most Options.CallbackRecheck, when set).
func (s *Service) nakUntil(msg jetstream.Msg, ref jobRef, d time.Duration) {
	if r := s.opts.CallbackRecheck; r > 0 {
		d = min(d, r)
	}
	if err := msg.NakWithDelay(max(d, time.Millisecond)); err != nil {
		s.log.Warn("nak callback", ref.attrs("error", err)...)
	}
}

// ack acknowledges a callback message for good.
func (s *Service) ack(ctx context.Context, msg jetstream.Msg, ref jobRef) {
	if err := msg.DoubleAck(ctx); err != nil {
		s.log.Warn("ack callback", ref.attrs("error", err)...)
	}
}

// ResendCallback starts key's job id's callback again, with a fresh
// schedule and the same webhook-id and body, once its last schedule has
// ended (a dead letter, but also one delivered or gone). Another key's or
// an unknown job is ErrNotFound; a job without callback_url
// ErrNoCallback, one not finished ErrNotFinished, and a callback still
// being delivered ErrCallbackPending.
func (s *Service) ResendCallback(ctx context.Context, key, id string) (Job, error) {
	j, err := s.Get(ctx, key, id)
	switch {
	case err != nil:
		return Job{}, err
	case j.CallbackURL == "":
		return Job{}, ErrNoCallback
	case !j.Terminal():
		return Job{}, ErrNotFinished
	case j.Callback != nil && j.Callback.Outcome == CallbackPending:
		return Job{}, ErrCallbackPending
	}
	round := 1
	if j.Callback != nil {
		round = j.Callback.Resends + 1
	}
	if err := s.publishResend(ctx, &j, round); err != nil {
		return Job{}, err
	}
	nj, _, err := s.update(ctx, id, func(r *Job) bool {
		if r.Callback != nil && r.Callback.Resends >= round {
			return false // a concurrent re-send of the same round
		}
		r.Callback = &CallbackState{Outcome: CallbackPending, Resends: round}
		return true
	})
	if err != nil {
		return Job{}, err
	}
	if err := s.state.Purge(ctx, deadPrefix+id); err != nil {
		s.log.Warn("clear dead letter", nj.ref().attrs("error", err)...)
	}
	return nj.clone(), nil
}

// publishResend enqueues round of j's callback. Its message id names the
// round, so concurrent re-sends of one round enqueue it once, and the
// webhook-id stays the job id.
func (s *Service) publishResend(ctx context.Context, j *Job, round int) error {
	body := j.final()
	data, err := json.Marshal(&body)
	if err != nil {
		return fmt.Errorf("jobs: encode: %w", err)
	}
	cb, err := json.Marshal(&callbackMsg{ID: j.ID, URL: j.CallbackURL, Body: data, Round: round,
		RequestID: j.RequestID, BatchID: j.BatchID, Trace: injectTrace(ctx)})
	if err != nil {
		return fmt.Errorf("jobs: encode: %w", err)
	}
	msg := &nats.Msg{Subject: callbacksSubject, Data: cb, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.resend.%d", j.ID, round))
	msg.Header.Set("Relay-Job-Id", j.ID)
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("jobs: enqueue callback: %w", err)
	}
	return nil
}
