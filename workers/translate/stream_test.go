package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
)

// dataEvents wraps each payload as an event without a name, as OpenAI sends.
func dataEvents(payloads ...string) []Event {
	evs := make([]Event, len(payloads))
	for i, p := range payloads {
		evs[i] = Event{Data: []byte(p)}
	}
	return evs
}

// namedEvents turns "name data" pairs into events, as Anthropic sends.
func namedEvents(pairs ...string) []Event {
	evs := make([]Event, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		evs = append(evs, Event{Name: pairs[i], Data: []byte(pairs[i+1])})
	}
	return evs
}

// runStream feeds evs to c, then calls Finish, and returns every output event.
func runStream(t *testing.T, c StreamConverter, evs []Event) []Event {
	t.Helper()
	var out []Event
	for _, ev := range evs {
		got, err := c.Convert(ev)
		if err != nil {
			t.Fatalf("Convert(%s %s): %v", ev.Name, ev.Data, err)
		}
		out = append(out, got...)
	}
	out = append(out, c.Finish()...)
	if again := c.Finish(); len(again) != 0 {
		t.Errorf("second Finish() = %d events; want none", len(again))
	}
	for _, ev := range out {
		if bytes.ContainsAny(ev.Data, "\r\n") {
			t.Errorf("event %q data contains a newline: %q", ev.Name, ev.Data)
		}
	}
	return out
}

func eventNames(evs []Event) string {
	names := make([]string, len(evs))
	for i, ev := range evs {
		names[i] = ev.Name
	}
	return strings.Join(names, ",")
}

const chunkHead = `{"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1",`

