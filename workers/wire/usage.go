package wire

import (
	"bytes"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Usage counts the tokens of one upstream call, with one definition for
// both APIs: Input is every input token, cache reads and writes included
// (OpenAI's prompt_tokens; Anthropic's input_tokens plus
// cache_creation_input_tokens plus cache_read_input_tokens), and CacheRead
// and CacheWrite say how many of them were read from or written to the
// prompt cache. The part of Input that touched no cache is
// Input - CacheRead - CacheWrite (Uncached).
type Usage struct {
	// Input is the number of input (prompt) tokens, cache reads and writes included.
	Input int
	// Output is the number of output (completion) tokens.
	Output int
	// CacheRead is the part of Input read from the prompt cache
	// (Anthropic cache_read_input_tokens, OpenAI
	// prompt_tokens_details.cached_tokens).
	CacheRead int
	// CacheWrite is the part of Input written to the prompt cache
	// (Anthropic cache_creation_input_tokens; OpenAI reports none).
	CacheWrite int
	// Known reports whether the upstream stated the usage.
	Known bool
}

// Uncached returns the input tokens that were neither read from nor
// written to the cache.
func (u Usage) Uncached() int { return max(u.Input-u.CacheRead-u.CacheWrite, 0) }

// maxTokens bounds every count read from an upstream: garbage (negative
// or absurd numbers) never makes a sum overflow or a count negative.
const maxTokens = 1 << 40

// count reads a token count, clamped to [0, maxTokens].
func count(r gjson.Result) int {
	return int(min(max(r.Int(), 0), maxTokens))
}

// AnthropicUsage reads usage from a non-streaming Messages response.
func AnthropicUsage(body []byte) Usage {
	u := gjson.GetBytes(body, "usage")
	if !u.IsObject() {
		return Usage{}
	}
	return anthropicUsage(u)
}

func anthropicUsage(u gjson.Result) Usage {
	cw, cr := count(u.Get("cache_creation_input_tokens")), count(u.Get("cache_read_input_tokens"))
	return Usage{
		Input:      count(u.Get("input_tokens")) + cw + cr,
		Output:     count(u.Get("output_tokens")),
		CacheRead:  cr,
		CacheWrite: cw,
		Known:      true,
	}
}

// OpenAIUsage reads usage from a non-streaming Chat Completions response.
// prompt_tokens already counts the cached tokens.
func OpenAIUsage(body []byte) Usage {
	u := gjson.GetBytes(body, "usage")
	if !u.IsObject() {
		return Usage{}
	}
	in := count(u.Get("prompt_tokens"))
	return Usage{
		Input:     in,
		Output:    count(u.Get("completion_tokens")),
		CacheRead: min(count(u.Get("prompt_tokens_details.cached_tokens")), in),
		Known:     true,
	}
}

// ObserveAnthropic updates u from one Anthropic stream event. message_start
// carries the input counts; every message_delta carries cumulative totals
// that overwrite, not add: each count it states replaces that count, and
// the others are kept.
func (u *Usage) ObserveAnthropic(name string, data []byte) {
	switch name {
	case "message_start":
		mu := gjson.GetBytes(data, "message.usage")
		if mu.IsObject() {
			*u = anthropicUsage(mu)
		}
	case "message_delta":
		du := gjson.GetBytes(data, "usage")
		if !du.IsObject() {
			return
		}
		u.Known = true
		if v := du.Get("output_tokens"); v.Exists() {
			u.Output = count(v)
		}
		plain := u.Uncached()
		if v := du.Get("input_tokens"); v.Exists() {
			plain = count(v)
		}
		if v := du.Get("cache_creation_input_tokens"); v.Exists() {
			u.CacheWrite = count(v)
		}
		if v := du.Get("cache_read_input_tokens"); v.Exists() {
			u.CacheRead = count(v)
		}
		u.Input = plain + u.CacheRead + u.CacheWrite
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
