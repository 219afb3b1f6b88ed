package translate

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
)

var anthropicSeeds = []string{
	`{"model":"claude-sonnet","max_tokens":100,"messages":[{"role":"user","content":"Hello"}]}`,
	`{"model":"c","system":[{"type":"text","text":"S"}],"stream":true,"stop_sequences":["a"],"metadata":{"user_id":"u"},"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAA="}}]}]}`,
	`{"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f","disable_parallel_tool_use":true},"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":"\u2028"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r"},{"type":"image","source":{"type":"url","url":"u"}}]}]}]}`,
	`{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","data":"d"}}]}],"system":7,"max_tokens":"x"}`,
	`{"messages":{}}`,
	`[]`,
	// Nested past the limit, and just within it.
	`{"messages":[{"role":"user","content":` + strings.Repeat(`[`, 300) + `]}]}`,
	`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":` +
		strings.Repeat(`{"a":`, testDepth-6) + `1` + strings.Repeat(`}`, testDepth-6) + `}]}]}`,
}

var openAISeeds = []string{
	`{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}`,
	`{"model":"o","max_completion_tokens":9,"temperature":2,"stop":"x","stream":true,"user":"u","messages":[{"role":"system","content":"S"},{"role":"developer","content":[{"type":"text","text":"D"}]},{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}},{"type":"file","file":{"file_data":"data:application/pdf;base64,JV"}}]}]}`,
	`{"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":{"type":"function","function":{"name":"f"}},"parallel_tool_calls":false,"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{\"a\":"}}]},{"role":"tool","tool_call_id":"c","content":"r"},{"role":"tool","tool_call_id":"d","content":[{"type":"text","text":"s"}]}]}`,
	`{"messages":[{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]},{"role":"user","content":""}],"stop":["",1]}`,
	`{"messages":"x"}`,
	`"x"`,
	// Nested past the limit, in the body and in tool call arguments.
	`{"messages":[{"role":"user","content":` + strings.Repeat(`{"a":`, 300) + `}]}`,
	`{"messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"` +
		strings.Repeat(`{\"a\":`, 300) + `1` + strings.Repeat(`}`, 300) + `"}}]}]}`,
}

func FuzzAnthropicToOpenAIRequest(f *testing.F) {
	for _, s := range anthropicSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := AnthropicToOpenAIRequest(body, "gpt-4o", testDepth)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("AnthropicToOpenAIRequest(%q) = invalid JSON %q", body, out)
		}
		if _, err := OpenAIToAnthropicRequest(out, "", testDepth+8); err != nil {
			t.Fatalf("OpenAIToAnthropicRequest(%q) = %v", out, err)
		}
	})
}

func FuzzOpenAIToAnthropicRequest(f *testing.F) {
	for _, s := range openAISeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := OpenAIToAnthropicRequest(body, "claude", testDepth)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("OpenAIToAnthropicRequest(%q) = invalid JSON %q", body, out)
		}
		if _, err := AnthropicToOpenAIRequest(out, "", testDepth+8); err != nil {
			t.Fatalf("AnthropicToOpenAIRequest(%q) = %v", out, err)
		}
	})
}

// FuzzStreams feeds newline-separated payloads to both stream converters. The
// output must be valid JSON on single lines, and must be accepted by the
// official SDKs' accumulators.
func FuzzStreams(f *testing.F) {
	f.Add([]byte(chunkHead + `"choices":[{"index":0,"delta":{"content":"Hi"}}]}` + "\n" +
		chunkHead + `"choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"id":"c","function":{"name":"f","arguments":"{"}}]}}]}` + "\n" +
		chunkHead + `"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"}"}}]},"finish_reason":"tool_calls"}]}` + "\n" +
		`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}` + "\n[DONE]"))
	f.Add([]byte(`{"error":{"message":"x"}}`))
	f.Add([]byte(`{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1}}}` + "\n" +
		`{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{"a":1}}}` + "\n" +
		`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"b\""}}` + "\n" +
		`{"type":"content_block_start","index":1,"content_block":{"type":"text","text":"x"}}` + "\n" +
		`{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"y"}}` + "\n" +
		`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}` + "\n" +
		`{"type":"message_stop"}`))
	f.Add([]byte(`{"type":"error","error":{"type":"api_error","message":"x"}}`))
	f.Add([]byte("not json\n{}\n[1]"))
	f.Add([]byte(chunkHead + `"choices":[{"index":0,"delta":{"content":` + strings.Repeat("[", 300) + "\n" +
		chunkHead + `"choices":[{"index":0,"delta":{"content":"Hi"}}]}`))
	f.Fuzz(func(t *testing.T, input []byte) {
		lines := bytes.Split(input, []byte("\n"))
		checkAnthropic(t, NewOpenAIToAnthropicStream(testDepth), lines)
		checkOpenAI(t, newAnthropicToOpenAIStream(true, 1, testDepth), lines)
	})
}

func collect(t *testing.T, c StreamConverter, lines [][]byte) []Event {
	var out []Event
	for _, line := range lines {
		evs, err := c.Convert(Event{Data: line})
		if err != nil {
			continue
		}
		out = append(out, evs...)
	}
	out = append(out, c.Finish()...)
	for _, ev := range out {
		if bytes.ContainsAny(ev.Data, "\r\n") {
			t.Fatalf("event data contains a newline: %q", ev.Data)
		}
		if string(ev.Data) != "[DONE]" && !json.Valid(ev.Data) {
			t.Fatalf("event data is invalid JSON: %q", ev.Data)
		}
	}
	return out
}

func checkAnthropic(t *testing.T, c StreamConverter, lines [][]byte) {
	var msg anthropic.Message
	for _, ev := range collect(t, c, lines) {
		if ev.Name == "error" {
			continue
		}
		var e anthropic.MessageStreamEventUnion
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			t.Fatalf("unmarshal %s: %v", ev.Data, err)
		}
		if err := msg.Accumulate(e); err != nil {
			t.Fatalf("Accumulate(%s): %v", ev.Data, err)
		}
	}
}

func checkOpenAI(t *testing.T, c StreamConverter, lines [][]byte) {
	var acc openai.ChatCompletionAccumulator
	for _, ev := range collect(t, c, lines) {
		if string(ev.Data) == "[DONE]" || bytes.HasPrefix(ev.Data, []byte(`{"error"`)) {
			continue
		}
		var chunk openai.ChatCompletionChunk
		if err := json.Unmarshal(ev.Data, &chunk); err != nil {
			t.Fatalf("unmarshal %s: %v", ev.Data, err)
		}
		if !acc.AddChunk(chunk) {
			t.Fatalf("AddChunk(%s) = false", ev.Data)
		}
	}
}