func TestOpenAIToAnthropicStream(t *testing.T) {
	type toolUse struct{ id, name, input string }
	tests := []struct {
		name       string
		in         []Event
		wantNames  string
		wantText   string
		wantTools  []toolUse
		wantStop   anthropic.StopReason
		wantIn     int64
		wantOut    int64
		wantCached int64
	}{
		{
			name: "text then parallel tool calls with usage",
			in: dataEvents(
				chunkHead+`"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`,
				chunkHead+`"choices":[{"index":0,"delta":{"content":"Let me "},"logprobs":null,"finish_reason":null}],"usage":null}`,
				chunkHead+`"choices":[{"index":0,"delta":{"content":"check \"this\"."},"logprobs":null,"finish_reason":null}],"usage":null}`,
				chunkHead+`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}`,
				chunkHead+`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"logprobs":null,"finish_reason":null}],"usage":null}`,
				chunkHead+`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}`,
				chunkHead+`"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}`,
				chunkHead+`"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}`,
				chunkHead+`"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":15,"total_tokens":35,"prompt_tokens_details":{"cached_tokens":8}}}`,
				`[DONE]`,
			),
			wantNames: "message_start,content_block_start,content_block_delta,content_block_delta,content_block_stop," +
				"content_block_start,content_block_delta,content_block_delta,content_block_stop," +
				"content_block_start,content_block_delta,content_block_stop,message_delta,message_stop",
			wantText:   `Let me check "this".`,
			wantTools:  []toolUse{{"call_1", "get_weather", `{"city":"Paris"}`}, {"call_2", "get_time", `{}`}},
			wantStop:   anthropic.StopReasonToolUse,
			wantIn:     12,
			wantOut:    15,
			wantCached: 8,
		},
		{
			name: "text only without usage or done",
			in: dataEvents(
				chunkHead+`"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}`,
				``,
				chunkHead+`"choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]}`,
				chunkHead+`"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`,
			),
			wantNames: "message_start,content_block_start,content_block_delta,content_block_delta,content_block_stop,message_delta,message_stop",
			wantText:  "Hi there",
			wantStop:  anthropic.StopReasonMaxTokens,
		},
		{
			name: "azure filter chunk first and usage in the finish chunk",
			in: dataEvents(
				`{"id":"","object":"","created":0,"model":"","choices":[],"prompt_filter_results":[{"prompt_index":0}]}`,
				chunkHead+`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":null}]}`,
				chunkHead+`"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`,
				`[DONE]`,
			),
			wantNames: "message_start,content_block_start,content_block_delta,content_block_stop,message_delta,message_stop",
			wantTools: []toolUse{{"call_9", "f", `{"a":1}`}},
			wantStop:  anthropic.StopReasonToolUse,
			wantIn:    3,
			wantOut:   4,
		},
		{
			name:      "empty stream",
			in:        nil,
			wantNames: "message_start,message_delta,message_stop",
			wantStop:  anthropic.StopReasonEndTurn,
		},
		{
			name: "text after tool call opens a new block",
			in: dataEvents(
				chunkHead+`"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{}"}}]},"finish_reason":null}]}`,
				chunkHead+`"choices":[{"index":0,"delta":{"content":"done"},"finish_reason":null}]}`,
				chunkHead+`"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
				`[DONE]`,
			),
			wantNames: "message_start,content_block_start,content_block_delta,content_block_stop,content_block_start,content_block_delta,content_block_stop,message_delta,message_stop",
			wantText:  "done",
			wantTools: []toolUse{{"c1", "f", `{}`}},
			wantStop:  anthropic.StopReasonEndTurn,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runStream(t, NewOpenAIToAnthropicStream(testDepth), tt.in)
			if got := eventNames(out); got != tt.wantNames {
				t.Errorf("event names = %s; want %s", got, tt.wantNames)
			}
			var msg anthropic.Message
			for _, ev := range out {
				var e anthropic.MessageStreamEventUnion
				if err := json.Unmarshal(ev.Data, &e); err != nil {
					t.Fatalf("unmarshal %s: %v", ev.Data, err)
				}
				if e.Type != ev.Name {
					t.Errorf("event %q has data type %q", ev.Name, e.Type)
				}
				if err := msg.Accumulate(e); err != nil {
					t.Fatalf("Accumulate(%s): %v", ev.Data, err)
				}
			}
			var text strings.Builder
			var tools []toolUse
			for _, block := range msg.Content {
				switch block.Type {
				case "text":
					text.WriteString(block.Text)
				case "tool_use":
					tools = append(tools, toolUse{block.ID, block.Name, string(block.Input)})
				}
			}
			if text.String() != tt.wantText {
				t.Errorf("text = %q; want %q", text.String(), tt.wantText)
			}
			if len(tools) != len(tt.wantTools) {
				t.Fatalf("tool uses = %v; want %v", tools, tt.wantTools)
			}
			for i := range tools {
				if tools[i] != tt.wantTools[i] {
					t.Errorf("tool use %d = %v; want %v", i, tools[i], tt.wantTools[i])
				}
			}
			if msg.StopReason != tt.wantStop {
				t.Errorf("stop reason = %q; want %q", msg.StopReason, tt.wantStop)
			}
			if msg.Usage.InputTokens != tt.wantIn || msg.Usage.OutputTokens != tt.wantOut || msg.Usage.CacheReadInputTokens != tt.wantCached {
				t.Errorf("usage = in %d out %d cached %d; want in %d out %d cached %d",
					msg.Usage.InputTokens, msg.Usage.OutputTokens, msg.Usage.CacheReadInputTokens, tt.wantIn, tt.wantOut, tt.wantCached)
			}
			if msg.Role != "assistant" || msg.Type != "message" {
				t.Errorf("message role %q type %q; want assistant message", msg.Role, msg.Type)
			}
		})
	}
}

func TestOpenAIToAnthropicStreamError(t *testing.T) {
	tests := []struct {
		name     string
		in       []Event
		wantType string
		wantMsg  string
	}{
		{
			name: "mid-stream error",
			in: dataEvents(
				chunkHead+`"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}`,
				`{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}`,
			),
			wantType: "api_error",
			wantMsg:  "The server had an error",
		},
		{
			name:     "rate limit before any chunk",
			in:       dataEvents(`{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}`),
			wantType: "rate_limit_error",
			wantMsg:  "slow down",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runStream(t, NewOpenAIToAnthropicStream(testDepth), tt.in)
			last := out[len(out)-1]
			if last.Name != "error" {
				t.Fatalf("last event = %q %s; want error", last.Name, last.Data)
			}
			var e struct {
				Type  string `json:"type"`
				Error struct {
					Type    string `json:"type"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(last.Data, &e); err != nil {
				t.Fatalf("unmarshal %s: %v", last.Data, err)
			}
			if e.Type != "error" || e.Error.Type != tt.wantType || e.Error.Message != tt.wantMsg {
				t.Errorf("error event = %s; want type %q message %q", last.Data, tt.wantType, tt.wantMsg)
			}
		})
	}
}

func TestAnthropicToOpenAIStream(t *testing.T) {
	type call struct{ id, name, args string }
	const start = `{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1,"cache_creation_input_tokens":0,"cache_read_input_tokens":5}}}`
	toolStream := namedEvents(
		"message_start", start,
		"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}`,
		"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}`,
		"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}`,
		"content_block_stop", `{"type":"content_block_stop","index":0}`,
		"ping", `{"type":"ping"}`,
		"content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}`,
		"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}`,
		"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" \"world\"\n"}}`,
		"content_block_stop", `{"type":"content_block_stop","index":1}`,
		"content_block_start", `{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}`,
		"content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}`,
		"content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}}`,
		"content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"is\"}"}}`,
		"content_block_stop", `{"type":"content_block_stop","index":2}`,
		"content_block_start", `{"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_2","name":"get_time","input":{}}}`,
		"content_block_delta", `{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{}"}}`,
		"content_block_stop", `{"type":"content_block_stop","index":3}`,
		"message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}`,
		"message_stop", `{"type":"message_stop"}`,
	)
	textStream := namedEvents(
		"message_start", start,
		"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
		"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}`,
		"content_block_stop", `{"type":"content_block_stop","index":0}`,
		"message_delta", `{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"input_tokens":26,"output_tokens":7}}`,
	)
	tests := []struct {
		name         string
		includeUsage bool
		in           []Event
		wantChunks   int
		wantText     string
		wantCalls    []call
		wantFinish   string
		wantUsage    openai.CompletionUsage
	}{
		{
			name:         "tool use with usage",
			includeUsage: true,
			in:           toolStream,
			wantChunks:   10,
			wantText:     "Hello \"world\"\n",
			wantCalls:    []call{{"toolu_1", "get_weather", `{"city": "Paris"}`}, {"toolu_2", "get_time", `{}`}},
			wantFinish:   "tool_calls",
			wantUsage:    openai.CompletionUsage{PromptTokens: 30, CompletionTokens: 30, TotalTokens: 60},
		},
		{
			name:       "tool use without usage",
			in:         toolStream,
			wantChunks: 9,
			wantText:   "Hello \"world\"\n",
			wantCalls:  []call{{"toolu_1", "get_weather", `{"city": "Paris"}`}, {"toolu_2", "get_time", `{}`}},
			wantFinish: "tool_calls",
		},
		{
			name:         "text without message_stop",
			includeUsage: true,
			in:           textStream,
			wantChunks:   4,
			wantText:     "Hi",
			wantFinish:   "length",
			wantUsage:    openai.CompletionUsage{PromptTokens: 31, CompletionTokens: 7, TotalTokens: 38},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runStream(t, newAnthropicToOpenAIStream(tt.includeUsage, 1700000000, testDepth), tt.in)
			last := out[len(out)-1]
			if string(last.Data) != "[DONE]" || last.Name != "" {
				t.Fatalf("last event = %q %s; want [DONE]", last.Name, last.Data)
			}
			chunks := out[:len(out)-1]
			if len(chunks) != tt.wantChunks {
				t.Errorf("got %d chunks; want %d", len(chunks), tt.wantChunks)
			}
			var acc openai.ChatCompletionAccumulator
			for i, ev := range chunks {
				if ev.Name != "" {
					t.Errorf("chunk %d has event name %q", i, ev.Name)
				}
				var c openai.ChatCompletionChunk
				if err := json.Unmarshal(ev.Data, &c); err != nil {
					t.Fatalf("unmarshal %s: %v", ev.Data, err)
				}
				if c.Object != "chat.completion.chunk" || c.ID != "chatcmpl-msg_01" || c.Model != "claude-sonnet-4-5" || c.Created != 1700000000 {
					t.Errorf("chunk %d header = %s", i, ev.Data)
				}
				if i == 0 && c.Choices[0].Delta.Role != "assistant" {
					t.Errorf("first chunk = %s; want delta.role assistant", ev.Data)
				}
				if len(c.Choices) == 0 && !tt.includeUsage {
					t.Errorf("usage chunk %s sent without includeUsage", ev.Data)
				}
				if !acc.AddChunk(c) {
					t.Fatalf("AddChunk(%s) = false", ev.Data)
				}
			}
			choice := acc.Choices[0]
			if choice.Message.Content != tt.wantText {
				t.Errorf("content = %q; want %q", choice.Message.Content, tt.wantText)
			}
			if choice.FinishReason != tt.wantFinish {
				t.Errorf("finish_reason = %q; want %q", choice.FinishReason, tt.wantFinish)
			}
			if len(choice.Message.ToolCalls) != len(tt.wantCalls) {
				t.Fatalf("tool calls = %+v; want %v", choice.Message.ToolCalls, tt.wantCalls)
			}
			for i, tc := range choice.Message.ToolCalls {
				got := call{tc.ID, tc.Function.Name, tc.Function.Arguments}
				if got != tt.wantCalls[i] {
					t.Errorf("tool call %d = %v; want %v", i, got, tt.wantCalls[i])
				}
			}
			u := acc.Usage
			if u.PromptTokens != tt.wantUsage.PromptTokens || u.CompletionTokens != tt.wantUsage.CompletionTokens || u.TotalTokens != tt.wantUsage.TotalTokens {
				t.Errorf("usage = %d/%d/%d; want %d/%d/%d", u.PromptTokens, u.CompletionTokens, u.TotalTokens,
					tt.wantUsage.PromptTokens, tt.wantUsage.CompletionTokens, tt.wantUsage.TotalTokens)
			}
		})
	}
}

