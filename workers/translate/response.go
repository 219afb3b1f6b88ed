package translate

import (
	"fmt"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
)

// OpenAIToAnthropicResponse converts a 2xx OpenAI chat.completion body into an
// Anthropic Message body. The first choice is used: its text (or refusal)
// becomes a text block and its tool_calls become tool_use blocks;
// finish_reason maps to stop_reason (stop→end_turn, length→max_tokens,
// tool_calls→tool_use, content_filter→refusal). Usage follows Anthropic's
// convention that input_tokens excludes cached tokens: cached prompt tokens
// become cache_read_input_tokens (and cache writes
// cache_creation_input_tokens), and the rest of prompt_tokens input_tokens.
//
// A body nested deeper than maxDepth is refused with an error wrapping
// ErrInvalidBody and a *wire.DepthError; tool call arguments nested deeper
// are passed on as {"raw": arguments}.
func OpenAIToAnthropicResponse(body []byte, maxDepth int) ([]byte, error) {
	root, err := parseObject(body, maxDepth)
	if err != nil {
		return nil, fmt.Errorf("convert openai response: %w", err)
	}
	choices := root.Get("choices")
	if !choices.IsArray() {
		return nil, fmt.Errorf("convert openai response: choices is not an array: %w", ErrInvalidBody)
	}
	choice := firstChoice(choices)
	msg := choice.Get("message")

	b := make([]byte, 0, len(body)+128)
	b = append(b, `{"id":"msg_`...)
	b = appendStrInner(b, root.Get("id"))
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = appendStr(b, root.Get("model"))
	b = append(b, `,"content":[`...)
	n := 0
	mark := len(b)
	b = append(b, `{"type":"text","text":"`...)
	start := len(b)
	b = appendJoinedText(b, msg.Get("content"), "")
	if len(b) == start {
		b = appendJoinedText(b, msg.Get("refusal"), "")
	}
	if len(b) == start {
		b = b[:mark]
	} else {
		b = append(b, `"}`...)
		n++
	}
	msg.Get("tool_calls").ForEach(func(_, call gjson.Result) bool {
		if n > 0 {
			b = append(b, ',')
		}
		fn := call.Get("function")
		b = append(b, `{"type":"tool_use","id":`...)
		b = appendStr(b, call.Get("id"))
		b = append(b, `,"name":`...)
		b = appendStr(b, fn.Get("name"))
		b = append(b, `,"input":`...)
		b = appendToolInput(b, fn.Get("arguments"), maxDepth)
		b = append(b, '}')
		n++
		return true
	})
	b = append(b, `],"stop_reason":"`...)
	b = append(b, stopReason(choice.Get("finish_reason").Str, msg.Get("tool_calls.#").Int() > 0)...)
	b = append(b, `","stop_sequence":null,"usage":`...)
	b = appendAnthropicUsage(b, readOpenAIUsage(root.Get("usage")))
	return append(b, '}'), nil
}

// AnthropicToOpenAIResponse converts a 2xx Anthropic Message body into an OpenAI
// chat.completion body with created set to the current time. Text blocks are
// joined into message.content, tool_use blocks become tool_calls (thinking
// and server tool blocks are dropped), stop_reason maps to finish_reason, and
// usage becomes prompt_tokens (input plus cache tokens), completion_tokens,
// total_tokens and prompt_tokens_details.cached_tokens.
// A body nested deeper than maxDepth is refused with an error wrapping
// ErrInvalidBody and a *wire.DepthError.
func AnthropicToOpenAIResponse(body []byte, maxDepth int) ([]byte, error) {
	return anthropicToOpenAIResponse(body, time.Now().Unix(), maxDepth)
}

