package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"
)

func anthropicClient(r *relay, key string, opts ...aoption.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]aoption.RequestOption{
		aoption.WithBaseURL(r.URL), aoption.WithAPIKey(key), aoption.WithMaxRetries(0),
	}, opts...)...)
}

func openaiClient(r *relay, key string) openai.Client {
	return openai.NewClient(ooption.WithBaseURL(r.URL+"/v1"), ooption.WithAPIKey(key), ooption.WithMaxRetries(0))
}

func messageParams(model string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     anthropic.Model(model),
		MaxTokens: 16,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello there"))},
	}
}

func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:     openai.ChatModel(model),
		MaxTokens: openai.Int(16),
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there")},
	}
}

func TestAnthropicSDK(t *testing.T) {
	r := newRelay(t, withClaudeFallbacks("gpt-4o"))
	ctx := context.Background()
	c := anthropicClient(r, canaryKey)

	t.Run("create", func(t *testing.T) {
		msg, err := c.Messages.New(ctx, messageParams("claude-sonnet"))
		if err != nil {
			t.Fatalf("Messages.New: %v", err)
		}
		if len(msg.Content) == 0 || !strings.HasPrefix(msg.Content[0].Text, "tok0") {
			t.Errorf("content = %+v; want simulated text", msg.Content)
		}
		if msg.Model != "claude-sonnet-4-5" || msg.Usage.OutputTokens == 0 {
			t.Errorf("model %q usage %+v; want upstream model and usage", msg.Model, msg.Usage)
		}
	})
	t.Run("stream", func(t *testing.T) {
		stream := c.Messages.NewStreaming(ctx, messageParams("claude-sonnet"))
		defer stream.Close()
		var msg anthropic.Message
		events := 0
		for stream.Next() {
			events++
			if err := msg.Accumulate(stream.Current()); err != nil {
				t.Fatalf("Accumulate: %v", err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if events < 5 || len(msg.Content) != 1 || !strings.HasPrefix(msg.Content[0].Text, "tok0") || msg.Usage.OutputTokens == 0 {
			t.Errorf("accumulated %d events into %+v", events, msg)
		}
	})
	t.Run("beta query string", func(t *testing.T) {
		msg, err := c.Beta.Messages.New(ctx, anthropic.BetaMessageNewParams{
			Model: "claude-sonnet", MaxTokens: 16,
			Messages: []anthropic.BetaMessageParam{anthropic.NewBetaUserMessage(anthropic.NewBetaTextBlock("hi"))},
			Betas:    []anthropic.AnthropicBeta{"interleaved-thinking-2025-05-14"},
		})
		if err != nil {
			t.Fatalf("Beta.Messages.New: %v", err)
		}
		if len(msg.Content) == 0 {
			t.Fatalf("empty beta message")
		}
		reqs := r.Anthropic.Requests()
		last := reqs[len(reqs)-1]
		if last.Header.Get("Anthropic-Beta") != "interleaved-thinking-2025-05-14" {
			t.Errorf("anthropic-beta upstream = %q", last.Header.Get("Anthropic-Beta"))
		}
	})
	t.Run("fallback across formats", func(t *testing.T) {
		stream := c.Messages.NewStreaming(ctx, messageParams("claude-sonnet"), aoption.WithHeader("x-sim-fault", "529"))
		defer stream.Close()
		var msg anthropic.Message
		for stream.Next() {
			if err := msg.Accumulate(stream.Current()); err != nil {
				t.Fatalf("Accumulate: %v", err)
			}
		}
		// The fault header reaches every upstream, so the OpenAI fallback
		// fails too: the client gets a typed overloaded error.
		var apiErr *anthropic.Error
		if err := stream.Err(); !errors.As(err, &apiErr) || apiErr.StatusCode != 529 {
			t.Fatalf("stream error = %v; want 529", err)
		}
		if got := r.OpenAI.Stats().Requests; got == 0 {
			t.Errorf("fallback route never tried")
		}
	})
	t.Run("fallback serves", func(t *testing.T) {
		r.Anthropic.SetFault("500")
		defer r.Anthropic.SetFault("")
		msg, err := c.Messages.New(ctx, messageParams("claude-sonnet"))
		if err != nil {
			t.Fatalf("Messages.New with failing primary: %v", err)
		}
		if msg.Type != "message" || len(msg.Content) == 0 || msg.Content[0].Text == "" {
			t.Errorf("translated message = %+v", msg)
		}
		stream := c.Messages.NewStreaming(ctx, messageParams("claude-sonnet"))
		defer stream.Close()
		var acc anthropic.Message
		for stream.Next() {
			if err := acc.Accumulate(stream.Current()); err != nil {
				t.Fatalf("Accumulate translated stream: %v", err)
			}
		}
		if err := stream.Err(); err != nil || len(acc.Content) == 0 || acc.Content[0].Text == "" {
			t.Errorf("translated stream: err %v, message %+v", err, acc)
		}
	})
	errCases := []struct {
		name   string
		client anthropic.Client
		model  string
		status int
		typ    string
	}{
		{"bad key", anthropicClient(r, "nope"), "claude-sonnet", 401, "authentication_error"},
		{"forbidden route", anthropicClient(r, limitedKey), "claude-sonnet", 403, "permission_error"},
		{"unknown model", c, "claude-nothing", 404, "not_found_error"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.client.Messages.New(ctx, messageParams(tc.model))
			var apiErr *anthropic.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v; want *anthropic.Error", err)
			}
			if apiErr.StatusCode != tc.status || string(apiErr.Type()) != tc.typ {
				t.Errorf("error %d %q; want %d %q", apiErr.StatusCode, apiErr.Type(), tc.status, tc.typ)
			}
			if apiErr.RequestID == "" {
				t.Errorf("no request id on error")
			}
		})
	}
}

func TestOpenAISDK(t *testing.T) {
	r := newRelay(t)
	ctx := context.Background()
	c := openaiClient(r, canaryKey)

	t.Run("create", func(t *testing.T) {
		cc, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o"))
		if err != nil {
			t.Fatalf("Completions.New: %v", err)
		}
		if len(cc.Choices) != 1 || !strings.HasPrefix(cc.Choices[0].Message.Content, "tok0") || cc.Usage.CompletionTokens == 0 {
			t.Errorf("completion = %+v", cc)
		}
	})
	t.Run("stream with usage", func(t *testing.T) {
		p := chatParams("gpt-4o")
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		stream := c.Chat.Completions.NewStreaming(ctx, p)
		defer stream.Close()
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if len(acc.Choices) != 1 || !strings.HasPrefix(acc.Choices[0].Message.Content, "tok0") || acc.Usage.TotalTokens == 0 {
			t.Errorf("accumulated %+v", acc.ChatCompletion)
		}
	})
	t.Run("anthropic route from openai client", func(t *testing.T) {
		stream := c.Chat.Completions.NewStreaming(ctx, chatParams("claude-sonnet"))
		defer stream.Close()
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if len(acc.Choices) != 1 || !strings.HasPrefix(acc.Choices[0].Message.Content, "tok0") {
			t.Errorf("accumulated %+v", acc.ChatCompletion)
		}
	})
	errCases := []struct {
		name   string
		client openai.Client
		model  string
		status int
		code   string
	}{
		{"bad key", openaiClient(r, "nope"), "gpt-4o", 401, "invalid_api_key"},
		{"forbidden route", openaiClient(r, limitedKey), "claude-sonnet", 403, "permission_denied"},
		{"unknown model", c, "gpt-nothing", 404, "model_not_found"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.client.Chat.Completions.New(ctx, chatParams(tc.model))
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v; want *openai.Error", err)
			}
			if apiErr.StatusCode != tc.status || apiErr.Code != tc.code {
				t.Errorf("error %d %q; want %d %q", apiErr.StatusCode, apiErr.Code, tc.status, tc.code)
			}
		})
	}
	t.Run("overloaded is 503", func(t *testing.T) {
		_, err := c.Chat.Completions.New(ctx, chatParams("gpt-4o"), ooption.WithHeader("x-sim-fault", "503"))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("err = %v; want 503", err)
		}
	})
}
