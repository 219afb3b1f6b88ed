package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/wire"
)

// apiError is an error answered to a client: the status, the Anthropic
// error type and OpenAI error code, and a message safe to show. The
// internal cause, if any, is logged and never sent.
type apiError struct {
	status     int
	anthropic  string // Anthropic error.type
	openaiType string // OpenAI error.type
	openaiCode string // OpenAI error.code ("" = null)
	param      string // OpenAI error.param ("" = null)
	msg        string
	retryAfter time.Duration // > 0 adds retry-after headers
	noRetry    bool          // adds x-should-retry: false
	cause      error         // logged only
}

func (e *apiError) Error() string { return e.msg }

// The relay's own errors, per SPEC §3. OpenAI's column names error codes;
// their types follow OpenAI's own usage.
func errBadRequest(msg string) *apiError {
	return &apiError{status: 400, anthropic: "invalid_request_error", openaiType: "invalid_request_error", msg: msg}
}

func errAuth(msg string) *apiError {
	return &apiError{status: 401, anthropic: "authentication_error", openaiType: "invalid_request_error", openaiCode: "invalid_api_key", msg: msg}
}

func errPermission(msg string) *apiError {
	return &apiError{status: 403, anthropic: "permission_error", openaiType: "invalid_request_error", openaiCode: "permission_denied", msg: msg}
}

func errNotFound(msg, param string) *apiError {
	code := "not_found"
	if param == "model" {
		code = "model_not_found"
	}
	return &apiError{status: 404, anthropic: "not_found_error", openaiType: "invalid_request_error", openaiCode: code, param: param, msg: msg}
}

func errTooLarge(limit int64) *apiError {
	return &apiError{status: 413, anthropic: "request_too_large", openaiType: "invalid_request_error", openaiCode: "request_too_large",
		msg: "request body is larger than " + strconv.FormatInt(limit, 10) + " bytes"}
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

func errMethod() *apiError {
	return &apiError{status: 405, anthropic: "invalid_request_error", openaiType: "invalid_request_error", msg: "method not allowed"}
}

// errRateLimited is the answer when every provider is at its limit (and,
// with lanes, when a lane is full).
func errRateLimited(msg string, retryAfter time.Duration) *apiError {
	return &apiError{status: 429, anthropic: "rate_limit_error", openaiType: "requests", openaiCode: "rate_limit_exceeded",
		msg: msg, retryAfter: retryAfter}
}

// errOverloaded is the answer when every target failed (and, with lanes,
// when a parked request waited its longest).
func errOverloaded(msg string, retryAfter time.Duration, noRetry bool) *apiError {
	return &apiError{status: 529, anthropic: "overloaded_error", openaiType: "server_error", openaiCode: "service_unavailable",
		msg: msg, retryAfter: retryAfter, noRetry: noRetry}
}

// errBodyBudget is the answer when the body memory budget stayed full:
// 503 in both formats (the relay itself, not an upstream, is short), which
// both SDKs retry, honouring retry-after. Anthropic's error type is
// overloaded_error, OpenAI's code service_unavailable, as for the
// relay's other overload answers (SPEC §3).
func errBodyBudget() *apiError {
	return &apiError{status: http.StatusServiceUnavailable, anthropic: "overloaded_error", openaiType: "server_error",
		openaiCode: "service_unavailable", retryAfter: retryAfterBudget,
		msg: "the relay is holding too many request bodies at once; retry after the time given"}
}

// errUpstreamBroken is the answer when upstreams answered nonsense or
// refused the relay's own provider keys: an operator must act.
func errUpstreamBroken(msg string) *apiError {
	return &apiError{status: 502, anthropic: "api_error", openaiType: "server_error", openaiCode: "upstream_error", msg: msg}
}

func errInternal(msg string) *apiError {
	return &apiError{status: 500, anthropic: "api_error", openaiType: "server_error", msg: msg}
}

// statusFor returns the HTTP status of e in format f: OpenAI clients get
// 503 where Anthropic ones get 529.
func (e *apiError) statusFor(f workers.Format) int {
	if e.status == 529 && f == workers.FormatOpenAI {
		return http.StatusServiceUnavailable
	}
	return e.status
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
