package simupstream_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/relaygw/relay/workers/simupstream"
	"github.com/tidwall/gjson"
)

// modes are the two ways every Echo-mode case is asked.
var modes = []struct {
	name   string
	stream bool
}{{"non-stream", false}, {"stream", true}}

// anthropicAsk sends params with the Anthropic SDK, streamed or not, and
// returns the (accumulated) message.
func anthropicAsk(t *testing.T, client anthropic.Client, params anthropic.MessageNewParams, stream bool) *anthropic.Message {
	t.Helper()
	if !stream {
		msg, err := client.Messages.New(t.Context(), params)
		if err != nil {
			t.Fatalf("Messages.New: %v", err)
		}
		return msg
	}
	s := client.Messages.NewStreaming(t.Context(), params)
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

// openAIAsk sends params with the OpenAI SDK, streamed (with usage) or not,
// and returns the (accumulated) completion.
func openAIAsk(t *testing.T, client openai.Client, params openai.ChatCompletionNewParams, stream bool) *openai.ChatCompletion {
	t.Helper()
	if !stream {
		c, err := client.Chat.Completions.New(t.Context(), params)
		if err != nil {
			t.Fatalf("Completions.New: %v", err)
		}
		return c
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	s := client.Chat.Completions.NewStreaming(t.Context(), params)
	defer s.Close()
	var acc openai.ChatCompletionAccumulator
	for s.Next() {
		if chunk := s.Current(); !acc.AddChunk(chunk) {
			t.Fatalf("AddChunk rejected %s", chunk.RawJSON())
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(acc.Choices) != 1 {
		t.Fatalf("choices = %+v; want one", acc.Choices)
	}
	return &acc.ChatCompletion
}

// echoCases are the text replies shared by the Anthropic and OpenAI tests.
var echoCases = []struct {
	name      string
	parts     []string // the last user message: one string, or text blocks
	maxTokens int64
	want      string
	capped    bool
}{
	{"string", []string{"hello  there\n\"friend\""}, 100, `You said: hello there "friend"`, false},
	{"blocks", []string{"<system-reminder>ignore me</system-reminder>", "first", "second part"}, 100, "You said: first second part", false},
	{"capped", []string{"one two three four"}, 3, "You said: one", true},
	{"empty", []string{""}, 100, "You said:", false},
	{"long", []string{strings.Repeat("w ", 300)}, 1000, "You said:" + strings.Repeat(" w", 254), false}, // 256 words at most
}

func TestEchoAnthropic(t *testing.T) {
	s := start(t, simupstream.Options{Echo: true})
	client := anthropicClient(t, s)
	for _, tc := range echoCases {
		var content []anthropic.ContentBlockParamUnion
		for _, p := range tc.parts {
			content = append(content, anthropic.NewTextBlock(p))
		}
		params := anthropic.MessageNewParams{
			Model: "claude-sim", MaxTokens: tc.maxTokens,
			Messages: []anthropic.MessageParam{
				anthropic.NewUserMessage(anthropic.NewTextBlock("an earlier turn")),
				anthropic.NewAssistantMessage(anthropic.NewTextBlock("ok")),
				anthropic.NewUserMessage(content...),
			},
		}
		wantStop := anthropic.StopReasonEndTurn
		if tc.capped {
			wantStop = anthropic.StopReasonMaxTokens
		}
		for _, m := range modes {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				msg := anthropicAsk(t, client, params, m.stream)
				if len(msg.Content) != 1 || msg.Content[0].Type != "text" || msg.Content[0].Text != tc.want {
					t.Errorf("content = %+v; want text %q", msg.Content, tc.want)
				}
				if words := int64(len(strings.Fields(tc.want))); msg.Usage.OutputTokens != words || msg.StopReason != wantStop {
					t.Errorf("output_tokens, stop_reason = %d, %q; want %d, %q", msg.Usage.OutputTokens, msg.StopReason, words, wantStop)
				}
			})
		}
	}
}

func TestEchoOpenAI(t *testing.T) {
	s := start(t, simupstream.Options{Echo: true})
	client := openAIClient(t, s)
	for _, tc := range echoCases {
		last := openai.UserMessage(tc.parts[0])
		if len(tc.parts) > 1 {
			var parts []openai.ChatCompletionContentPartUnionParam
			for _, p := range tc.parts {
				parts = append(parts, openai.TextContentPart(p))
			}
			last = openai.UserMessage(parts)
		}
		params := openai.ChatCompletionNewParams{
			Model:               "gpt-sim",
			MaxCompletionTokens: openai.Int(tc.maxTokens),
			Messages: []openai.ChatCompletionMessageParamUnion{
				openai.SystemMessage("be brief"), openai.UserMessage("an earlier turn"), openai.AssistantMessage("ok"), last,
			},
		}
		wantFinish := "stop"
		if tc.capped {
			wantFinish = "length"
		}
		for _, m := range modes {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				c := openAIAsk(t, client, params, m.stream)
				ch := c.Choices[0]
				if ch.Message.Content != tc.want || len(ch.Message.ToolCalls) != 0 || ch.FinishReason != wantFinish {
					t.Errorf("reply = %q, %d tool calls, %q; want %q, none, %q", ch.Message.Content, len(ch.Message.ToolCalls), ch.FinishReason, tc.want, wantFinish)
				}
				if words := int64(len(strings.Fields(tc.want))); c.Usage.CompletionTokens != words {
					t.Errorf("completion_tokens = %d; want %d", c.Usage.CompletionTokens, words)
				}
			})
		}
	}
}

