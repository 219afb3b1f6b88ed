package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/gateway/metering"
)

// startDemo runs `relay serve` with configs/demo.yaml on free ports.
func startDemo(t *testing.T) *relayProc {
	t.Helper()
	return startDemoNATS(t, freePort(t))
}

// sdkHTTPClient returns a client whose idle connections close at test end.
func sdkHTTPClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestDemoClients runs what a newcomer does with the demo and the official
// SDKs: an echo, then a tool loop (ask with tools, get a tool call, send
// its result, get the final text), streamed and not, through the relay.
func TestDemoClients(t *testing.T) {
	t.Parallel()
	p := startDemo(t)
	ac := anthropic.NewClient(aoption.WithBaseURL("http://"+p.addr), aoption.WithAPIKey("relay-demo-key"),
		aoption.WithMaxRetries(0), aoption.WithHTTPClient(sdkHTTPClient(t)))
	oc := openai.NewClient(ooption.WithBaseURL("http://"+p.addr+"/v1"), ooption.WithAPIKey("relay-demo-key"),
		ooption.WithMaxRetries(0), ooption.WithHTTPClient(sdkHTTPClient(t)))
	for _, stream := range []bool{false, true} {
		name := "non-stream"
		if stream {
			name = "stream"
		}
		t.Run("anthropic/"+name, func(t *testing.T) { demoAnthropicLoop(t, ac, stream) })
		t.Run("openai/"+name, func(t *testing.T) { demoOpenAILoop(t, oc, stream) })
	}
	t.Run("usage shows cost", func(t *testing.T) { demoUsage(t, p) })
	p.stop()
}

// demoUsage checks that GET /v1/usage shows the demo key's calls above,
// priced by the demo's prices table, once the counters are written.
func demoUsage(t *testing.T, p *relayProc) {
	var ku metering.KeyUsage
	natstest.Eventually(t, 30*time.Second, "priced usage of claude-sonnet-4-5", func() bool {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+p.addr+"/v1/usage", nil)
		req.Header.Set("x-api-key", "relay-demo-key")
		resp, err := sdkHTTPClient(t).Do(req)
		if err != nil {
			t.Fatalf("GET /v1/usage: %v", err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&ku); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /v1/usage: %d %v", resp.StatusCode, err)
		}
		for _, d := range ku.Days {
			for _, m := range d.Models {
				if m.Model == "claude-sonnet-4-5" && m.CostUSD > 0 && m.OutputTokens > 0 {
					return true
				}
			}
		}
		return false
	})
	if ku.Key != "demo" || ku.Total.Requests < 4 {
		t.Errorf("demo usage %+v; want the key's calls above", ku)
	}
}

