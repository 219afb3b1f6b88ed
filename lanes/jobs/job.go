package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// The job record (Job) and what a client submits (Submission), their
// statuses and errors, and the Runner seam through which jobs reach
// providers (cmd/relay plugs in gateway.JobRunner).

// Job statuses. Succeeded, failed and canceled are terminal.
const (
	// StatusQueued: stored, waiting to run (or to be retried).
	StatusQueued = "queued"
	// StatusRunning: an upstream call is in flight.
	StatusRunning = "running"
	// StatusSucceeded: the upstream answered 2xx.
	StatusSucceeded = "succeeded"
	// StatusFailed: the upstream refused the request, or no provider
	// served it in time, or it was dead-lettered.
	StatusFailed = "failed"
	// StatusCanceled: canceled while queued.
	StatusCanceled = "canceled"
)

// Endpoints a job may call.
const (
	// EndpointMessages is Anthropic Messages.
	EndpointMessages = "/v1/messages"
	// EndpointChatCompletions is OpenAI Chat Completions.
	EndpointChatCompletions = "/v1/chat/completions"
)

// Error types of Job.Error.
const (
	// ErrorUpstream means the upstream refused the request (a 4xx); the
	// upstream's answer is in Result.
	ErrorUpstream = "upstream_error"
	// ErrorOverloaded means no provider could serve the job within its
	// lane's max_wait.
	ErrorOverloaded = "overloaded_error"
	// ErrorDeadLetter means the job was interrupted (a crash or hang while
	// running) too many times and was given up.
	ErrorDeadLetter = "dead_letter"
	// ErrorInternal means the relay could not run the job.
	ErrorInternal = "api_error"
	// ErrorNotAccepted marks the record of a submission that was
	// answered with an error: its job never runs, and it is not shown.
	ErrorNotAccepted = "not_accepted"
)

// Errors returned by the Service. Their messages are safe to show clients.
var (
	// ErrNotFound means no job with that id belongs to the key.
	ErrNotFound = errors.New("job not found")
	// ErrExpired means the job existed but its retention has passed.
	ErrExpired = errors.New("job expired")
	// ErrNotCancelable means the job is running or finished.
	ErrNotCancelable = errors.New("job can no longer be canceled")
	// ErrInvalid means a Submission is malformed; it wraps the reason.
	ErrInvalid = errors.New("invalid job")
	// ErrTooLarge means the submission is larger than the message store
	// accepts.
	ErrTooLarge = errors.New("job is too large to store")
	// ErrIdempotencyMismatch means an Idempotency-Key was used before by
	// the same key with a different submission.
	ErrIdempotencyMismatch = errors.New("idempotency key was already used with a different request")
	// ErrClosed means the Service was stopped.
	ErrClosed = errors.New("jobs service closed")
)

// Submission is a job as a client submits it, already authorized by the
// caller (route exists and is allowed, lane allowed, callback URL passed
// CheckCallbackURL).
type Submission struct {
	// Key is the name of the relay key that owns the job.
	Key string
	// Endpoint is EndpointMessages or EndpointChatCompletions.
	Endpoint string
	// Model is the route the body names.
	Model string
	// Body is the request body, a JSON object without "stream": true.
	Body []byte
	// Lane is the priority lane the job waits on.
	Lane string
	// CallbackURL, when set, receives the final state.
	CallbackURL string
	// Metadata is the client's JSON object, returned as is.
	Metadata json.RawMessage
	// IdempotencyKey, when set, makes submissions with the same key name
	// and IdempotencyKey return the first one's job.
	IdempotencyKey string
	// BatchID and CustomID tie the job to a message batch item.
	BatchID, CustomID string
	// RequestID is the id of the request that submitted the job, kept
	// with it so the logs of its runs and callbacks name it.
	RequestID string
}

// Job is a job's record: what GET /v1/jobs/{id}, the NATS result message
// and the callback carry.
type Job struct {
	// ID is "job_" and a ULID.
	ID string `json:"id"`
	// Object is always "job".
	Object string `json:"object"`
	// Status is one of the Status* constants.
	Status string `json:"status"`
	// Endpoint is the API the job calls.
	Endpoint string `json:"endpoint"`
	// Model is the route the body names.
	Model string `json:"model"`
	// Lane is the priority lane the job waits on.
	Lane string `json:"lane"`
	// KeyName names the relay key that owns the job.
	KeyName string `json:"key_name"`
	// RequestID is the id of the request that submitted the job.
	RequestID string `json:"request_id,omitempty"`
	// CallbackURL receives the final state, if set.
	CallbackURL string `json:"callback_url,omitempty"`
	// Metadata is the client's, as submitted.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// BatchID and CustomID tie the job to a message batch item.
	BatchID  string `json:"batch_id,omitempty"`
	CustomID string `json:"custom_id,omitempty"`
	// Attempts counts the runs started.
	Attempts int `json:"attempts"`
	// CreatedAt is when the job was accepted.
	CreatedAt time.Time `json:"created_at"`
	// StartedAt is when the last run started.
	StartedAt *time.Time `json:"started_at,omitempty"`
	// FinishedAt is when the job became terminal.
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// ExpiresAt is when a terminal job's record and result go.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Result is the upstream's answer, when there was one.
	Result *Result `json:"result,omitempty"`
	// Error says why the job failed or was canceled (or, while queued
	// again, why it is being retried).
	Error *Error `json:"error,omitempty"`
	// Callback is the callback delivery state, once enqueued.
	Callback *CallbackState `json:"callback,omitempty"`
	// Interrupted counts deliveries that found the job running: runs lost
	// to a crash or hang. Kept for dead-lettering.
	Interrupted int `json:"interrupted,omitempty"`
	// QueuePosition is, in GET answers of a queued job only, how many of
	// its lane's jobs were accepted before it and have not ended
	// (position.go); never stored.
	QueuePosition *int `json:"queue_position,omitempty"`
	// EstimatedStartAt is, in GET answers of a queued job only, when it
	// is expected to start, from its position and the lane's recent start
	// rate on this relay; absent without enough recent starts. Never
	// stored.
	EstimatedStartAt *time.Time `json:"estimated_start_at,omitempty"`
	// Owner is the executor instance running the job (owners.go); only
	// in the stored record, never shown.
	Owner string `json:"owner,omitempty"`
}