// toolCases are the tool requests shared by the Anthropic and OpenAI tool
// loop tests. Two tools are offered: get_weather (required city, units
// enum ["c","f"], days integer) and lookup (no required properties).
// choice is the tool_choice: "" (left out), "any", "none" or a tool name.
var toolCases = []struct {
	name     string
	prompt   string
	choice   string
	wantTool string
	wantArgs string // JSON
}{
	{"named", "Please USE lookup: anything", "", "lookup", `{}`},
	{"named-args", "use get_weather: Paris, France", "", "get_weather", `{"city":"Paris, France","units":"c","days":0}`},
	{"word-tool", "call a tool for me, \"please\"", "", "get_weather", `{"city":"call a tool for me, \"please\"","units":"c","days":0}`},
	{"no-trigger", "toolbox, misuse lookups and reuse lookup", "", "", ``},
	{"choice-any", "Rome", "any", "get_weather", `{"city":"Rome","units":"c","days":0}`},
	{"choice-none", "use lookup", "none", "", ``},
	{"choice-named", "use get_weather: Oslo", "lookup", "lookup", `{}`},
}

// anthropicToolChoice returns the Anthropic tool_choice for a toolCases choice.
func anthropicToolChoice(choice string) anthropic.ToolChoiceUnionParam {
	switch choice {
	case "":
		return anthropic.ToolChoiceUnionParam{}
	case "any":
		return anthropic.ToolChoiceUnionParam{OfAny: &anthropic.ToolChoiceAnyParam{}}
	case "none":
		return anthropic.ToolChoiceUnionParam{OfNone: &anthropic.ToolChoiceNoneParam{}}
	}
	return anthropic.ToolChoiceUnionParam{OfTool: &anthropic.ToolChoiceToolParam{Name: choice}}
}

// openAIToolChoice returns the OpenAI tool_choice for a toolCases choice.
func openAIToolChoice(choice string) openai.ChatCompletionToolChoiceOptionUnionParam {
	switch choice {
	case "":
		return openai.ChatCompletionToolChoiceOptionUnionParam{}
	case "any":
		return openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
	case "none":
		return openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("none")}
	}
	return openai.ToolChoiceOptionFunctionToolChoice(openai.ChatCompletionNamedToolChoiceFunctionParam{Name: choice})
}

// weatherSchema is get_weather's input schema.
var weatherSchema = map[string]any{
	"city":  map[string]any{"type": "string"},
	"units": map[string]any{"type": "string", "enum": []string{"c", "f"}},
	"days":  map[string]any{"type": "integer"},
	"note":  map[string]any{"type": "string"},
}

