package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/relaygw/relay/workers/wire"
)

// deep returns n levels of shape's opening, e.g. "[" or `{"a":`, unclosed:
// megabytes that would overflow a recursive validator's stack.
func deep(shape string, n int) string { return strings.Repeat(shape, n) }

// TestDeepResponses checks upstream answers nested past the limit are
// refused as invalid bodies, never handed to a recursive parser.
func TestDeepResponses(t *testing.T) {
	convs := []struct {
		name string
		fn   func([]byte, int) ([]byte, error)
	}{
		{"OpenAIToAnthropicResponse", OpenAIToAnthropicResponse},
		{"AnthropicToOpenAIResponse", AnthropicToOpenAIResponse},
	}
	bodies := []struct{ name, body string }{
		{"arrays", deep("[", 2<<20)},
		{"objects", deep(`{"a":`, 1<<20)},
		{"in choices", `{"choices":[{"message":{"content":` + deep("[", 1<<20) + `}}]}`},
		{"in content", `{"type":"message","content":[{"type":"text","text":"x","y":` + deep(`[{"b":`, 1<<19) + `}]}`},
		{"just past the limit", `{"x":` + deep("[", testDepth) + strings.Repeat("]", testDepth) + `}`},
	}
	for _, c := range convs {
		for _, b := range bodies {
			t.Run(c.name+"/"+b.name, func(t *testing.T) {
				out, err := c.fn([]byte(b.body), testDepth)
				if !errors.Is(err, ErrInvalidBody) || !errors.Is(err, wire.ErrTooDeep) {
					t.Fatalf("= %.60s, %v; want ErrInvalidBody and wire.ErrTooDeep", out, err)
				}
			})
		}
	}
}

// TestDeepToolArguments checks tool call arguments, a string the body's
// depth check cannot see into, are passed on raw when nested too deep.
func TestDeepToolArguments(t *testing.T) {
	args, err := json.Marshal(deep(`{"a":`, 1<<18))
	if err != nil {
		t.Fatal(err)
	}
	call := `{"id":"c1","type":"function","function":{"name":"f","arguments":` + string(args) + `}}`
	resp := `{"id":"x","model":"m","choices":[{"message":{"role":"assistant","tool_calls":[` + call + `]},"finish_reason":"tool_calls"}]}`
	req := `{"model":"m","messages":[{"role":"assistant","tool_calls":[` + call + `]}]}`
	for name, conv := range map[string]func() ([]byte, error){
		"response": func() ([]byte, error) { return OpenAIToAnthropicResponse([]byte(resp), testDepth) },
		"request":  func() ([]byte, error) { return OpenAIToAnthropicRequest([]byte(req), "", testDepth) },
	} {
		t.Run(name, func(t *testing.T) {
			out, err := conv()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(out, []byte(`"input":{"raw":"{\"a\":{\"a\":`)) {
				t.Errorf("deep arguments not passed raw: %.200s", out)
			}
			if err := wire.CheckDepth(out, testDepth); err != nil {
				t.Errorf("output nests too deep: %v", err)
			}
		})
	}
}

// TestDeepErrorBodies checks a deep upstream error body gets the generic
// message.
func TestDeepErrorBodies(t *testing.T) {
	body := []byte(`{"error":{"message":"boom","x":` + deep("[", 1<<20) + `}}`)
	if got := OpenAIToAnthropicError(400, body, testDepth); bytes.Contains(got, []byte("boom")) || !json.Valid(got) {
		t.Errorf("OpenAIToAnthropicError = %s", got)
	}
	if got := AnthropicToOpenAIError(400, body, testDepth); bytes.Contains(got, []byte("boom")) || !json.Valid(got) {
		t.Errorf("AnthropicToOpenAIError = %s", got)
	}
}

// TestDeepStreamEvents checks a deep event is refused as invalid and the
// converter goes on with the next events.
func TestDeepStreamEvents(t *testing.T) {
	tests := []struct {
		name string
		c    StreamConverter
		ev   Event
		next Event
	}{
		{"openai to anthropic", NewOpenAIToAnthropicStream(testDepth),
			Event{Data: []byte(`{"choices":[{"delta":{"content":` + deep("[", 2<<20) + `}}]}`)},
			Event{Data: []byte(`{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}`)}},
		{"anthropic to openai", NewAnthropicToOpenAIStream(true, testDepth),
			Event{Name: "content_block_delta", Data: []byte(`{"type":"content_block_delta","delta":` + deep(`{"a":`, 1<<20))},
			Event{Name: "message_start", Data: []byte(`{"type":"message_start","message":{"id":"m1","model":"m","usage":{"input_tokens":1}}}`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.c.Convert(tt.ev)
			if !errors.Is(err, ErrInvalidBody) || !errors.Is(err, wire.ErrTooDeep) || len(out) != 0 {
				t.Fatalf("Convert(deep) = %d events, %v; want ErrInvalidBody and wire.ErrTooDeep", len(out), err)
			}
			out, err = tt.c.Convert(tt.next)
			if err != nil || len(out) == 0 {
				t.Fatalf("Convert(next) = %d events, %v; want events", len(out), err)
			}
		})
	}
}
