package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Callback delivery: the RELAY_CALLBACKS queue (enqueueCallback) and its
// workers (deliverOne), which make one attempt per delivery of a queued
// message and record the outcome in the job's "callback" field.

// Outcomes of one delivery attempt, as CallbackResult.Outcome; also the
// values of relay_callbacks_total{outcome}.
const (
	// CallbackDelivered: the receiver accepted it; stop.
	CallbackDelivered = "delivered"
	// CallbackRetry: try again at CallbackResult.NextAttemptAt.
	CallbackRetry = "retry"
	// CallbackGone: the receiver answered 410 Gone; stop.
	CallbackGone = "gone"
	// CallbackFailed: the last allowed attempt failed, or the callback
	// can never be delivered; stop.
	CallbackFailed = "failed"
)

// CallbackAttempt is one attempt to deliver a finished job's callback.
// (Its fields are those of workers/callbacks.Callback, so the one
// converts to the other.)
type CallbackAttempt struct {
	// URL is the job's callback_url, accepted by CallbackURLs on
	// submission.
	URL string
	// MsgID is the webhook-id: the job id, on every attempt.
	MsgID string
	// Body is the job's final JSON, identical on every attempt.
	Body []byte
	// Attempt numbers the attempts from 1.
	Attempt int
}

// CallbackResult is the outcome of one attempt. (Its fields are those of
// workers/callbacks.Result.)
type CallbackResult struct {
	// Outcome is one of the Callback* outcomes.
	Outcome string
	// Status is the receiver's HTTP status, 0 without a response.
	Status int
	// Err says why the attempt did not deliver; safe to record.
	Err error
	// NextAttemptAt is when to try again, with CallbackRetry.
	NextAttemptAt time.Time
}

// CallbackSender delivers callbacks, signed, one attempt per call, and
// says what to do next. It must be safe for concurrent use. cmd/relay
// supplies one built on workers/callbacks. If it also has a
// CloseIdleConnections method, Run calls it before returning.
type CallbackSender interface {
	Attempt(ctx context.Context, a CallbackAttempt) CallbackResult
}

// idleCloser is a CallbackSender that keeps idle connections.
type idleCloser interface{ CloseIdleConnections() }

// URLChecker applies the callback URL policy (workers/callbacks.Checker
// is one). Its errors are safe to show clients.
type URLChecker interface {
	Check(ctx context.Context, raw string) error
}

// CheckCallbackURL applies Options.CallbackURLs' policy to raw (SSRF
// protection, unless private networks are allowed). Its errors are safe
// to show clients.
func (s *Service) CheckCallbackURL(ctx context.Context, raw string) error {
	return s.opts.CallbackURLs.Check(ctx, raw)
}

// callbackMsg is a pending delivery in RELAY_CALLBACKS.
type callbackMsg struct {
	ID   string          `json:"id"`
	URL  string          `json:"url"`
	Body json.RawMessage `json:"body"`
	// RequestID and Trace are the submission's (see message).
	RequestID string            `json:"request_id,omitempty"`
	Trace     map[string]string `json:"trace,omitempty"`
}

// enqueueCallback stores the pending delivery of j's callback, if any.
func (s *Service) enqueueCallback(ctx context.Context, j *Job, data []byte) error {
	if j.CallbackURL == "" {
		return nil
	}
	cb, err := json.Marshal(&callbackMsg{ID: j.ID, URL: j.CallbackURL, Body: data, RequestID: j.RequestID, Trace: injectTrace(ctx)})
	if err != nil {
		return fmt.Errorf("jobs: encode: %w", err)
	}
	msg := &nats.Msg{Subject: callbacksSubject, Data: cb, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, j.ID)
	msg.Header.Set("Relay-Job-Id", j.ID)
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("jobs: enqueue callback: %w", err)
	}
	if _, _, err := s.update(ctx, j.ID, func(j *Job) bool {
		if j.Callback != nil {
			return false
		}
		j.Callback = &CallbackState{Outcome: "pending"}
		return true
	}); err != nil {
		s.log.Warn("record callback state", "job_id", j.ID, "request_id", j.RequestID, "error", err)
	}
	return nil
}

// deliverOne makes one callback delivery attempt.
func (s *Service) deliverOne(ctx context.Context, msg jetstream.Msg) {
	var cb callbackMsg
	if err := json.Unmarshal(msg.Data(), &cb); err != nil || cb.ID == "" {
		s.log.Error("undecodable callback message; dropped", "error", err)
		_ = msg.Term()
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	attempt := int(meta.NumDelivered)
	ctx, span := startCallback(ctx, &cb, attempt)
	start := time.Now()
	res := s.opts.Callbacks.Attempt(ctx, CallbackAttempt{URL: cb.URL, MsgID: cb.ID, Body: cb.Body, Attempt: attempt})
	endCallback(span, &res)
	s.log.Info("callback attempt", "job_id", cb.ID, "request_id", cb.RequestID, "attempt", attempt,
		"outcome", res.Outcome, "status", res.Status, "duration_ms", time.Since(start).Milliseconds())
	if ctx.Err() != nil && res.Outcome != CallbackDelivered {
		// Shutting down mid-attempt: try again after the restart.
		_ = msg.Nak()
		return
	}
	s.metrics.callbacks.WithLabelValues(res.Outcome).Inc()
	now := s.now().UTC()
	if _, _, err := s.update(ctx, cb.ID, func(j *Job) bool {
		st := CallbackState{Attempts: attempt, Outcome: res.Outcome, LastStatus: res.Status}
		if res.Outcome == CallbackRetry {
			st.Outcome = "pending"
		}
		if res.Err != nil {
			st.LastError = res.Err.Error()
		}
		if res.Outcome == CallbackDelivered {
			st.DeliveredAt = &now
		}
		j.Callback = &st
		return true
	}); err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Warn("record callback outcome", "job_id", cb.ID, "request_id", cb.RequestID, "error", err)
	}
	switch res.Outcome {
	case CallbackRetry:
		if err := msg.NakWithDelay(max(res.NextAttemptAt.Sub(s.now()), 0)); err != nil {
			s.log.Warn("nak callback", "job_id", cb.ID, "request_id", cb.RequestID, "error", err)
		}
	default:
		if res.Outcome != CallbackDelivered {
			s.log.Warn("callback not delivered", "job_id", cb.ID, "request_id", cb.RequestID, "outcome", res.Outcome, "status", res.Status, "error", res.Err)
		}
		if err := msg.DoubleAck(ctx); err != nil {
			s.log.Warn("ack callback", "job_id", cb.ID, "request_id", cb.RequestID, "error", err)
		}
	}
}
