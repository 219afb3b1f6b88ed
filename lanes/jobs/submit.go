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

// Submit: validating a submission and storing its job message and queued
// record (see Submit for why each crash point is safe).

// message is a job as stored in RELAY_JOBS: everything needed to create
// its record and run it.
type message struct {
	ID          string          `json:"id"`
	Key         string          `json:"key"`
	Endpoint    string          `json:"endpoint"`
	Model       string          `json:"model"`
	Lane        string          `json:"lane"`
	CallbackURL string          `json:"callback_url,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	BatchID     string          `json:"batch_id,omitempty"`
	CustomID    string          `json:"custom_id,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	Body        json.RawMessage `json:"body"`
	RequestID   string          `json:"request_id,omitempty"`
	// Trace is the W3C trace context of the submission, which the run
	// and the callback continue on whichever relay executes the job.
	Trace map[string]string `json:"trace,omitempty"`
}

// record returns the queued record of m.
func (m *message) record() Job {
	return Job{ID: m.ID, Object: "job", Status: StatusQueued, Endpoint: m.Endpoint, Model: m.Model, Lane: m.Lane,
		KeyName: m.Key, CallbackURL: m.CallbackURL, Metadata: m.Metadata, BatchID: m.BatchID, CustomID: m.CustomID,
		CreatedAt: m.CreatedAt, RequestID: m.RequestID}
}

// validate checks what the service itself owns about a submission.
func validate(sub *Submission) error {
	switch {
	case sub.Key == "":
		return fmt.Errorf("%w: no key", ErrInvalid)
	case sub.Endpoint != EndpointMessages && sub.Endpoint != EndpointChatCompletions:
		return fmt.Errorf("%w: endpoint must be %s or %s", ErrInvalid, EndpointMessages, EndpointChatCompletions)
	case sub.Model == "":
		return fmt.Errorf("%w: body has no model", ErrInvalid)
	case sub.Lane == "":
		return fmt.Errorf("%w: no lane", ErrInvalid)
	case len(sub.Body) == 0 || !json.Valid(sub.Body) || firstNonSpace(sub.Body) != '{':
		return fmt.Errorf("%w: body must be a JSON object", ErrInvalid)
	case len(sub.Metadata) > 0 && (!json.Valid(sub.Metadata) || firstNonSpace(sub.Metadata) != '{'):
		return fmt.Errorf("%w: metadata must be a JSON object", ErrInvalid)
	case len(sub.IdempotencyKey) > 255:
		return fmt.Errorf("%w: idempotency key longer than 255 characters", ErrInvalid)
	}
	return nil
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c
		}
	}
	return 0
}

// Submit stores a job and returns its record. It returns only once the job
// message is in RELAY_JOBS (file storage, PubAck received) and its record
// is in RELAY_JOB_STATE. created is false when sub.IdempotencyKey named an
// earlier submission of the same key, whose job is returned instead.
//
// Order, and why it is crash-safe: (1) with an idempotency key, claim it
// with kv.Create (first wins) for a fresh id; (2) publish the whole
// submission to RELAY_JOBS with Nats-Msg-Id = id; (3) create the queued
// record. A crash after (1) leaves a claimed key with no job: the next
// submission with that key publishes and records it under the claimed id.
// A crash after (2) leaves a stored job without a record: the executor
// creates the record from the message, so nothing accepted is lost. A
// retried (2) is de-duplicated by its message id.
func (s *Service) Submit(ctx context.Context, sub Submission) (Job, bool, error) {
	if err := validate(&sub); err != nil {
		return Job{}, false, err
	}
	j, created, err := s.submit(ctx, sub)
	if err != nil && !errors.Is(err, ErrTooLarge) && ctx.Err() == nil {
		s.storeTrouble()
	}
	return j, created, err
}

// submit is Submit after validation.
func (s *Service) submit(ctx context.Context, sub Submission) (Job, bool, error) {
	now := s.now().UTC()
	id := NewID(now)
	if sub.IdempotencyKey != "" {
		prev, held, err := s.claim(ctx, &sub, id)
		if err != nil {
			return Job{}, false, err
		}
		if held {
			j, err := s.resumeClaim(ctx, &sub, prev, now)
			return j, false, err
		}
	}
	j, err := s.store(ctx, id, now, &sub, true)
	return j, true, err
}

// store publishes the job message and creates its record. It returns
// the record as stored, or with fresh (a new id) the queued record: a
// worker may pull the message and claim the job before the record is
// created here, but the submitter is told the job as it was accepted.
func (s *Service) store(ctx context.Context, id string, now time.Time, sub *Submission, fresh bool) (Job, error) {
	m, err := s.publishJob(ctx, id, now, sub)
	if err != nil {
		return Job{}, err
	}
	j, _, err := s.ensure(ctx, &m)
	if err == nil && fresh {
		j = m.record()
	}
	return j, err
}

// publishJob stores the job message of sub under id.
func (s *Service) publishJob(ctx context.Context, id string, now time.Time, sub *Submission) (message, error) {
	m := message{ID: id, Key: sub.Key, Endpoint: sub.Endpoint, Model: sub.Model, Lane: sub.Lane,
		CallbackURL: sub.CallbackURL, Metadata: sub.Metadata, BatchID: sub.BatchID, CustomID: sub.CustomID,
		CreatedAt: now.Truncate(time.Millisecond), Body: sub.Body, RequestID: sub.RequestID, Trace: injectTrace(ctx)}
	data, err := json.Marshal(&m)
	if err != nil {
		return m, fmt.Errorf("jobs: encode: %w", err)
	}
	msg := &nats.Msg{Subject: jobsSubjectPrefix + token(sub.Lane), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set("Relay-Job-Id", id)
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		if errors.Is(err, nats.ErrMaxPayload) {
			return m, ErrTooLarge
		}
		return m, fmt.Errorf("jobs: store job: %w", err)
	}
	return m, nil
}
