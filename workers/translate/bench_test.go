package translate

import (
	"strings"
	"testing"
)

// benchAnthropicRequest is a Claude Code-like request: a long system prompt,
// tools and a multi-turn tool conversation.
func benchAnthropicRequest() []byte {
	var b strings.Builder
	b.WriteString(`{"model":"claude-sonnet","max_tokens":32000,"stream":true,"metadata":{"user_id":"{\"device_id\":\"d\",\"session_id\":\"s\"}"},`)
	b.WriteString(`"system":[{"type":"text","text":"` + strings.Repeat(`You are a careful assistant. `, 200) + `","cache_control":{"type":"ephemeral"}}],"tools":[`)
	for i := range 20 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"name":"tool_` + string(rune('a'+i)) + `","description":"` + strings.Repeat("Does a thing. ", 20) + `","input_schema":{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path"]}}`)
	}
	b.WriteString(`],"messages":[`)
	for i := range 10 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"role":"user","content":[{"type":"text","text":"Please edit the file."}]},`)
		b.WriteString(`{"role":"assistant","content":[{"type":"text","text":"Editing."},{"type":"tool_use","id":"toolu_1","name":"tool_a","input":{"path":"main.go","content":"package main\n"}}]},`)
		b.WriteString(`{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"` + strings.Repeat(`line of output\n`, 50) + `"}]}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func BenchmarkAnthropicToOpenAIRequest(b *testing.B) {
	body := benchAnthropicRequest()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := AnthropicToOpenAIRequest(body, "gpt-4o", testDepth); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenAIToAnthropicRequest(b *testing.B) {
	body, err := AnthropicToOpenAIRequest(benchAnthropicRequest(), "gpt-4o", testDepth)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := OpenAIToAnthropicRequest(body, "claude-sonnet-4-5", testDepth); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenAIToAnthropicStream(b *testing.B) {
	chunk := Event{Data: []byte(chunkHead + `"choices":[{"index":0,"delta":{"content":"Hello there, how are you?"},"logprobs":null,"finish_reason":null}],"usage":null}`)}
	b.ReportAllocs()
	for b.Loop() {
		c := NewOpenAIToAnthropicStream(testDepth)
		for range 100 {
			if _, err := c.Convert(chunk); err != nil {
				b.Fatal(err)
			}
		}
		c.Finish()
	}
}
