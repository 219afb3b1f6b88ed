package translate

import "testing"

// TestStreamGolden pins the exact wire shape of short converted streams.
func TestStreamGolden(t *testing.T) {
	tests := []struct {
		name string
		c    StreamConverter
		in   []Event
		want []Event
	}{
		{
			name: "openai to anthropic",
			c:    NewOpenAIToAnthropicStream(testDepth),
			in: dataEvents(
				`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}`,
				`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
				`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}`,
				`[DONE]`,
			),
			want: namedEvents(
				"message_start", `{"type":"message_start","message":{"id":"msg_c1","type":"message","role":"assistant","model":"gpt-4o","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}`,
				"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
				"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}`,
				"content_block_stop", `{"type":"content_block_stop","index":0}`,
				"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":1,"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`,
				"message_stop", `{"type":"message_stop"}`,
			),
		},
		{
			name: "anthropic to openai",
			c:    newAnthropicToOpenAIStream(true, 1700000000, testDepth),
			in: namedEvents(
				"message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"usage":{"input_tokens":9,"output_tokens":1}}}`,
				"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}`,
				"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}`,
				"content_block_stop", `{"type":"content_block_stop","index":0}`,
				"message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":5}}`,
				"message_stop", `{"type":"message_stop"}`,
			),
			want: dataEvents(
				`{"id":"chatcmpl-msg_1","object":"chat.completion.chunk","created":1700000000,"model":"claude","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}`,
				`{"id":"chatcmpl-msg_1","object":"chat.completion.chunk","created":1700000000,"model":"claude","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"toolu_1","type":"function","function":{"name":"f","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}`,
				`{"id":"chatcmpl-msg_1","object":"chat.completion.chunk","created":1700000000,"model":"claude","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}`,
				`{"id":"chatcmpl-msg_1","object":"chat.completion.chunk","created":1700000000,"model":"claude","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}`,
				`{"id":"chatcmpl-msg_1","object":"chat.completion.chunk","created":1700000000,"model":"claude","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":0}}}`,
				`[DONE]`,
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runStream(t, tt.c, tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events %q; want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				if got[i].Name != tt.want[i].Name || string(got[i].Data) != string(tt.want[i].Data) {
					t.Errorf("event %d = %q %s\nwant %q %s", i, got[i].Name, got[i].Data, tt.want[i].Name, tt.want[i].Data)
				}
			}
		})
	}
}
