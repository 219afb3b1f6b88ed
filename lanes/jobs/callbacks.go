package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/relaygw/relay/workers/callbacks"
)

// Callback delivery: the RELAY_CALLBACKS queue (enqueueCallback) and its
// workers (deliverOne), which make one attempt per delivery of a queued
// message and record the outcome in the job's "callback" field.

// CheckCallbackURL applies the callback URL policy (SSRF protection unless
// AllowPrivate). Its errors wrap callbacks.ErrBadURL or
// callbacks.ErrForbiddenAddress and are safe to show clients.
func (s *Service) CheckCallbackURL(ctx context.Context, raw string) error {
	return s.checker.Check(ctx, raw)
}

// callbackMsg is a pending delivery in RELAY_CALLBACKS.
type callbackMsg struct {
	ID   string          `json:"id"`
	URL  string          `json:"url"`
	Body json.RawMessage `json:"body"`
}

// enqueueCallback stores the pending delivery of j's callback, if any.
func (s *Service) enqueueCallback(ctx context.Context, j *Job, data []byte) error {
	if j.CallbackURL == "" {
		return nil
	}
	cb, err := json.Marshal(&callbackMsg{ID: j.ID, URL: j.CallbackURL, Body: data})
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
		s.log.Warn("record callback state", "job", j.ID, "error", err)
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
	res := s.deliver.Attempt(ctx, callbacks.Callback{URL: cb.URL, MsgID: cb.ID, Body: cb.Body, Attempt: attempt})
	if ctx.Err() != nil && res.Outcome != callbacks.OutcomeDelivered {
		// Shutting down mid-attempt: try again after the restart.
		_ = msg.Nak()
		return
	}
	s.metrics.callbacks.WithLabelValues(res.Outcome).Inc()
	now := s.now().UTC()
	if _, _, err := s.update(ctx, cb.ID, func(j *Job) bool {
		st := CallbackState{Attempts: attempt, Outcome: res.Outcome, LastStatus: res.Status}
		if res.Outcome == callbacks.OutcomeRetry {
			st.Outcome = "pending"
		}
		if res.Err != nil {
			st.LastError = res.Err.Error()
		}
		if res.Outcome == callbacks.OutcomeDelivered {
			st.DeliveredAt = &now
		}
		j.Callback = &st
		return true
	}); err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Warn("record callback outcome", "job", cb.ID, "error", err)
	}
	switch res.Outcome {
	case callbacks.OutcomeRetry:
		if err := msg.NakWithDelay(max(res.NextAttemptAt.Sub(s.now()), 0)); err != nil {
			s.log.Warn("nak callback", "job", cb.ID, "error", err)
		}
	default:
		if res.Outcome != callbacks.OutcomeDelivered {
			s.log.Warn("callback not delivered", "job", cb.ID, "outcome", res.Outcome, "status", res.Status, "error", res.Err)
		}
		if err := msg.DoubleAck(ctx); err != nil {
			s.log.Warn("ack callback", "job", cb.ID, "error", err)
		}
	}
}
