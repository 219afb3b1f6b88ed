package workers

import (
	"strings"

	"github.com/tidwall/gjson"
)

// What an upstream error status means (see also README, "Upstream errors"):
//
//	2xx                     the answer
//	400, 404, 413, 422, ... the request's fault: passed to the caller, the
//	                        provider keeps serving (a ClientError outcome)
//	401                     the provider's key is refused: the provider is
//	                        set aside for 30 s and the request moves on
//	403                     passed to the caller, unless the body blames the
//	                        key or account (keyProblem) and a key probe
//	                        (KeyProber) is refused too: then as a 401
//	408, 429, 5xx, 529      transient: the request moves on (retryableStatus)

// openAIKeyProblems are the error.type and error.code values with which
// OpenAI and OpenAI-compatible APIs blame a 403 on the key, its project or
// organisation, or where the relay calls from, rather than on the request.
var openAIKeyProblems = map[string]bool{
	"invalid_api_key":                      true,
	"unsupported_country_region_territory": true,
	"request_forbidden":                    true,
	"account_deactivated":                  true,
	"access_terminated":                    true,
	"invalid_organization":                 true,
	"insufficient_quota":                   true,
	"authentication_error":                 true,
	"permission_error":                     true,
	"permission_denied":                    true,
}

// keyProblem reports whether the body of an upstream 403 may mean that the
// provider's key itself lacks permission, so that a key probe should
// decide: Anthropic's permission_error and authentication_error, OpenAI's
// key, account and region codes (openAIKeyProblems), and a body that is not
// JSON at all, which comes from a proxy or firewall in front of the API
// rather than from the API. Any other 403 (a model or feature the request
// asked for and may not have, a content policy) is the request's alone.
func keyProblem(f Format, body []byte) bool {
	if !gjson.ValidBytes(body) {
		return true
	}
	e := gjson.GetBytes(body, "error")
	typ := strings.ToLower(e.Get("type").String())
	if f == FormatAnthropic {
		return typ == "permission_error" || typ == "authentication_error"
	}
	return openAIKeyProblems[typ] || openAIKeyProblems[strings.ToLower(e.Get("code").String())]
}
