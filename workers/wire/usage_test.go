package wire

import "testing"

func TestUsage(t *testing.T) {
	t.Run("anthropic body", func(t *testing.T) {
		u := AnthropicUsage([]byte(`{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":7}}`))
		if u != (Usage{Input: 17, Output: 7, CacheRead: 5, CacheWrite: 2, Known: true}) {
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
		u = OpenAIUsage([]byte(`{"usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920}}}`))
		if u != (Usage{Input: 2006, Output: 300, CacheRead: 1920, Known: true}) {
			t.Errorf("OpenAIUsage with cached tokens = %+v", u)
		}
	})
	t.Run("anthropic stream with cache tokens", func(t *testing.T) {
		var u Usage
		u.ObserveAnthropic("message_start", []byte(`{"message":{"usage":{"input_tokens":4,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}}`))
		u.ObserveAnthropic("message_delta", []byte(`{"usage":{"output_tokens":7}}`))
		if u != (Usage{Input: 2104, Output: 7, CacheRead: 2000, CacheWrite: 100, Known: true}) {
			t.Errorf("stream usage = %+v", u)
		}
		// A message_delta that restates some counts replaces those only.
		u.ObserveAnthropic("message_delta", []byte(`{"usage":{"input_tokens":5,"cache_read_input_tokens":2001,"output_tokens":9}}`))
		if u != (Usage{Input: 2106, Output: 9, CacheRead: 2001, CacheWrite: 100, Known: true}) {
			t.Errorf("stream usage after a restating delta = %+v", u)
		}
	})
	t.Run("garbage counts are clamped", func(t *testing.T) {
		u := AnthropicUsage([]byte(`{"usage":{"input_tokens":-5,"cache_read_input_tokens":1e300,"output_tokens":"x"}}`))
		if u.Input < 0 || u.Output != 0 || u.CacheRead > u.Input || u.CacheRead != maxTokens {
			t.Errorf("AnthropicUsage(garbage) = %+v", u)
		}
		u = OpenAIUsage([]byte(`{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":9}}}`))
		if u.CacheRead != 3 {
			t.Errorf("cached_tokens above prompt_tokens: CacheRead = %d; want 3", u.CacheRead)
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

// FuzzUsage feeds arbitrary bodies and stream events to the usage readers:
// they never panic, and every count they return is consistent (not
// negative, cache tokens part of the input).
func FuzzUsage(f *testing.F) {
	f.Add([]byte(`{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":7}}`))
	f.Add([]byte(`{"message":{"usage":{"input_tokens":12,"output_tokens":1}}}`))
	f.Add([]byte(`{"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":2}}}`))
	f.Add([]byte(`{"usage":{"input_tokens":-1,"cache_read_input_tokens":99999999999999999999}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Usage
		for _, u := range []Usage{AnthropicUsage(data), OpenAIUsage(data)} {
			checkUsage(t, u)
		}
		s.ObserveAnthropic("message_start", data)
		checkUsage(t, s)
		s.ObserveAnthropic("message_delta", data)
		checkUsage(t, s)
		s.ObserveOpenAI(data)
		checkUsage(t, s)
	})
}

func checkUsage(t *testing.T, u Usage) {
	t.Helper()
	if u.Input < 0 || u.Output < 0 || u.CacheRead < 0 || u.CacheWrite < 0 || u.CacheRead+u.CacheWrite > u.Input {
		t.Fatalf("inconsistent usage %+v", u)
	}
}
