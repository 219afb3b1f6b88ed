package gateway

// This file owns how errors reach clients: one table of the kinds of
// answer (status, Anthropic type, OpenAI type and code, retry behaviour),
// one table of the internal errors (workers', lanes', jobs') and the kind
// each is answered with, and the rendering of an answer in either format
// (SPEC §3).

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/wire"
)

// Statuses outside net/http's constants.
const (
	// StatusClientClosedRequest (nginx's 499) is logged and counted for a
	// request whose client went away before its answer; it is never sent.
	StatusClientClosedRequest = 499
	// StatusOverloaded is Anthropic's 529 overloaded_error; clients of
	// the OpenAI format get 503 instead.
	StatusOverloaded = 529
)

// errKind is one kind of answer to a failed request: a row of
// errorClasses.
type errKind uint8

// The kinds of answer.
const (
	kindBadRequest errKind = iota
	kindAuth
	kindPermission
	kindNotFound
	kindModelNotFound
	kindMethod
	kindConflict
	kindIdempotencyReused
	kindTooLarge
	kindRateLimited
	kindBudget
	kindOverloaded
	kindBodyBudget
	kindStoreUnavailable
	kindUpstreamBroken
	kindInternal
	kindClientGone
	numKinds
)

// errorClass is how one kind of error is answered.
type errorClass struct {
	status     int
	anthropic  string        // Anthropic error.type
	openaiType string        // OpenAI error.type
	openaiCode string        // OpenAI error.code ("" = null)
	param      string        // OpenAI error.param ("" = null)
	retryAfter time.Duration // > 0 adds retry-after headers
}

// errorClasses is SPEC §3's error table. OpenAI's column names error
// codes; their types follow OpenAI's own usage.
var errorClasses = [numKinds]errorClass{
	kindBadRequest:        {status: 400, anthropic: "invalid_request_error", openaiType: "invalid_request_error"},
	kindAuth:              {status: 401, anthropic: "authentication_error", openaiType: "invalid_request_error", openaiCode: "invalid_api_key"},
	kindPermission:        {status: 403, anthropic: "permission_error", openaiType: "invalid_request_error", openaiCode: "permission_denied"},
	kindNotFound:          {status: 404, anthropic: "not_found_error", openaiType: "invalid_request_error", openaiCode: "not_found"},
	kindModelNotFound:     {status: 404, anthropic: "not_found_error", openaiType: "invalid_request_error", openaiCode: "model_not_found", param: "model"},
	kindMethod:            {status: 405, anthropic: "invalid_request_error", openaiType: "invalid_request_error"},
	kindConflict:          {status: http.StatusConflict, anthropic: "invalid_request_error", openaiType: "invalid_request_error", openaiCode: "conflict"},
	kindIdempotencyReused: {status: http.StatusUnprocessableEntity, anthropic: "invalid_request_error", openaiType: "invalid_request_error", openaiCode: "idempotency_key_reused", param: "Idempotency-Key"},
	kindTooLarge:          {status: 413, anthropic: "request_too_large", openaiType: "invalid_request_error", openaiCode: "request_too_large"},
	// Every provider is at its limit, or a lane is full.
	kindRateLimited: {status: 429, anthropic: "rate_limit_error", openaiType: "requests", openaiCode: "rate_limit_exceeded"},
	// The key's budget is spent: no retry helps before it renews
	// (OpenAI's own answer to an exhausted quota).
	kindBudget: {status: 429, anthropic: "rate_limit_error", openaiType: "insufficient_quota", openaiCode: "insufficient_quota"},
	// Every target failed, or a parked request waited its longest.
	kindOverloaded: {status: StatusOverloaded, anthropic: "overloaded_error", openaiType: "server_error", openaiCode: "service_unavailable"},
	// The body memory budget stayed full: 503 in both formats (the relay
	// itself, not an upstream, is short), which both SDKs retry,
	// honouring retry-after.
	kindBodyBudget:       {status: http.StatusServiceUnavailable, anthropic: "overloaded_error", openaiType: "server_error", openaiCode: "service_unavailable", retryAfter: retryAfterBudget},
	kindStoreUnavailable: {status: http.StatusServiceUnavailable, anthropic: "api_error", openaiType: "server_error", openaiCode: "service_unavailable", retryAfter: time.Second},
	// Upstreams answered nonsense or refused the relay's own provider
	// keys: an operator must act.
	kindUpstreamBroken: {status: 502, anthropic: "api_error", openaiType: "server_error", openaiCode: "upstream_error"},
	kindInternal:       {status: 500, anthropic: "api_error", openaiType: "server_error"},
	kindClientGone:     {status: StatusClientClosedRequest},
}