func TestAnthropicToOpenAIStreamError(t *testing.T) {
	c := newAnthropicToOpenAIStream(true, 1, testDepth)
	in := namedEvents(
		"message_start", `{"type":"message_start","message":{"id":"msg_1","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}`,
		"error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
		"message_stop", `{"type":"message_stop"}`,
	)
	out := runStream(t, c, in)
	if len(out) != 2 {
		t.Fatalf("got %d events (%q); want role chunk and error", len(out), out)
	}
	want := `{"error":{"message":"Overloaded","type":"server_error","param":null,"code":"service_unavailable"}}`
	assertJSONEqual(t, "error event", out[1].Data, want)
}

func TestStreamInvalidData(t *testing.T) {
	convs := []struct {
		name string
		c    StreamConverter
	}{
		{name: "openai to anthropic", c: NewOpenAIToAnthropicStream(testDepth)},
		{name: "anthropic to openai", c: NewAnthropicToOpenAIStream(true, testDepth)},
	}
	for _, tt := range convs {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.c.Convert(Event{Data: []byte(`{"type":`)}); !errors.Is(err, ErrInvalidBody) {
				t.Errorf("Convert(invalid) error = %v; want ErrInvalidBody", err)
			}
			if _, err := tt.c.Convert(Event{Data: []byte(`[1]`)}); !errors.Is(err, ErrInvalidBody) {
				t.Errorf("Convert(array) error = %v; want ErrInvalidBody", err)
			}
		})
	}
}