// demoAsk sends params with the Anthropic SDK and returns the (accumulated)
// message.
func demoAsk(t *testing.T, c anthropic.Client, params anthropic.MessageNewParams, stream bool) *anthropic.Message {
	t.Helper()
	if !stream {
		msg, err := c.Messages.New(t.Context(), params)
		if err != nil {
			t.Fatalf("Messages.New: %v", err)
		}
		return msg
	}
	s := c.Messages.NewStreaming(t.Context(), params)
	defer s.Close()
	var msg anthropic.Message
	for s.Next() {
		if err := msg.Accumulate(s.Current()); err != nil {
			t.Fatalf("Accumulate: %v", err)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return &msg
}

// demoAnthropicLoop echoes, then runs a Bash tool loop as Claude Code would.
func demoAnthropicLoop(t *testing.T, c anthropic.Client, stream bool) {
	params := anthropic.MessageNewParams{
		Model: "claude-sonnet", MaxTokens: 256,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello relay"))},
	}
	msg := demoAsk(t, c, params, stream)
	if len(msg.Content) != 1 || msg.Content[0].Text != "You said: hello relay" || msg.Usage.OutputTokens != 4 {
		t.Fatalf("echo = %+v, %d output tokens; want You said: hello relay, 4", msg.Content, msg.Usage.OutputTokens)
	}

	params.Tools = []anthropic.ToolUnionParam{{OfTool: &anthropic.ToolParam{Name: "Bash", InputSchema: anthropic.ToolInputSchemaParam{
		Properties: map[string]any{"command": map[string]any{"type": "string"}}, Required: []string{"command"}}}}}
	params.Messages[0] = anthropic.NewUserMessage(anthropic.NewTextBlock("use Bash: echo hi"))
	msg = demoAsk(t, c, params, stream)
	if len(msg.Content) != 1 || msg.StopReason != anthropic.StopReasonToolUse {
		t.Fatalf("reply = %+v %q; want one tool_use", msg.Content, msg.StopReason)
	}
	use := msg.Content[0].AsToolUse()
	if use.Name != "Bash" || string(use.Input) != `{"command":"echo hi"}` {
		t.Fatalf("tool_use = %s %s; want Bash {\"command\":\"echo hi\"}", use.Name, use.Input)
	}
	params.Messages = append(params.Messages, msg.ToParam(), anthropic.NewUserMessage(anthropic.NewToolResultBlock(use.ID, "hi", false)))
	msg = demoAsk(t, c, params, stream)
	if len(msg.Content) != 1 || msg.Content[0].Text != "Tool Bash returned: hi" || msg.StopReason != anthropic.StopReasonEndTurn {
		t.Errorf("final = %+v %q; want Tool Bash returned: hi, end_turn", msg.Content, msg.StopReason)
	}
}

// demoOpenAIAsk sends params with the OpenAI SDK and returns the
// (accumulated) first choice.
func demoOpenAIAsk(t *testing.T, c openai.Client, params openai.ChatCompletionNewParams, stream bool) openai.ChatCompletionChoice {
	t.Helper()
	if !stream {
		cc, err := c.Chat.Completions.New(t.Context(), params)
		if err != nil || len(cc.Choices) != 1 {
			t.Fatalf("Completions.New = %+v, %v", cc, err)
		}
		return cc.Choices[0]
	}
	s := c.Chat.Completions.NewStreaming(t.Context(), params)
	defer s.Close()
	var acc openai.ChatCompletionAccumulator
	for s.Next() {
		acc.AddChunk(s.Current())
	}
	if err := s.Err(); err != nil || len(acc.Choices) != 1 {
		t.Fatalf("stream = %+v, %v", acc.Choices, err)
	}
	return acc.Choices[0]
}

// demoOpenAILoop echoes, then runs a function-calling loop.
func demoOpenAILoop(t *testing.T, c openai.Client, stream bool) {
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello relay")},
	}
	if ch := demoOpenAIAsk(t, c, params, stream); ch.Message.Content != "You said: hello relay" {
		t.Fatalf("echo = %q; want You said: hello relay", ch.Message.Content)
	}
	params.Tools = []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
		Name: "get_time", Parameters: openai.FunctionParameters{"type": "object", "properties": map[string]any{}}})}
	params.Messages[0] = openai.UserMessage("what time is it? use a tool")
	ch := demoOpenAIAsk(t, c, params, stream)
	if len(ch.Message.ToolCalls) != 1 || ch.FinishReason != "tool_calls" || ch.Message.ToolCalls[0].Function.Name != "get_time" {
		t.Fatalf("reply = %+v %q; want a get_time call", ch.Message, ch.FinishReason)
	}
	params.Messages = append(params.Messages, ch.Message.ToParam(), openai.ToolMessage("12:00", ch.Message.ToolCalls[0].ID))
	if ch = demoOpenAIAsk(t, c, params, stream); ch.Message.Content != "Tool get_time returned: 12:00" || ch.FinishReason != "stop" {
		t.Errorf("final = %q %q; want Tool get_time returned: 12:00, stop", ch.Message.Content, ch.FinishReason)
	}
}