// sameJSON reports whether a and b are equal JSON values.
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal([]byte(a), &va); err != nil {
		t.Errorf("invalid JSON %q: %v", a, err)
		return false
	}
	if err := json.Unmarshal([]byte(b), &vb); err != nil {
		t.Fatalf("invalid JSON %q: %v", b, err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

func TestToolLoopAnthropic(t *testing.T) {
	s := start(t, simupstream.Options{Echo: true})
	client := anthropicClient(t, s)
	tools := []anthropic.ToolUnionParam{
		{OfTool: &anthropic.ToolParam{Name: "get_weather", InputSchema: anthropic.ToolInputSchemaParam{
			Properties: weatherSchema, Required: []string{"city", "units", "days"}}}},
		{OfTool: &anthropic.ToolParam{Name: "lookup", InputSchema: anthropic.ToolInputSchemaParam{}}},
	}
	for _, tc := range toolCases {
		for _, m := range modes {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				params := anthropic.MessageNewParams{
					Model: "claude-sim", MaxTokens: 1024, Tools: tools, ToolChoice: anthropicToolChoice(tc.choice),
					Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(tc.prompt))},
				}
				msg := anthropicAsk(t, client, params, m.stream)
				if tc.wantTool == "" {
					if len(msg.Content) != 1 || msg.Content[0].Text != "You said: "+tc.prompt || msg.StopReason != anthropic.StopReasonEndTurn {
						t.Fatalf("reply = %+v %q; want an echo", msg.Content, msg.StopReason)
					}
					return
				}
				if len(msg.Content) != 1 || msg.StopReason != anthropic.StopReasonToolUse {
					t.Fatalf("reply = %+v %q; want one tool_use block", msg.Content, msg.StopReason)
				}
				use := msg.Content[0].AsToolUse()
				if use.Name != tc.wantTool || !strings.HasPrefix(use.ID, "toolu_sim") || !sameJSON(t, string(use.Input), tc.wantArgs) {
					t.Fatalf("tool_use = %s %s %s; want %s %s", use.ID, use.Name, use.Input, tc.wantTool, tc.wantArgs)
				}
				if msg.Usage.OutputTokens < 1 {
					t.Errorf("output_tokens = %d; want > 0", msg.Usage.OutputTokens)
				}

				params.Messages = append(params.Messages, msg.ToParam(),
					anthropic.NewUserMessage(anthropic.NewToolResultBlock(use.ID, "sunny, 21 C", false)))
				final := anthropicAsk(t, client, params, m.stream)
				want := "Tool " + tc.wantTool + " returned: sunny, 21 C"
				if len(final.Content) != 1 || final.Content[0].Text != want || final.StopReason != anthropic.StopReasonEndTurn {
					t.Errorf("final = %+v %q; want text %q, end_turn", final.Content, final.StopReason, want)
				}
				if final.Usage.OutputTokens != int64(len(strings.Fields(want))) {
					t.Errorf("final output_tokens = %d; want %d", final.Usage.OutputTokens, len(strings.Fields(want)))
				}
			})
		}
	}
}

func TestToolLoopOpenAI(t *testing.T) {
	s := start(t, simupstream.Options{Echo: true})
	client := openAIClient(t, s)
	tools := []openai.ChatCompletionToolUnionParam{
		openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "get_weather", Parameters: openai.FunctionParameters{
			"type": "object", "properties": weatherSchema, "required": []string{"city", "units", "days"}}}),
		openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "lookup"}),
	}
	for _, tc := range toolCases {
		for _, m := range modes {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				params := openai.ChatCompletionNewParams{
					Model: "gpt-sim", Tools: tools, ToolChoice: openAIToolChoice(tc.choice),
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(tc.prompt)},
				}
				c := openAIAsk(t, client, params, m.stream)
				ch := c.Choices[0]
				if tc.wantTool == "" {
					if ch.Message.Content != "You said: "+tc.prompt || ch.FinishReason != "stop" {
						t.Fatalf("reply = %q %q; want an echo", ch.Message.Content, ch.FinishReason)
					}
					return
				}
				if len(ch.Message.ToolCalls) != 1 || ch.FinishReason != "tool_calls" {
					t.Fatalf("reply = %+v %q; want one tool call", ch.Message, ch.FinishReason)
				}
				call := ch.Message.ToolCalls[0]
				if call.Function.Name != tc.wantTool || call.Type != "function" || !strings.HasPrefix(call.ID, "call_sim") ||
					!sameJSON(t, call.Function.Arguments, tc.wantArgs) {
					t.Fatalf("tool call = %s %s %s %s; want function %s %s", call.ID, call.Type, call.Function.Name, call.Function.Arguments, tc.wantTool, tc.wantArgs)
				}
				if c.Usage.CompletionTokens < 1 {
					t.Errorf("completion_tokens = %d; want > 0", c.Usage.CompletionTokens)
				}

				params.Messages = append(params.Messages, ch.Message.ToParam(), openai.ToolMessage("sunny, 21 C", call.ID))
				final := openAIAsk(t, client, params, m.stream).Choices[0]
				want := "Tool " + tc.wantTool + " returned: sunny, 21 C"
				if final.Message.Content != want || len(final.Message.ToolCalls) != 0 || final.FinishReason != "stop" {
					t.Errorf("final = %q, %d tool calls, %q; want %q, none, stop", final.Message.Content, len(final.Message.ToolCalls), final.FinishReason, want)
				}
			})
		}
	}
}

