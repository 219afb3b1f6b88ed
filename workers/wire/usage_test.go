package wire

import "testing"

func TestUsage(t *testing.T) {
	t.Run("anthropic body", func(t *testing.T) {
		u := AnthropicUsage([]byte(`{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":7}}`))
		if u != (Usage{Input: 17, Output: 7, Known: true}) {
			t.Errorf("AnthropicUsage = %+v", u)
		}
	})
	t.Run("openai body", func(t *testing.T) {
		u := OpenAIUsage([]byte(`{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`))
		if u != (Usage{Input: 3, Output: 4, Known: true}) {
			t.Errorf("OpenAIUsage = %+v", u)
		}
		if u := OpenAIUsage([]byte(`{"usage":null}`)); u.Known {
			t.Errorf("null usage is known: %+v", u)
		}
	})
	t.Run("anthropic stream is cumulative", func(t *testing.T) {
		var u Usage
		u.ObserveAnthropic("message_start", []byte(`{"message":{"usage":{"input_tokens":12,"output_tokens":1}}}`))
		u.ObserveAnthropic("message_delta", []byte(`{"usage":{"output_tokens":5}}`))
		u.ObserveAnthropic("message_delta", []byte(`{"usage":{"output_tokens":9}}`))
		if u != (Usage{Input: 12, Output: 9, Known: true}) {
			t.Errorf("stream usage = %+v; want overwrite, not sum", u)
		}
	})
	t.Run("openai include_usage chunk", func(t *testing.T) {
		var u Usage
		u.ObserveOpenAI([]byte(`{"choices":[{"delta":{"content":"x"}}],"usage":null}`))
		u.ObserveOpenAI([]byte(`{"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}}`))
		if u != (Usage{Input: 8, Output: 2, Known: true}) {
			t.Errorf("stream usage = %+v", u)
		}
	})
}

func TestEstimateInputTokens(t *testing.T) {
	cases := []struct {
		body string
		want int
	}{
		{`{"model":"m","messages":[{"role":"user","content":"abcdefgh"}]}`, 3}, // "user"+"abcdefgh" = 12 chars
		{`{"model":"m","system":"abcd","messages":[]}`, 1},
		{`{"model":"m"}`, 1},
	}
	for _, tc := range cases {
		if got := EstimateInputTokens([]byte(tc.body)); got != tc.want {
			t.Errorf("EstimateInputTokens(%s) = %d; want %d", tc.body, got, tc.want)
		}
	}
}
