package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Callback delivery: the RELAY_CALLBACKS queue (enqueueCallback) and the
// seams through which callbacks are sent; the workers that follow the
// retry schedule are in callback_schedule.go.

// Outcomes of one delivery attempt, as CallbackResult.Outcome. The values
// of relay_callbacks_total{outcome} are delivered, retry, gone and
// CallbackDeadLetter (a last attempt that failed).
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
	// CallbackDeadLetter is the outcome recorded in CallbackState for a
	// callback given up: the schedule ran out or CallbackFailed.
	CallbackDeadLetter = "dead_letter"
	// CallbackPending is the outcome recorded in CallbackState while
	// attempts remain.
	CallbackPending = "pending"
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
	// NextAttemptAt is when the sender would try again, with
	// CallbackRetry. The service follows its own schedule
	// (Options.CallbackSchedule) and ignores it.
	NextAttemptAt time.Time
	// RetryAfter is the receiver's Retry-After (429 or 503), 0 if none:
	// the next attempt is not made before it.
	RetryAfter time.Duration
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

// callbackMsg is a pending delivery in RELAY_CALLBACKS. Round is 0 for
// the callback sent when the job finished, n for its n-th re-send.
type callbackMsg struct {
	ID    string          `json:"id"`
	URL   string          `json:"url"`
	Body  json.RawMessage `json:"body"`
	Round int             `json:"round,omitempty"`
	// RequestID and Trace are the submission's (see message), BatchID
	// the job's batch, if any (for log lines).
	RequestID string            `json:"request_id,omitempty"`
	BatchID   string            `json:"batch_id,omitempty"`
	Trace     map[string]string `json:"trace,omitempty"`
}

// enqueueCallback stores the pending delivery of j's callback, if any.
func (s *Service) enqueueCallback(ctx context.Context, j *Job, data []byte) error {
	if j.CallbackURL == "" {
		return nil
	}
	cb, err := json.Marshal(&callbackMsg{ID: j.ID, URL: j.CallbackURL, Body: data, RequestID: j.RequestID,
		BatchID: j.BatchID, Trace: injectTrace(ctx)})
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
		j.Callback = &CallbackState{Outcome: CallbackPending}
		return true
	}); err != nil {
		s.log.Warn("record callback state", j.ref().attrs("error", err)...)
	}
	return nil
}
