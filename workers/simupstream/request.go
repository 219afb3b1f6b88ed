package simupstream

import (
	"unsafe"

	"github.com/tidwall/gjson"
)

// request holds the fields of a request body the server needs.
type request struct {
	model        string // the raw JSON string literal, quotes included
	stream       bool
	includeUsage bool  // stream_options.include_usage
	maxTokens    int64 // max_tokens or max_completion_tokens; 0 = not set
	inputTokens  int
	answer       *answer // the Echo-mode reply; nil outside Echo mode
}

// parseRequest reads body in one pass. It returns a client-facing message
// when the body is not valid JSON or has no model.
//
// The body is viewed as a string without copying, so the returned model
// aliases body: it is valid only while body is unchanged.
func parseRequest(body []byte) (request, string) {
	var req request
	if len(body) == 0 {
		return req, "request body is empty"
	}
	js := unsafe.String(unsafe.SliceData(body), len(body))
	if !gjson.Valid(js) {
		return req, "request body is not valid JSON"
	}
	root := gjson.Parse(js)
	if !root.IsObject() {
		return req, "request body must be a JSON object"
	}
	var textLen int
	var maxTokens, maxCompletionTokens int64
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			if v.Type == gjson.String && v.Str != "" {
				req.model = v.Raw
			}
		case "stream":
			req.stream = v.Type == gjson.True
		case "stream_options":
			req.includeUsage = v.Get("include_usage").Type == gjson.True
		case "max_tokens":
			maxTokens = v.Int()
		case "max_completion_tokens":
			maxCompletionTokens = v.Int()
		case "system":
			textLen += contentLen(v)
		case "messages":
			v.ForEach(func(_, m gjson.Result) bool {
				textLen += contentLen(m.Get("content"))
				return true
			})
		}
		return true
	})
	if req.model == "" {
		return req, "model: Field required"
	}
	req.maxTokens = maxTokens
	if maxCompletionTokens > 0 {
		req.maxTokens = maxCompletionTokens
	}
	req.inputTokens = max(1, textLen/4)
	return req, ""
}

// contentLen returns the length of the text in a message content or a
// system prompt: a string, or an array of strings and blocks with "text"
// (and, for tool results, nested "content").
func contentLen(v gjson.Result) int {
	switch {
	case v.Type == gjson.String:
		return len(v.Str)
	case v.IsArray():
		n := 0
		v.ForEach(func(_, part gjson.Result) bool {
			if part.Type == gjson.String {
				n += len(part.Str)
			} else if part.IsObject() {
				n += contentLen(part.Get("text")) + contentLen(part.Get("content"))
			}
			return true
		})
		return n
	}
	return 0
}