// TestToolStreamShapes checks the raw stream events of a tool call: the
// SDK accumulators above accept more than the wire formats allow.
func TestToolStreamShapes(t *testing.T) {
	s := start(t, simupstream.Options{Echo: true})
	tests := []struct {
		name, path, body string
		hdr              map[string]string
		check            func(t *testing.T, evs []sseEvent)
	}{
		{"anthropic", "/v1/messages", `{"model":"m","max_tokens":99,"stream":true,"tools":[{"name":"Bash","input_schema":{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}}],` +
			`"messages":[{"role":"user","content":"use bash echo hello world"}]}`, map[string]string{"anthropic-version": "2023-06-01"},
			func(t *testing.T, evs []sseEvent) {
				var names, partial []string
				for _, ev := range evs {
					names = append(names, ev.name)
					if gjson.Get(ev.data, "type").Str != ev.name {
						t.Errorf("event %s has data type %q", ev.name, gjson.Get(ev.data, "type").Str)
					}
					if p := gjson.Get(ev.data, "delta.partial_json"); p.Exists() {
						partial = append(partial, p.Str)
					}
				}
				want := "message_start content_block_start content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
				if strings.Join(names, " ") != want {
					t.Errorf("events = %v; want %s", names, want)
				}
				if got := strings.Join(partial, ""); got != `{"command":"echo hello world"}` || len(partial) != 3 {
					t.Errorf("partial_json = %q; want 3 pieces of the arguments", partial)
				}
				start := gjson.Get(evs[1].data, "content_block")
				if start.Get("type").Str != "tool_use" || start.Get("name").Str != "Bash" || start.Get("input").Raw != "{}" {
					t.Errorf("content_block_start = %s", evs[1].data)
				}
				if md := evs[len(evs)-2].data; gjson.Get(md, "delta.stop_reason").Str != "tool_use" || gjson.Get(md, "usage.output_tokens").Int() != 3 {
					t.Errorf("message_delta = %s; want tool_use, 3 output tokens", md)
				}
			}},
		{"openai", "/v1/chat/completions", `{"model":"m","stream":true,"tools":[{"type":"function","function":{"name":"f","parameters":{"required":["q"]}}}],` +
			`"messages":[{"role":"user","content":"a tool please"}]}`, nil,
			func(t *testing.T, evs []sseEvent) {
				first := gjson.Get(evs[0].data, "choices.0.delta.tool_calls.0")
				if first.Get("index").Int() != 0 || first.Get("id").Str == "" || first.Get("type").Str != "function" ||
					first.Get("function.name").Str != "f" || first.Get("function.arguments").Str != "" {
					t.Errorf("first chunk = %s", evs[0].data)
				}
				var args string
				for _, ev := range evs[1 : len(evs)-2] {
					d := gjson.Get(ev.data, "choices.0.delta.tool_calls.0")
					if d.Get("index").Int() != 0 || d.Get("id").Exists() {
						t.Errorf("argument chunk = %s", ev.data)
					}
					args += d.Get("function.arguments").Str
				}
				if args != `{"q":"a tool please"}` {
					t.Errorf("arguments = %q", args)
				}
				if f := gjson.Get(evs[len(evs)-2].data, "choices.0.finish_reason").Str; f != "tool_calls" {
					t.Errorf("finish_reason = %q; want tool_calls", f)
				}
				if evs[len(evs)-1].data != "[DONE]" {
					t.Errorf("last event = %q; want [DONE]", evs[len(evs)-1].data)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := do(t.Context(), httpClient(t), http.MethodPost, s.URL()+tc.path, tc.body, tc.hdr)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("POST %s = %v, %v %s", tc.path, err, resp, body)
			}
			tc.check(t, parseSSE(t, body))
		})
	}
}
