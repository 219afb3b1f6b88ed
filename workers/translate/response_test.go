package translate

import (
	"errors"
	"testing"
)

func TestOpenAIToAnthropicResponse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{
			name: "text",
			in: `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","system_fingerprint":"fp",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null},"logprobs":null,"finish_reason":"stop"}],
				"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}`,
			want: `{"id":"msg_chatcmpl-1","type":"message","role":"assistant","model":"gpt-4o",
				"content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,
				"usage":{"input_tokens":8,"output_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":4}}`,
		},
		{
			name: "tool calls",
			in: `{"id":"c2","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
				{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
				{"id":"call_2","type":"function","function":{"name":"g","arguments":"oops"}}]},"finish_reason":"tool_calls"}],
				"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`,
			want: `{"id":"msg_c2","type":"message","role":"assistant","model":"gpt-4o","content":[
				{"type":"tool_use","id":"call_1","name":"f","input":{"a":1}},
				{"type":"tool_use","id":"call_2","name":"g","input":{"raw":"oops"}}],
				"stop_reason":"tool_use","stop_sequence":null,
				"usage":{"input_tokens":5,"output_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`,
		},
		{
			name: "text and tools, length",
			in: `{"id":"c3","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Let me see","tool_calls":[
				{"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":"length"}]}`,
			want: `{"id":"msg_c3","type":"message","role":"assistant","model":"m","content":[
				{"type":"text","text":"Let me see"},{"type":"tool_use","id":"call_1","name":"f","input":{}}],
				"stop_reason":"max_tokens","stop_sequence":null,
				"usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`,
		},
		{
			name: "refusal",
			in:   `{"id":"c4","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't."},"finish_reason":"content_filter"}]}`,
			want: `{"id":"msg_c4","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"I can't."}],
				"stop_reason":"refusal","stop_sequence":null,
				"usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`,
		},
		{
			name: "no choices",
			in:   `{"id":"c5","model":"m","choices":[]}`,
			want: `{"id":"msg_c5","type":"message","role":"assistant","model":"m","content":[],"stop_reason":"end_turn","stop_sequence":null,
				"usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OpenAIToAnthropicResponse([]byte(tt.in), testDepth)
			if err != nil {
				t.Fatalf("OpenAIToAnthropicResponse(%s) error: %v", tt.name, err)
			}
			assertJSONEqual(t, "OpenAIToAnthropicResponse", got, tt.want)
		})
	}
}

func TestAnthropicToOpenAIResponse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{
			name: "text",
			in: `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",
				"content":[{"type":"thinking","thinking":"...","signature":"s"},{"type":"text","text":"Hello "},{"type":"text","text":"world"}],
				"stop_reason":"end_turn","stop_sequence":null,
				"usage":{"input_tokens":10,"output_tokens":3,"cache_creation_input_tokens":2,"cache_read_input_tokens":5}}`,
			want: `{"id":"chatcmpl-msg_1","object":"chat.completion","created":1700000000,"model":"claude-sonnet-4-5",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Hello world","refusal":null},"logprobs":null,"finish_reason":"stop"}],
				"usage":{"prompt_tokens":17,"completion_tokens":3,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":5}}}`,
		},
		{
			name: "tool use",
			in: `{"id":"msg_2","type":"message","role":"assistant","model":"c","content":[
				{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":[1,2]}},
				{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"x"}}],
				"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}`,
			want: `{"id":"chatcmpl-msg_2","object":"chat.completion","created":1700000000,"model":"c",
				"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[
				{"id":"toolu_1","type":"function","function":{"name":"f","arguments":"{\"a\":[1,2]}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],
				"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":0}}}`,
		},
		{
			name: "text and tool use, max tokens",
			in: `{"id":"msg_3","type":"message","model":"c","content":[{"type":"text","text":"Checking"},{"type":"tool_use","id":"t","name":"f","input":{}}],
				"stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":2}}`,
			want: `{"id":"chatcmpl-msg_3","object":"chat.completion","created":1700000000,"model":"c",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Checking","refusal":null,"tool_calls":[
				{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]},"logprobs":null,"finish_reason":"length"}],
				"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":0}}}`,
		},
		{
			name: "empty content refusal",
			in:   `{"id":"msg_4","type":"message","model":"c","content":[],"stop_reason":"refusal","usage":{"input_tokens":1,"output_tokens":0}}`,
			want: `{"id":"chatcmpl-msg_4","object":"chat.completion","created":1700000000,"model":"c",
				"choices":[{"index":0,"message":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":"content_filter"}],
				"usage":{"prompt_tokens":1,"completion_tokens":0,"total_tokens":1,"prompt_tokens_details":{"cached_tokens":0}}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := anthropicToOpenAIResponse([]byte(tt.in), 1700000000, testDepth)
			if err != nil {
				t.Fatalf("AnthropicToOpenAIResponse(%s) error: %v", tt.name, err)
			}
			assertJSONEqual(t, "AnthropicToOpenAIResponse", got, tt.want)
		})
	}
}

func TestResponseErrors(t *testing.T) {
	convs := []struct {
		name string
		fn   func([]byte, int) ([]byte, error)
	}{
		{name: "OpenAIToAnthropicResponse", fn: OpenAIToAnthropicResponse},
		{name: "AnthropicToOpenAIResponse", fn: AnthropicToOpenAIResponse},
	}
	inputs := []struct {
		name, in string
	}{
		{name: "not json", in: `{`},
		{name: "array", in: `[]`},
		{name: "error body", in: `{"type":"error","error":{"type":"api_error","message":"x"}}`},
	}
	for _, c := range convs {
		for _, in := range inputs {
			t.Run(c.name+"/"+in.name, func(t *testing.T) {
				got, err := c.fn([]byte(in.in), testDepth)
				if !errors.Is(err, ErrInvalidBody) {
					t.Errorf("%s(%q) = %s, %v; want error wrapping ErrInvalidBody", c.name, in.in, got, err)
				}
			})
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{
			name: "text",
			in: `{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"Hi \"there\"\n"}],
				"stop_reason":"end_turn","stop_sequence":null,
				"usage":{"input_tokens":10,"output_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":5}}`,
		},
		{
			name: "tools",
			in: `{"id":"msg_2","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"ok"},
				{"type":"tool_use","id":"t1","name":"f","input":{"x":{"y":[true,null]}}}],
				"stop_reason":"tool_use","stop_sequence":null,
				"usage":{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mid, err := AnthropicToOpenAIResponse([]byte(tt.in), testDepth)
			if err != nil {
				t.Fatalf("AnthropicToOpenAIResponse: %v", err)
			}
			got, err := OpenAIToAnthropicResponse(mid, testDepth)
			if err != nil {
				t.Fatalf("OpenAIToAnthropicResponse(%s): %v", mid, err)
			}
			// The id gains both prefixes; everything else survives.
			want := `{"id":"msg_chatcmpl-` + tt.in[len(`{"id":"`):]
			assertJSONEqual(t, "round trip", got, want)
		})
	}
}
