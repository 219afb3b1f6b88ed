package simupstream

import "net/http"

// anthropicErrorType returns Anthropic's error.type for status.
func anthropicErrorType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case 529:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// openAIErrorType returns OpenAI's error.type and error.code for status; an
// empty code is sent as null.
func openAIErrorType(status int) (typ, code string) {
	switch status {
	case http.StatusUnauthorized:
		return "invalid_request_error", "invalid_api_key"
	case http.StatusTooManyRequests:
		return "requests", "rate_limit_exceeded"
	case 529:
		return "server_error", "overloaded"
	}
	if status >= 500 {
		return "server_error", ""
	}
	return "invalid_request_error", ""
}

// writeError answers status with msg in the exchange's error shape.
func (x *exchange) writeError(status int, msg string) {
	p := x.scratch()
	b := (*p)[:0]
	if x.format == formatAnthropic {
		b = append(b, `{"type":"error","error":{"type":"`...)
		b = append(b, anthropicErrorType(status)...)
		b = append(b, `","message":`...)
		b = appendJSONString(b, msg)
		b = append(b, `},"request_id":"`...)
		b = append(b, x.rid...)
		b = append(b, `"}`...)
	} else {
		typ, code := openAIErrorType(status)
		b = append(b, `{"error":{"message":`...)
		b = appendJSONString(b, msg)
		b = append(b, `,"type":"`...)
		b = append(b, typ...)
		b = append(b, `","param":null,"code":`...)
		if code == "" {
			b = append(b, "null"...)
		} else {
			b = appendJSONString(b, code)
		}
		b = append(b, "}}"...)
	}
	*p = b
	x.w.Header()["Content-Type"] = []string{"application/json"}
	x.writeHeader(status)
	_, _ = x.w.Write(b)
}
