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
// message is in RELAY_JOBS (file storage, PubAck received, on a majority
// of the replicas); then the job will run, whatever becomes of its
// record. created is false when sub.IdempotencyKey named an earlier
// submission of the same key, whose job is returned instead (but true
// when that earlier submission was not accepted: answered with an error,
// it never runs, and this one is the job, under a fresh id).
//
// Order, and why the answer tells the truth: (1) with an idempotency key,
// claim it with kv.Create (first wins) for a fresh id; (2) publish the
// whole submission to RELAY_JOBS with Nats-Msg-Id = id; (3) create the
// queued record. A job runs only if its message is stored, so Submit
// answers success exactly when (2) was acknowledged: a failure at (3)
// still answers success (the executor creates the record from the
// message). When (2) fails without telling whether the message was
// stored (a timeout, a lost connection: a leader change), Submit settles
// it with the record, which the executor also creates with kv.Create
// before running (the first wins): it creates a "not accepted" record;
// if that wins, the job never runs (the executor drops its message) and
// Submit fails; if the executor's record won, the message is stored and
// the job runs, so Submit succeeds. A crash after (1) leaves a claimed
// key with no job: the next submission with that key publishes and
// records it under the claimed id (under a fresh one if that id was not
// accepted). A retried (2) is de-duplicated by its message id.
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
			return s.resumeClaim(ctx, &sub, prev, now)
		}
	}
	j, err := s.store(ctx, id, now, &sub, true)
	return j, true, err
}

// store publishes the job message and creates its record (see Submit).
// It returns the record as stored, or with fresh (a new id) the queued
// record: a worker may pull the message and claim the job before the
// record is created here, but the submitter is told the job as it was
// accepted.
func (s *Service) store(ctx context.Context, id string, now time.Time, sub *Submission, fresh bool) (Job, error) {
	m, err := s.publishJob(ctx, id, now, sub)
	if err != nil {
		if definitive(err) {
			return Job{}, err
		}
		return s.settleUnknown(ctx, &m, err)
	}
	j, _, err := s.ensureRecord(ctx, &m, true)
	if err != nil {
		// Stored, so it runs: the executor creates the record.
		s.log.Warn("job stored without its record (the executor will create it)", m.ref().attrs("error", err)...)
		s.storeTrouble()
		return m.record(), nil
	}
	if notAccepted(&j) {
		// An earlier attempt under this id was answered with an error
		// (resumeClaim moves such claims to a fresh id first).
		return Job{}, fmt.Errorf("jobs: job %s was not accepted before", id)
	}
	if fresh {
		j = m.record()
	}
	return j, nil
}

// settleWait bounds how long Submit tries to settle a publish whose
// outcome is unknown. It outlasts a stream leader election (4 to 9 s in
// nats-server, not configurable) after the publish budget: a submitter
// waits that long while a node is lost rather than be answered with an
// error for a job that then runs (seen with 3 s when the node leading
// RELAY_JOBS was killed: TestClusterKillNATSNode).
const settleWait = 20 * time.Second

// settleUnknown decides a job whose publish failed with pubErr without
// telling whether the message was stored: it creates a "not accepted"
// record, which the executor honours (it never runs such a job). It
// returns pubErr when that record is in place, and the job when the
// executor's queued record was there first (the message is stored and
// the job runs). Should the store not answer within settleWait either,
// pubErr is returned and the job may still run if its message was
// stored (logged).
func (s *Service) settleUnknown(ctx context.Context, m *message, pubErr error) (Job, error) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleWait)
	defer cancel()
	rec := m.record()
	rec.Status = StatusFailed
	rec.Error = &Error{Type: ErrorNotAccepted, Message: "the submission was answered with an error and never ran"}
	s.finishFields(&rec, s.now().UTC())
	data, _ := json.Marshal(&rec)
	delay := 50 * time.Millisecond
	for {
		_, err := s.state.Create(sctx, m.ID, data)
		if err == nil {
			return Job{}, pubErr
		}
		if isConflict(err) {
			j, _, lerr := s.load(sctx, m.ID)
			if lerr == nil {
				if notAccepted(&j) {
					return Job{}, pubErr
				}
				return m.record(), nil
			}
			err = lerr
		}
		select {
		case <-sctx.Done():
			s.log.Error("job publish outcome unknown and not settled: it runs if its message was stored",
				m.ref().attrs("publish_error", pubErr, "error", err)...)
			return Job{}, pubErr
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// definitive reports whether a publish error says for sure that the
// message was not stored: the server refused it, or no stream or
// JetStream answered, or it was never sent (and no earlier try of the
// same publish had an unknown outcome).
func definitive(err error) bool {
	var apiErr *jetstream.APIError
	if errors.Is(err, errUnknownOutcome) {
		return false
	}
	return errors.Is(err, ErrTooLarge) || errors.As(err, &apiErr) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrInvalidMsg) || errors.Is(err, nats.ErrBadSubject) ||
		neverSent(err)
}

// neverSent reports whether a publish failed before its message was
// written to the connection: the client is reconnecting with no room to
// buffer it (the relay sets no reconnect buffer for nats.url). Not
// ErrConnectionClosed: a request whose connection closed after sending
// returns it too.
func neverSent(err error) bool {
	return errors.Is(err, nats.ErrReconnectBufExceeded)
}

// notAccepted reports whether j is the record of a submission answered
// with an error (settleUnknown): it never runs and is not shown.
func notAccepted(j *Job) bool {
	return j.Error != nil && j.Error.Type == ErrorNotAccepted && j.Terminal()
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
	// A publish that failed for want of a stream leader (an election) or
	// whose answer was lost is sent again with the same message id: the
	// stream stores it once, and a duplicate's acknowledgement says it is
	// stored.
	deadline := time.Now().Add(publishBudget)
	delay := 100 * time.Millisecond
	unknown := false // a try whose outcome is unknown makes the whole one unknown
	for {
		actx, cancel := context.WithTimeout(ctx, publishTry)
		_, err := s.publish(actx, msg)
		cancel()
		switch {
		case err == nil:
			return m, nil
		case errors.Is(err, nats.ErrMaxPayload) && !unknown:
			return m, ErrTooLarge
		}
		unknown = unknown || !definitive(err)
		if !transient(err) || ctx.Err() != nil || time.Now().Add(delay).After(deadline) {
			return m, publishError(err, unknown)
		}
		select {
		case <-ctx.Done():
			return m, publishError(err, unknown)
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// errUnknownOutcome marks a publish error after which the message may
// have been stored (see settleUnknown).
var errUnknownOutcome = errors.New("outcome unknown")

// publishError wraps the last error of a job publish, marked when one of
// its tries' outcome is unknown.
func publishError(err error, unknown bool) error {
	if unknown {
		return fmt.Errorf("jobs: store job (%w): %w", errUnknownOutcome, err)
	}
	return fmt.Errorf("jobs: store job: %w", err)
}

// A job publish is tried for up to publishBudget, each try waiting up to
// publishTry for its acknowledgement: a stream leader election takes a
// few seconds.
const (
	publishBudget = 5 * time.Second
	publishTry    = 2500 * time.Millisecond
)

// transient reports whether a publish error may pass by itself: no
// stream leader answered (yet), the acknowledgement did not come, the
// connection is reconnecting, or JetStream's cluster is electing.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == 10008 // JetStream system temporarily unavailable
	}
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrConnectionReconnecting)
}