func anthropicToOpenAIResponse(body []byte, created int64, maxDepth int) ([]byte, error) {
	root, err := parseObject(body, maxDepth)
	if err != nil {
		return nil, fmt.Errorf("convert anthropic response: %w", err)
	}
	content := root.Get("content")
	if !content.IsArray() {
		return nil, fmt.Errorf("convert anthropic response: content is not an array: %w", ErrInvalidBody)
	}

	b := make([]byte, 0, len(body)+192)
	b = append(b, `{"id":"chatcmpl-`...)
	b = appendStrInner(b, root.Get("id"))
	b = append(b, `","object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = appendStr(b, root.Get("model"))
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	mark := len(b)
	b = append(b, '"')
	start := len(b)
	b = appendJoinedText(b, content, "")
	hasText := len(b) > start
	if hasText {
		b = append(b, '"')
	} else {
		b = b[:mark]
	}
	ncalls := 0
	content.ForEach(func(_, block gjson.Result) bool {
		if block.Get("type").Str != "tool_use" {
			return true
		}
		if ncalls == 0 {
			if !hasText {
				b = append(b, "null"...)
			}
			b = append(b, `,"refusal":null,"tool_calls":[`...)
		} else {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = appendStr(b, block.Get("id"))
		b = append(b, `,"type":"function","function":{"name":`...)
		b = appendStr(b, block.Get("name"))
		b = append(b, `,"arguments":`...)
		b = appendArguments(b, block.Get("input"))
		b = append(b, `}}`...)
		ncalls++
		return true
	})
	switch {
	case ncalls > 0:
		b = append(b, ']')
	case hasText:
		b = append(b, `,"refusal":null`...)
	default:
		b = append(b, `"","refusal":null`...)
	}
	b = append(b, `},"logprobs":null,"finish_reason":"`...)
	b = append(b, finishReason(root.Get("stop_reason").Str, ncalls > 0)...)
	b = append(b, `"}],"usage":`...)
	b = appendOpenAIUsage(b, readAnthropicUsage(root.Get("usage")))
	return append(b, '}'), nil
}

// firstChoice returns the choice with index 0, or the first one.
func firstChoice(choices gjson.Result) gjson.Result {
	var first gjson.Result
	choices.ForEach(func(_, c gjson.Result) bool {
		if !first.Exists() {
			first = c
		}
		if c.Get("index").Int() == 0 {
			first = c
			return false
		}
		return true
	})
	return first
}

// stopReason maps an OpenAI finish_reason to an Anthropic stop_reason.
func stopReason(finish string, toolCalls bool) string {
	switch finish {
	case "length":
		return "max_tokens"
	case "tool_calls", "function_call":
		return "tool_use"
	case "content_filter":
		return "refusal"
	case "stop":
		return "end_turn"
	}
	if toolCalls {
		return "tool_use"
	}
	return "end_turn"
}

// finishReason maps an Anthropic stop_reason to an OpenAI finish_reason.
func finishReason(stop string, toolCalls bool) string {
	switch stop {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	case "end_turn", "stop_sequence", "pause_turn":
		return "stop"
	}
	if toolCalls {
		return "tool_calls"
	}
	return "stop"
}

// usage is token usage in Anthropic terms: input excludes cache reads and
// writes.
type usage struct {
	input, output, cacheRead, cacheWrite int64
}

// readOpenAIUsage reads an OpenAI usage object, splitting cached tokens out of
// prompt_tokens.
func readOpenAIUsage(u gjson.Result) usage {
	cached := u.Get("prompt_tokens_details.cached_tokens").Int()
	written := u.Get("prompt_tokens_details.cache_write_tokens").Int()
	return usage{
		input:      max(u.Get("prompt_tokens").Int()-cached-written, 0),
		output:     u.Get("completion_tokens").Int(),
		cacheRead:  cached,
		cacheWrite: written,
	}
}

// readAnthropicUsage reads an Anthropic usage object.
func readAnthropicUsage(u gjson.Result) usage {
	return usage{
		input:      u.Get("input_tokens").Int(),
		output:     u.Get("output_tokens").Int(),
		cacheRead:  u.Get("cache_read_input_tokens").Int(),
		cacheWrite: u.Get("cache_creation_input_tokens").Int(),
	}
}

func appendAnthropicUsage(b []byte, u usage) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, u.input, 10)
	b = appendInt(b, "output_tokens", u.output)
	b = appendInt(b, "cache_creation_input_tokens", u.cacheWrite)
	b = appendInt(b, "cache_read_input_tokens", u.cacheRead)
	return append(b, '}')
}

func appendOpenAIUsage(b []byte, u usage) []byte {
	prompt := u.input + u.cacheRead + u.cacheWrite
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, prompt, 10)
	b = appendInt(b, "completion_tokens", u.output)
	b = appendInt(b, "total_tokens", prompt+u.output)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, u.cacheRead, 10)
	return append(b, `}}`...)
}
