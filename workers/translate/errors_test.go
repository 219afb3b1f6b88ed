package translate

import "testing"

func TestOpenAIToAnthropicError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		in     string
		want   string
	}{
		{
			name:   "rate limit",
			status: 429,
			in:     `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`,
			want:   `{"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached"}}`,
		},
		{
			name:   "insufficient quota",
			status: 429,
			in:     `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`,
			want:   `{"type":"error","error":{"type":"billing_error","message":"You exceeded your current quota"}}`,
		},
		{
			name:   "bad request",
			status: 400,
			in:     `{"error":{"message":"This model's maximum context length is 128000 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`,
			want:   `{"type":"error","error":{"type":"invalid_request_error","message":"This model's maximum context length is 128000 tokens"}}`,
		},
		{name: "auth", status: 401, in: `{"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}}`, want: `{"type":"error","error":{"type":"authentication_error","message":"bad key"}}`},
		{name: "forbidden", status: 403, in: `{"error":"nope"}`, want: `{"type":"error","error":{"type":"permission_error","message":"nope"}}`},
		{name: "not found", status: 404, in: `{"message":"model not found"}`, want: `{"type":"error","error":{"type":"not_found_error","message":"model not found"}}`},
		{name: "too large", status: 413, in: `{"detail":"too big"}`, want: `{"type":"error","error":{"type":"request_too_large","message":"too big"}}`},
		{name: "overloaded", status: 503, in: `{"error":{"message":"busy"}}`, want: `{"type":"error","error":{"type":"overloaded_error","message":"busy"}}`},
		{name: "server error", status: 500, in: `{"error":{"message":"boom","type":"server_error"}}`, want: `{"type":"error","error":{"type":"api_error","message":"boom"}}`},
		{name: "timeout", status: 504, in: `<html>Gateway Timeout</html>`, want: `{"type":"error","error":{"type":"timeout_error","message":"upstream error: HTTP 504 Gateway Timeout"}}`},
		{name: "empty body", status: 502, in: ``, want: `{"type":"error","error":{"type":"api_error","message":"upstream error: HTTP 502 Bad Gateway"}}`},
		{name: "unknown 4xx", status: 422, in: `{"error":{"message":""}}`, want: `{"type":"error","error":{"type":"invalid_request_error","message":"upstream error: HTTP 422 Unprocessable Entity"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := OpenAIToAnthropicError(tt.status, []byte(tt.in), testDepth)
			assertJSONEqual(t, "OpenAIToAnthropicError", got, tt.want)
		})
	}
}

func TestAnthropicToOpenAIError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		in     string
		want   string
	}{
		{
			name:   "overloaded",
			status: 529,
			in:     `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}`,
			want:   `{"error":{"message":"Overloaded","type":"server_error","param":null,"code":"service_unavailable"}}`,
		},
		{
			name:   "rate limit",
			status: 429,
			in:     `{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}`,
			want:   `{"error":{"message":"Number of request tokens has exceeded your per-minute rate limit","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`,
		},
		{
			name:   "invalid request",
			status: 400,
			in:     `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}`,
			want:   `{"error":{"message":"prompt is too long: 210000 tokens > 200000 maximum","type":"invalid_request_error","param":null,"code":null}}`,
		},
		{name: "auth", status: 401, in: `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`, want: `{"error":{"message":"invalid x-api-key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`},
		{name: "permission", status: 403, in: `{"type":"error","error":{"type":"permission_error","message":"no"}}`, want: `{"error":{"message":"no","type":"invalid_request_error","param":null,"code":"permission_denied"}}`},
		{name: "not found", status: 404, in: `{"type":"error","error":{"type":"not_found_error","message":"model: x"}}`, want: `{"error":{"message":"model: x","type":"invalid_request_error","param":null,"code":"model_not_found"}}`},
		{name: "billing", status: 402, in: `{"type":"error","error":{"type":"billing_error","message":"credit"}}`, want: `{"error":{"message":"credit","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`},
		{name: "api error", status: 500, in: `{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`, want: `{"error":{"message":"Internal server error","type":"server_error","param":null,"code":null}}`},
		{name: "type from status", status: 429, in: `{"error":{"message":"slow down"}}`, want: `{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`},
		{name: "not an error", status: 503, in: `upstream connect error`, want: `{"error":{"message":"upstream error: HTTP 503 Service Unavailable","type":"server_error","param":null,"code":"service_unavailable"}}`},
		{name: "unknown status text", status: 599, in: `{}`, want: `{"error":{"message":"upstream error: HTTP 599","type":"server_error","param":null,"code":null}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AnthropicToOpenAIError(tt.status, []byte(tt.in), testDepth)
			assertJSONEqual(t, "AnthropicToOpenAIError", got, tt.want)
		})
	}
}
