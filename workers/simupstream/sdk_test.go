package simupstream_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"
	"github.com/relaygw/relay/workers/simupstream"
	"github.com/tidwall/gjson"
)

func anthropicClient(t *testing.T, s *simupstream.Server) anthropic.Client {
	t.Helper()
	return anthropic.NewClient(
		aoption.WithBaseURL(s.URL()),
		aoption.WithAPIKey("x"),
		aoption.WithMaxRetries(0),
		aoption.WithHTTPClient(httpClient(t)),
	)
}

func openAIClient(t *testing.T, s *simupstream.Server) openai.Client {
	t.Helper()
	return openai.NewClient(
		ooption.WithBaseURL(s.URL()+"/v1"),
		ooption.WithAPIKey("x"),
		ooption.WithMaxRetries(0),
		ooption.WithHTTPClient(httpClient(t)),
	)
}

// prompt and system are 40 + 4 characters: 11 input tokens.
const (
	prompt          = "0123456789012345678901234567890123456789"
	system          = "abcd"
	wantInputTokens = 11
)

// replyCases are shared by the Anthropic and OpenAI SDK tests.
var replyCases = []struct {
	name         string
	outputTokens int
	maxTokens    int64
	wantText     string
	wantOut      int64
	wantCapped   bool
}{
	{"default", 0, 1024, "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7", 8, false},
	{"custom", 3, 1024, "tok0 tok1 tok2", 3, false},
	{"capped", 20, 2, "tok0 tok1", 2, true},
	{"one", 1, 1, "tok0", 1, false},
}

func TestAnthropicSDK(t *testing.T) {
	for _, tc := range replyCases {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, simupstream.Options{OutputTokens: tc.outputTokens})
			client := anthropicClient(t, s)
			params := anthropic.MessageNewParams{
				Model:     "claude-sim-1",
				MaxTokens: tc.maxTokens,
				System:    []anthropic.TextBlockParam{{Text: system}},
				Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
			}
			wantStop := anthropic.StopReasonEndTurn
			if tc.wantCapped {
				wantStop = anthropic.StopReasonMaxTokens
			}
			check := func(t *testing.T, msg *anthropic.Message) {
				t.Helper()
				if len(msg.Content) != 1 || msg.Content[0].Text != tc.wantText {
					t.Errorf("content = %+v; want one text block %q", msg.Content, tc.wantText)
				}
				if msg.Model != "claude-sim-1" {
					t.Errorf("model = %q; want claude-sim-1", msg.Model)
				}
				if msg.Usage.InputTokens != wantInputTokens || msg.Usage.OutputTokens != tc.wantOut {
					t.Errorf("usage = %d in, %d out; want %d, %d", msg.Usage.InputTokens, msg.Usage.OutputTokens, wantInputTokens, tc.wantOut)
				}
				if msg.StopReason != wantStop {
					t.Errorf("stop_reason = %q; want %q", msg.StopReason, wantStop)
				}
			}

			t.Run("non-stream", func(t *testing.T) {
				var resp *http.Response
				msg, err := client.Messages.New(t.Context(), params, aoption.WithResponseInto(&resp))
				if err != nil {
					t.Fatalf("Messages.New: %v", err)
				}
				check(t, msg)
				if id := resp.Header.Get("request-id"); !strings.HasPrefix(id, "req_") {
					t.Errorf("request-id = %q; want req_…", id)
				}
			})
			t.Run("stream", func(t *testing.T) {
				stream := client.Messages.NewStreaming(t.Context(), params)
				defer stream.Close()
				var msg anthropic.Message
				for stream.Next() {
					if err := msg.Accumulate(stream.Current()); err != nil {
						t.Fatalf("Accumulate: %v", err)
					}
				}
				if err := stream.Err(); err != nil {
					t.Fatalf("stream: %v", err)
				}
				check(t, &msg)
			})
		})
	}
}

func TestAnthropicCountTokens(t *testing.T) {
	s := start(t, simupstream.Options{})
	client := anthropicClient(t, s)
	res, err := client.Messages.CountTokens(t.Context(), anthropic.MessageCountTokensParams{
		Model:    "claude-sim",
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt + system))},
	})
	if err != nil {
		t.Fatalf("CountTokens: %v", err)
	}
	if res.InputTokens != wantInputTokens {
		t.Errorf("CountTokens = %d; want %d", res.InputTokens, wantInputTokens)
	}
}

