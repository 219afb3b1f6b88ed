package wire

import (
	"bytes"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Usage counts the tokens of one upstream call.
type Usage struct {
	// Input is the number of input (prompt) tokens, cache reads and writes included.
	Input int
	// Output is the number of output (completion) tokens.
	Output int
	// Known reports whether the upstream stated the usage.
	Known bool
}

// AnthropicUsage reads usage from a non-streaming Messages response.
func AnthropicUsage(body []byte) Usage {
	u := gjson.GetBytes(body, "usage")
	if !u.Exists() {
		return Usage{}
	}
	return anthropicUsage(u)
}

func anthropicUsage(u gjson.Result) Usage {
	return Usage{
		Input: int(u.Get("input_tokens").Int() + u.Get("cache_creation_input_tokens").Int() +
			u.Get("cache_read_input_tokens").Int()),
		Output: int(u.Get("output_tokens").Int()),
		Known:  true,
	}
}

// OpenAIUsage reads usage from a non-streaming Chat Completions response.
func OpenAIUsage(body []byte) Usage {
	u := gjson.GetBytes(body, "usage")
	if !u.IsObject() {
		return Usage{}
	}
	return Usage{
		Input:  int(u.Get("prompt_tokens").Int()),
		Output: int(u.Get("completion_tokens").Int()),
		Known:  true,
	}
}

// ObserveAnthropic updates u from one Anthropic stream event. message_start carries
// the input counts; every message_delta carries cumulative totals that
// overwrite, not add.
func (u *Usage) ObserveAnthropic(name string, data []byte) {
	switch name {
	case "message_start":
		mu := gjson.GetBytes(data, "message.usage")
		if mu.Exists() {
			*u = anthropicUsage(mu)
		}
	case "message_delta":
		du := gjson.GetBytes(data, "usage")
		if !du.Exists() {
			return
		}
		u.Known = true
		if v := du.Get("output_tokens"); v.Exists() {
			u.Output = int(v.Int())
		}
		in, cw, cr := du.Get("input_tokens"), du.Get("cache_creation_input_tokens"), du.Get("cache_read_input_tokens")
		if in.Exists() || cw.Exists() || cr.Exists() {
			u.Input = int(in.Int() + cw.Int() + cr.Int())
		}
	}
}

var promptTokens = []byte(`"prompt_tokens"`)

// ObserveOpenAI updates u from one Chat Completions stream chunk; only the
// include_usage chunk (and providers that send usage on the last chunk)
// carry counts.
func (u *Usage) ObserveOpenAI(data []byte) {
	if !bytes.Contains(data, promptTokens) {
		return
	}
	if v := OpenAIUsage(data); v.Known {
		*u = v
	}
}

// EstimateInputTokens estimates the input tokens of a Messages or Chat
// Completions body: the characters of every string under messages, system
// and tools, divided by four, at least 1. It recurses once per level of
// nesting: body must have passed Peek, which bounds it.
func EstimateInputTokens(body []byte) int {
	chars := 0
	var walk func(r gjson.Result)
	walk = func(r gjson.Result) {
		switch {
		case r.Type == gjson.String:
			chars += utf8.RuneCountInString(r.Str)
		case r.IsArray() || r.IsObject():
			r.ForEach(func(_, v gjson.Result) bool { walk(v); return true })
		}
	}
	for _, path := range []string{"messages", "system", "tools"} {
		walk(gjson.GetBytes(body, path))
	}
	return max(1, chars/4)
}
