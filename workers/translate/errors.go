package translate

import (
	"net/http"
	"strconv"

	"github.com/tidwall/gjson"

	"github.com/relaygw/relay/workers/wire"
)

// OpenAIToAnthropicError converts a non-2xx OpenAI error body into an Anthropic
// error body, {"type":"error","error":{"type":...,"message":...}}. The message
// is kept; the type follows the HTTP status as Anthropic's does (429 →
// rate_limit_error, 529 or 503 → overloaded_error, …), except that an
// insufficient_quota code becomes billing_error. A body that is not a
// recognisable error, or nests deeper than maxDepth, gets a generic message
// naming the status.
func OpenAIToAnthropicError(status int, body []byte, maxDepth int) []byte {
	msg, typ, code := readError(body, maxDepth)
	t := anthropicErrorType(status)
	if code == "insufficient_quota" || typ == "insufficient_quota" {
		t = "billing_error"
	}
	return appendAnthropicError(make([]byte, 0, len(msg.Raw)+96), t, msg, status)
}

// AnthropicToOpenAIError converts a non-2xx Anthropic error body into an OpenAI
// error body, {"error":{"message":...,"type":...,"param":null,"code":...}}. The
// message is kept and the Anthropic error type is mapped to an OpenAI type and
// code (rate_limit_error → rate_limit_exceeded, overloaded_error →
// service_unavailable, …); without a recognisable type they follow the status.
// A body that is not a recognisable error, or nests deeper than maxDepth,
// gets a generic message naming the status.
func AnthropicToOpenAIError(status int, body []byte, maxDepth int) []byte {
	msg, typ, _ := readError(body, maxDepth)
	if typ == "" {
		typ = anthropicErrorType(status)
	}
	oType, code := openAIErrorType(typ)
	return appendOpenAIError(make([]byte, 0, len(msg.Raw)+128), oType, code, msg, status)
}

// readError reads the message, type and code of an error body in either
// format, or the common {"error":"..."}, {"message":"..."} and {"detail":"..."}
// shapes of OpenAI-compatible servers. msg does not exist when none is found,
// or when body nests deeper than maxDepth.
func readError(body []byte, maxDepth int) (msg gjson.Result, typ, code string) {
	if wire.CheckDepth(body, maxDepth) != nil || !gjson.ValidBytes(body) {
		return gjson.Result{}, "", ""
	}
	root := gjson.Parse(string(body))
	if !root.IsObject() {
		return gjson.Result{}, "", ""
	}
	e := root.Get("error")
	switch {
	case e.IsObject():
		msg = e.Get("message")
		typ = e.Get("type").String()
		code = e.Get("code").String()
	case e.Type == gjson.String:
		msg = e
	default:
		msg = root.Get("message")
		if msg.Type != gjson.String {
			msg = root.Get("detail")
		}
	}
	if msg.Type != gjson.String || msg.Str == "" {
		msg = gjson.Result{}
	}
	return msg, typ, code
}

// appendMessage appends msg, or a generic message for status when msg does not
// exist.
func appendMessage(b []byte, msg gjson.Result, status int) []byte {
	if msg.Exists() {
		return appendStr(b, msg)
	}
	b = append(b, `"upstream error: HTTP `...)
	b = strconv.AppendInt(b, int64(status), 10)
	if text := http.StatusText(status); text != "" {
		b = append(b, ' ')
		b = append(b, text...)
	}
	return append(b, '"')
}

func appendAnthropicError(b []byte, typ string, msg gjson.Result, status int) []byte {
	b = append(b, `{"type":"error","error":{"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"message":`...)
	b = appendMessage(b, msg, status)
	return append(b, `}}`...)
}

func appendOpenAIError(b []byte, typ, code string, msg gjson.Result, status int) []byte {
	b = append(b, `{"error":{"message":`...)
	b = appendMessage(b, msg, status)
	b = append(b, `,"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"param":null,"code":`...)
	if code == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, code)
	}
	return append(b, `}}`...)
}

// anthropicErrorType is the Anthropic error type for an HTTP status.
func anthropicErrorType(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusPaymentRequired:
		return "billing_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return "timeout_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusServiceUnavailable, 529:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// openAIErrorType maps an Anthropic error type to an OpenAI error type and
// code ("" for a null code). Unknown types are kept as they are.
func openAIErrorType(anthropicType string) (typ, code string) {
	switch anthropicType {
	case "invalid_request_error":
		return "invalid_request_error", ""
	case "authentication_error":
		return "invalid_request_error", "invalid_api_key"
	case "permission_error":
		return "invalid_request_error", "permission_denied"
	case "not_found_error":
		return "invalid_request_error", "model_not_found"
	case "request_too_large":
		return "invalid_request_error", "request_too_large"
	case "rate_limit_error":
		return "rate_limit_error", "rate_limit_exceeded"
	case "billing_error":
		return "insufficient_quota", "insufficient_quota"
	case "timeout_error":
		return "server_error", "timeout"
	case "overloaded_error":
		return "server_error", "service_unavailable"
	case "api_error":
		return "server_error", ""
	}
	return anthropicType, ""
}

// anthropicStreamErrorType maps an OpenAI in-stream error, which carries no
// HTTP status, to an Anthropic error type.
func anthropicStreamErrorType(typ, code string) string {
	switch {
	case code == "insufficient_quota" || typ == "insufficient_quota":
		return "billing_error"
	case code == "rate_limit_exceeded" || typ == "rate_limit_error" || typ == "requests" || typ == "tokens":
		return "rate_limit_error"
	case code == "service_unavailable" || typ == "overloaded_error":
		return "overloaded_error"
	case typ == "invalid_request_error":
		return "invalid_request_error"
	}
	return "api_error"
}