func TestOpenAISDK(t *testing.T) {
	for _, tc := range replyCases {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, simupstream.Options{OutputTokens: tc.outputTokens})
			client := openAIClient(t, s)
			params := openai.ChatCompletionNewParams{
				Model:               "gpt-sim-1",
				MaxCompletionTokens: openai.Int(tc.maxTokens),
				Messages:            []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system), openai.UserMessage(prompt)},
			}
			wantFinish := "stop"
			if tc.wantCapped {
				wantFinish = "length"
			}
			check := func(t *testing.T, c *openai.ChatCompletion, wantUsage bool) {
				t.Helper()
				if len(c.Choices) != 1 || c.Choices[0].Message.Content != tc.wantText {
					t.Fatalf("choices = %+v; want one with %q", c.Choices, tc.wantText)
				}
				if c.Choices[0].FinishReason != wantFinish {
					t.Errorf("finish_reason = %q; want %q", c.Choices[0].FinishReason, wantFinish)
				}
				if c.Model != "gpt-sim-1" {
					t.Errorf("model = %q; want gpt-sim-1", c.Model)
				}
				var wantIn, wantOut int64
				if wantUsage {
					wantIn, wantOut = wantInputTokens, tc.wantOut
				}
				u := c.Usage
				if u.PromptTokens != wantIn || u.CompletionTokens != wantOut || u.TotalTokens != wantIn+wantOut {
					t.Errorf("usage = %d/%d/%d; want %d/%d/%d", u.PromptTokens, u.CompletionTokens, u.TotalTokens, wantIn, wantOut, wantIn+wantOut)
				}
			}

			t.Run("non-stream", func(t *testing.T) {
				var resp *http.Response
				c, err := client.Chat.Completions.New(t.Context(), params, ooption.WithResponseInto(&resp))
				if err != nil {
					t.Fatalf("Completions.New: %v", err)
				}
				check(t, c, true)
				if id := resp.Header.Get("x-request-id"); !strings.HasPrefix(id, "req_") {
					t.Errorf("x-request-id = %q; want req_…", id)
				}
			})
			for _, includeUsage := range []bool{false, true} {
				name := "stream"
				if includeUsage {
					name = "stream-include-usage"
				}
				t.Run(name, func(t *testing.T) {
					p := params
					if includeUsage {
						p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
					}
					stream := client.Chat.Completions.NewStreaming(t.Context(), p)
					defer stream.Close()
					var acc openai.ChatCompletionAccumulator
					usageChunks := 0
					for stream.Next() {
						chunk := stream.Current()
						if !acc.AddChunk(chunk) {
							t.Fatalf("AddChunk rejected %s", chunk.RawJSON())
						}
						if len(chunk.Choices) == 0 {
							usageChunks++
						}
					}
					if err := stream.Err(); err != nil {
						t.Fatalf("stream: %v", err)
					}
					wantChunks := 0
					if includeUsage {
						wantChunks = 1
					}
					if usageChunks != wantChunks {
						t.Errorf("usage chunks = %d; want %d", usageChunks, wantChunks)
					}
					check(t, &acc.ChatCompletion, includeUsage)
				})
			}
		})
	}
}

func TestModels(t *testing.T) {
	s := start(t, simupstream.Options{})
	t.Run("anthropic-sdk", func(t *testing.T) {
		client := anthropicClient(t, s)
		page, err := client.Models.List(t.Context(), anthropic.ModelListParams{})
		if err != nil {
			t.Fatalf("Models.List: %v", err)
		}
		if len(page.Data) == 0 || page.Data[0].Type != "model" || !strings.HasPrefix(page.Data[0].ID, "claude") {
			t.Errorf("Models.List = %+v; want claude models", page.Data)
		}
	})
	t.Run("openai-sdk", func(t *testing.T) {
		client := openAIClient(t, s)
		page, err := client.Models.List(t.Context())
		if err != nil {
			t.Fatalf("Models.List: %v", err)
		}
		if len(page.Data) == 0 || page.Data[0].Object != "model" || page.Data[0].OwnedBy == "" {
			t.Errorf("Models.List = %+v; want models", page.Data)
		}
	})
	tests := []struct {
		name    string
		hdr     map[string]string
		present string // a path that only this shape has
	}{
		{"anthropic-shape", map[string]string{"anthropic-version": "2023-06-01"}, "has_more"},
		{"openai-shape", nil, "object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := do(t.Context(), httpClient(t), http.MethodGet, s.URL()+"/v1/models?limit=1000", "", tc.hdr)
			if err != nil {
				t.Fatalf("GET /v1/models: %v", err)
			}
			if resp.StatusCode != http.StatusOK || !gjson.GetBytes(body, tc.present).Exists() {
				t.Errorf("GET /v1/models = %d %s; want 200 with %q", resp.StatusCode, body, tc.present)
			}
		})
	}
}