// apiError is an error answered to a client: its class (status, the
// Anthropic error type and OpenAI error code; param and retryAfter may be
// changed per answer), and a message safe to show. The internal cause, if
// any, is logged and never sent.
type apiError struct {
	errorClass
	msg     string
	noRetry bool  // adds x-should-retry: false
	cause   error // logged only
	// estimatedWait, when > 0, is sent as x-relay-estimated-wait-ms:
	// when capacity is expected, on an early answer (admit.go).
	estimatedWait time.Duration
}

func (e *apiError) Error() string { return e.msg }

// newError returns an answer of kind k saying msg.
func newError(k errKind, msg string) *apiError {
	return &apiError{errorClass: errorClasses[k], msg: msg}
}

// The relay's own errors.
func errBadRequest(msg string) *apiError { return newError(kindBadRequest, msg) }
func errAuth(msg string) *apiError       { return newError(kindAuth, msg) }
func errPermission(msg string) *apiError { return newError(kindPermission, msg) }
func errMethod() *apiError               { return newError(kindMethod, "method not allowed") }
func errInternal(msg string) *apiError   { return newError(kindInternal, msg) }

// errNotFound answers something that does not exist: a path, a job or
// batch, or (errModelNotFound) a model.
func errNotFound(msg string) *apiError { return newError(kindNotFound, msg) }

// errModelNotFound answers a model no route serves.
func errModelNotFound(model string) *apiError {
	return newError(kindModelNotFound, "model "+strconv.Quote(model)+" is not served by this relay")
}

// errTooLarge answers a body larger than limit bytes.
func errTooLarge(limit int64) *apiError {
	return newError(kindTooLarge, "request body is larger than "+strconv.FormatInt(limit, 10)+" bytes")
}

// errTooDeep answers JSON nested deeper than limit; what names the part
// of the request (a path, or "" for the whole body).
func errTooDeep(what string, limit int) *apiError {
	msg := (&wire.DepthError{Max: limit}).Error()
	if what != "" {
		msg = what + ": " + msg
	}
	return errBadRequest(msg)
}

// errBodyBudget is the answer when the body memory budget stayed full.
func errBodyBudget() *apiError {
	return newError(kindBodyBudget, "the relay is holding too many request bodies at once; retry after the time given")
}

// errStreamBroken is written as the last event of a stream whose upstream
// broke midway.
func errStreamBroken(err error) *apiError {
	return newError(kindOverloaded, "upstream stream broke: "+streamErrMsg(err))
}

// statusFor returns the HTTP status of e in format f: OpenAI clients get
// 503 where Anthropic ones get 529.
func (e *apiError) statusFor(f workers.Format) int {
	if e.status == StatusOverloaded && f == workers.FormatOpenAI {
		return http.StatusServiceUnavailable
	}
	return e.status
}

// source is where an internal error came from: it decides which rules
// apply, and so the answer to an error no other rule names.
type source uint8

// The sources of internal errors.
const (
	fromDispatcher source = 1 << iota // Dispatcher.Admit and Do
	fromLane                          // Parker.Park and Ticket.Wait
	fromJobs                          // JobService
	fromBatches                       // BatchService
)

// about is what an answer's message may name, and where its error came
// from.
type about struct {
	from source
	id   string // the job's or batch's id
	lane Lane   // the request's lane; MaxWait is what was left of its wait
	// lanes estimates when a client refused by a lane should return.
	lanes Parker
}

// errorRule answers the internal errors from its sources that match
// accepts (nil: all of them) with its kind of answer and a message.
type errorRule struct {
	name  string
	from  source
	match func(err error) bool
	kind  errKind
	msg   func(err error, a *about) string
	// tune, if set, adjusts the answer's retry behaviour.
	tune func(e *apiError, err error, a *about)
}

// is matches errors that wrap target.
func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

// workersError matches a *workers.Error that cond accepts.
func workersError(cond func(we *workers.Error) bool) func(error) bool {
	return func(err error) bool {
		var we *workers.Error
		return errors.As(err, &we) && cond(we)
	}
}

// fixed returns a message that names nothing.
func fixed(msg string) func(error, *about) string {
	return func(error, *about) string { return msg }
}

// errText is the error's own text, which is safe to show.
func errText(err error, _ *about) string { return err.Error() }

// laneRetry sets the retry-after a refusing lane estimates.
func laneRetry(e *apiError, _ error, a *about) { e.retryAfter = a.lanes.RetryAfter(a.lane.Name) }

// upstreamRetry sets the shortest retry-after the upstreams hinted at,
// at least a second.
func upstreamRetry(e *apiError, err error, _ *about) {
	var we *workers.Error
	if errors.As(err, &we) {
		e.retryAfter = we.RetryAfter()
	}
	if e.retryAfter <= 0 {
		e.retryAfter = time.Second
	}
}