// Result is the upstream's final answer.
type Result struct {
	// StatusCode is the upstream's HTTP status.
	StatusCode int `json:"status_code"`
	// Body is the upstream's body: JSON as is, anything else as a string.
	Body json.RawMessage `json:"body,omitempty"`
	// Provider names the provider that answered.
	Provider string `json:"provider,omitempty"`
}

// Error says why a job failed.
type Error struct {
	// Type is one of the Error* constants.
	Type string `json:"type"`
	// Message is safe to show the client.
	Message string `json:"message"`
}

// CallbackState is the delivery state of a job's callback (see
// callback_schedule.go).
type CallbackState struct {
	// Attempts made so far in the current schedule (since the last
	// re-send).
	Attempts int `json:"attempts"`
	// Outcome is "pending" while attempts remain, then delivered, gone
	// (the receiver answered 410) or dead_letter (given up: the schedule
	// ran out, or the callback can never be delivered).
	Outcome string `json:"outcome"`
	// LastStatus is the receiver's last HTTP status, 0 if none.
	LastStatus int `json:"last_status,omitempty"`
	// LastError describes the last failed attempt.
	LastError string `json:"last_error,omitempty"`
	// LastAttemptAt is when the last attempt was made.
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	// NextAttemptAt is when the next attempt is due, while pending.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// DeliveredAt is when the receiver accepted it.
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	// Resends counts the re-sends (POST /v1/jobs/{id}/callback); each
	// starts a fresh schedule.
	Resends int `json:"resends,omitempty"`
}

// Terminal reports whether the job has finished.
func (j *Job) Terminal() bool {
	switch j.Status {
	case StatusSucceeded, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// clone returns a deep enough copy of j for callers to own.
func (j Job) clone() Job {
	c := j
	c.Owner = ""
	c.Metadata = append(json.RawMessage(nil), j.Metadata...)
	if j.Result != nil {
		r := *j.Result
		r.Body = append(json.RawMessage(nil), j.Result.Body...)
		c.Result = &r
	}
	if j.Error != nil {
		e := *j.Error
		c.Error = &e
	}
	if j.Callback != nil {
		cb := *j.Callback
		c.Callback = &cb
	}
	return c
}

// Runner runs one job's request upstream, on the lanes and providers that
// serve synchronous traffic. cmd/relay supplies it. Run must return when
// ctx ends.
type Runner interface {
	// Run sends body (the job's request, in the format of j.Endpoint) and
	// reports the outcome. A runner that waits for capacity (on a lane)
	// calls start once it has it, just before the upstream call: the job
	// stays queued (and cancelable) while it waits, and start moves it to
	// running. When start reports false (the job was canceled meanwhile)
	// the runner gives its capacity back and returns Outcome{Err:
	// ErrNotStarted} at once. A runner must call start before calling
	// upstream.
	Run(ctx context.Context, j Job, body []byte, start func() bool) Outcome
}

// Outcome is what a Runner reports.
//
//   - Err set and Retryable: no capacity or every target failed; the job is
//     tried again later (not before RetryAfter, if set) until its lane's
//     max_wait since creation has passed.
//   - Err set and not Retryable: the job fails with Err's message.
//   - StatusCode >= 400 with Body: the upstream refused the request; the
//     job fails with that answer.
//   - StatusCode 2xx with Body: the job succeeds.
type Outcome struct {
	// StatusCode is the upstream's HTTP status (0 with Err).
	StatusCode int
	// Body is the upstream's answer.
	Body []byte
	// Provider names the provider that answered.
	Provider string
	// Err says why there is no upstream answer.
	Err error
	// Retryable marks Err as "try later".
	Retryable bool
	// RetryAfter is the earliest sensible retry, if known.
	RetryAfter time.Duration
}

// RunnerFunc adapts a function that needs no capacity to Runner: the job
// is started before the function is called.
type RunnerFunc func(ctx context.Context, j Job, body []byte) Outcome

// Run starts the job, then calls f.
func (f RunnerFunc) Run(ctx context.Context, j Job, body []byte, start func() bool) Outcome {
	if !start() {
		return Outcome{Err: ErrNotStarted}
	}
	return f(ctx, j, body)
}