func TestSDKErrors(t *testing.T) {
	tests := []struct {
		fault    simupstream.Fault
		status   int
		anthType string
		oaiType  string
		oaiCode  string
	}{
		{simupstream.Fault529, 529, "overloaded_error", "server_error", "overloaded"},
		{simupstream.Fault429, 429, "rate_limit_error", "requests", "rate_limit_exceeded"},
		{simupstream.Fault401, 401, "authentication_error", "invalid_request_error", "invalid_api_key"},
		{simupstream.Fault500, 500, "api_error", "server_error", ""},
	}
	for _, tc := range tests {
		t.Run(string(tc.fault), func(t *testing.T) {
			s := start(t, simupstream.Options{})
			s.SetFault(tc.fault)
			aclient := anthropicClient(t, s)
			_, err := aclient.Messages.New(t.Context(), anthropic.MessageNewParams{
				Model: "m", MaxTokens: 10,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
			})
			var aerr *anthropic.Error
			if !errors.As(err, &aerr) {
				t.Fatalf("Messages.New error = %v; want *anthropic.Error", err)
			}
			if aerr.StatusCode != tc.status || string(aerr.Type()) != tc.anthType || !strings.HasPrefix(aerr.RequestID, "req_") {
				t.Errorf("anthropic error = %d %q %q; want %d %q req_…", aerr.StatusCode, aerr.Type(), aerr.RequestID, tc.status, tc.anthType)
			}

			oclient := openAIClient(t, s)
			_, err = oclient.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
				Model:    "m",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			})
			var oerr *openai.Error
			if !errors.As(err, &oerr) {
				t.Fatalf("Completions.New error = %v; want *openai.Error", err)
			}
			if oerr.StatusCode != tc.status || oerr.Type != tc.oaiType || oerr.Code != tc.oaiCode {
				t.Errorf("openai error = %d %q %q; want %d %q %q", oerr.StatusCode, oerr.Type, oerr.Code, tc.status, tc.oaiType, tc.oaiCode)
			}
		})
	}
}

// TestModelsPagination pages GET /v1/models in Anthropic's shape the way
// the official SDK's auto-pager and Claude Code do.
func TestModelsPagination(t *testing.T) {
	s := start(t, simupstream.Options{})
	hdr := map[string]string{"anthropic-version": "2023-06-01"}
	get := func(t *testing.T, query string) (int, []byte) {
		t.Helper()
		resp, body, err := do(t.Context(), httpClient(t), http.MethodGet, s.URL()+"/v1/models"+query, "", hdr)
		if err != nil {
			t.Fatalf("GET /v1/models%s: %v", query, err)
		}
		return resp.StatusCode, body
	}
	_, all := get(t, "?limit=1000")
	ids := gjson.GetBytes(all, "data.#.id").Array()
	if len(ids) < 4 || gjson.GetBytes(all, "has_more").Bool() {
		t.Fatalf("?limit=1000 = %s; want every model on one page", all)
	}
	var paged []string
	after := ""
	for range len(ids) {
		q := "?limit=2"
		if after != "" {
			q += "&after_id=" + after
		}
		_, page := get(t, q)
		for _, id := range gjson.GetBytes(page, "data.#.id").Array() {
			paged = append(paged, id.String())
		}
		if !gjson.GetBytes(page, "has_more").Bool() {
			break
		}
		after = gjson.GetBytes(page, "last_id").String()
	}
	if len(paged) != len(ids) {
		t.Fatalf("paged by 2: %v; want the %d models of one page", paged, len(ids))
	}
	_, before := get(t, "?limit=2&before_id="+ids[3].String())
	if got := gjson.GetBytes(before, "data.#.id").String(); got != `["`+ids[1].String()+`","`+ids[2].String()+`"]` ||
		!gjson.GetBytes(before, "has_more").Bool() {
		t.Errorf("before_id=%s limit=2: %s", ids[3], before)
	}
	tests := []struct {
		query  string
		status int
	}{
		{"?limit=0", 400},
		{"?limit=1001", 400},
		{"?limit=x", 400},
		{"?after_id=a&before_id=b", 400},
		{"?after_id=no-such-model", 200},
	}
	for _, tc := range tests {
		if st, body := get(t, tc.query); st != tc.status {
			t.Errorf("GET /v1/models%s = %d %s; want %d", tc.query, st, body, tc.status)
		}
	}
}