// upstreamFailing is upstreamRetry, with x-should-retry: false when no
// retry may help.
func upstreamFailing(e *apiError, err error, a *about) {
	upstreamRetry(e, err, a)
	var we *workers.Error
	e.noRetry = errors.As(err, &we) && !we.ShouldRetry()
}

// errorRules map internal errors to answers; the first rule that applies
// wins, and every source ends with a rule matching all its errors.
var errorRules = []errorRule{
	{name: "lanes.ErrLaneFull", from: fromLane, match: is(lanes.ErrLaneFull), kind: kindRateLimited, tune: laneRetry,
		msg: func(_ error, a *about) string {
			return "lane " + strconv.Quote(a.lane.Name) + " is full; retry after the time given"
		}},
	{name: "lanes.ErrUnknownLane", from: fromLane, match: is(lanes.ErrUnknownLane), kind: kindBadRequest,
		msg: func(_ error, a *about) string {
			return "x-relay-lane: lane " + strconv.Quote(a.lane.Name) + " is not configured"
		}},
	{name: "lanes.ErrWaitExpired", from: fromLane, match: is(lanes.ErrWaitExpired), kind: kindOverloaded,
		tune: func(e *apiError, err error, a *about) { laneRetry(e, err, a); e.noRetry = true },
		msg: func(_ error, a *about) string {
			return "no upstream capacity for this model within " + a.lane.MaxWait.String() + "; retry after the time given"
		}},
	{name: "lanes.ErrCannotServeInTime", from: fromLane, match: is(lanes.ErrCannotServeInTime), kind: kindOverloaded,
		tune: earlyRetry, msg: earlyMsg},
	{name: "lanes: closed, or other", from: fromLane, kind: kindOverloaded, msg: fixed("the relay is shutting down"),
		tune: func(e *apiError, _ error, _ *about) { e.retryAfter = time.Second }},

	{name: "workers.Error: no capacity", from: fromDispatcher, match: workersError((*workers.Error).NoCapacity),
		kind: kindRateLimited, tune: upstreamRetry,
		msg: fixed("every provider for this model is at its limit; retry after the time given")},
	{name: "workers.Error: provider keys refused", from: fromDispatcher, match: workersError((*workers.Error).KeysRefused),
		kind: kindUpstreamBroken, tune: func(e *apiError, _ error, _ *about) { e.noRetry = true },
		msg: fixed("the upstream refused the relay's own key for every provider of this model (not your key); " +
			"the relay's operator must replace it, and retrying does not help until then")},
	{name: "workers.Error: not transient", from: fromDispatcher,
		match: workersError(func(we *workers.Error) bool { return !we.Transient() }), kind: kindUpstreamBroken,
		msg: fixed("the upstream provider answered with an error the relay could not pass on")},
	{name: "workers.Error: failing", from: fromDispatcher, match: workersError(func(*workers.Error) bool { return true }),
		kind: kindOverloaded, tune: upstreamFailing,
		msg: fixed("all upstream providers for this model are failing or overloaded; try again later")},
	{name: "workers.ErrInvalidRequest", from: fromDispatcher, match: is(workers.ErrInvalidRequest), kind: kindBadRequest, msg: errText},
	{name: "workers.ErrUnknownModel", from: fromDispatcher, match: is(workers.ErrUnknownModel), kind: kindModelNotFound,
		msg: fixed("model is not served by this relay")},
	{name: "dispatcher: other", from: fromDispatcher, kind: kindInternal, msg: fixed("internal error")},

	{name: "jobs.ErrNotFound", from: fromJobs, match: is(jobs.ErrNotFound), kind: kindNotFound,
		msg: func(_ error, a *about) string { return "job " + strconv.Quote(a.id) + " not found" }},
	{name: "jobs.ErrExpired", from: fromJobs, match: is(jobs.ErrExpired), kind: kindNotFound, msg: expiredJob},
	// An expired batch is gone, as Anthropic's are.
	{name: "batch not found or expired", from: fromBatches,
		match: func(err error) bool { return errors.Is(err, jobs.ErrNotFound) || errors.Is(err, jobs.ErrExpired) },
		kind:  kindNotFound, msg: func(_ error, a *about) string { return "message batch " + strconv.Quote(a.id) + " not found" }},
	{name: "jobs.ErrBatchNotEnded", from: fromBatches, match: is(jobs.ErrBatchNotEnded), kind: kindConflict,
		msg: func(err error, a *about) string {
			return "message batch " + strconv.Quote(a.id) + " is still processing: " + err.Error()
		}},
	{name: "batch jobs.ErrInvalid", from: fromBatches, match: is(jobs.ErrInvalid), kind: kindBadRequest,
		msg: func(err error, _ *about) string { return strings.TrimPrefix(err.Error(), jobs.ErrInvalid.Error()+": ") }},
	{name: "jobs.ErrBatchEnded", from: fromBatches, match: is(jobs.ErrBatchEnded), kind: kindConflict,
		msg: func(err error, a *about) string {
			return "message batch " + strconv.Quote(a.id) + " cannot be canceled: " + err.Error()
		}},
	{name: "callback not re-sendable", from: fromJobs, kind: kindConflict, msg: errText,
		match: func(err error) bool {
			return errors.Is(err, jobs.ErrNoCallback) || errors.Is(err, jobs.ErrNotFinished) || errors.Is(err, jobs.ErrCallbackPending)
		}},
	{name: "jobs.ErrNotCancelable", from: fromJobs | fromBatches, match: is(jobs.ErrNotCancelable), kind: kindConflict, msg: errText},
	{name: "jobs.ErrIdempotencyMismatch", from: fromJobs | fromBatches, match: is(jobs.ErrIdempotencyMismatch),
		kind: kindIdempotencyReused,
		msg: func(err error, _ *about) string {
			return err.Error() + "; send a new Idempotency-Key for a different request"
		}},
	{name: "jobs.ErrInvalid", from: fromJobs | fromBatches, match: is(jobs.ErrInvalid), kind: kindBadRequest, msg: errText},
	{name: "jobs.ErrTooLarge", from: fromJobs | fromBatches, match: is(jobs.ErrTooLarge), kind: kindTooLarge,
		msg: fixed("the job is larger than the job store accepts")},
	{name: "job store: other", from: fromJobs | fromBatches, kind: kindStoreUnavailable,
		msg: fixed("the job store is unavailable; try again")},
}

