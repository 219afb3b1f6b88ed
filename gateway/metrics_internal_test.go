package gateway

import (
	"testing"

	"github.com/relaygw/relay/workers"
)

// TestContentEvent checks which events count as a stream's first token:
// generated content only, not the frames around it.
func TestContentEvent(t *testing.T) {
	a, o := workers.FormatAnthropic, workers.FormatOpenAI
	tests := []struct {
		name   string
		format workers.Format
		ev     string
		want   bool
	}{
		{"anthropic text delta", a, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n", true},
		{"anthropic tool input delta", a, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}\n\n", true},
		{"anthropic data without space", a, "data:{\"type\":\"content_block_delta\"}\n\n", true},
		{"anthropic message_start", a, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n", false},
		{"anthropic block start", a, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n", false},
		{"anthropic ping", a, "event: ping\ndata: {\"type\": \"ping\"}\n\n", false},
		{"openai content", o, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n", true},
		{"openai tool call", o, "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\"}}]}}]}\n\n", true},
		{"openai refusal", o, "data: {\"choices\":[{\"delta\":{\"refusal\":\"no\"}}]}\n\n", true},
		{"openai role only", o, "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n", false},
		{"openai empty tool calls", o, "data: {\"choices\":[{\"delta\":{\"tool_calls\":[]}}]}\n\n", false},
		{"openai usage chunk", o, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", false},
		{"openai done", o, "data: [DONE]\n\n", false},
		{"no data", o, "event: x\n\n", false},
		{"garbage", a, "data: {not json\n\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := contentEvent(tc.format, []byte(tc.ev)); got != tc.want {
				t.Errorf("contentEvent(%q) = %v, want %v", tc.ev, got, tc.want)
			}
		})
	}
}