// expiredJob says when an expired job was created, when its id tells.
func expiredJob(_ error, a *about) string {
	msg := "job " + strconv.Quote(a.id) + " has expired: finished jobs and their results are kept for a limited time"
	if t, err := jobs.TimeOf(a.id); err == nil {
		msg += " (it was created at " + t.UTC().Format(time.RFC3339) + ")"
	}
	return msg
}

// ruleFor returns the rule that answers err from a.from.
func ruleFor(err error, from source) *errorRule {
	for i := range errorRules {
		r := &errorRules[i]
		if r.from&from != 0 && (r.match == nil || r.match(err)) {
			return r
		}
	}
	return nil // unreachable: every source ends with a catch-all
}

// answerFor maps an internal error to the client's answer, per
// errorRules; err is kept as the logged cause.
func answerFor(err error, a *about) *apiError {
	r := ruleFor(err, a.from)
	e := newError(r.kind, r.msg(err, a))
	if r.tune != nil {
		r.tune(e, err, a)
	}
	e.cause = err
	return e
}

// body renders e in format f.
func (e *apiError) body(f workers.Format, requestID string) []byte {
	b := make([]byte, 0, 160+len(e.msg))
	if f == workers.FormatAnthropic {
		b = append(b, `{"type":"error","error":{"type":`...)
		b = wire.AppendString(b, e.anthropic)
		b = append(b, `,"message":`...)
		b = wire.AppendString(b, e.msg)
		b = append(b, `},"request_id":`...)
		b = wire.AppendString(b, requestID)
		return append(b, '}')
	}
	b = append(b, `{"error":{"message":`...)
	b = wire.AppendString(b, e.msg)
	b = append(b, `,"type":`...)
	b = wire.AppendString(b, e.openaiType)
	b = append(b, `,"param":`...)
	b = appendNullable(b, e.param)
	b = append(b, `,"code":`...)
	b = appendNullable(b, e.openaiCode)
	return append(b, `}}`...)
}

// streamBody renders e as one server-sent event for a stream already under
// way: Anthropic's "event: error", or an OpenAI chunk with an "error" key.
func (e *apiError) streamBody(f workers.Format) []byte {
	if f == workers.FormatAnthropic {
		data := []byte(`{"type":"error","error":{"type":`)
		data = wire.AppendString(data, e.anthropic)
		data = append(data, `,"message":`...)
		data = wire.AppendString(data, e.msg)
		data = append(data, `}}`...)
		return wire.AppendEvent(nil, "error", data)
	}
	return wire.AppendEvent(nil, "", e.body(f, ""))
}

func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return wire.AppendString(b, s)
}

// retryAfterValue renders d as whole seconds for retry-after, at least 1.
func retryAfterValue(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
