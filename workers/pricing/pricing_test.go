package pricing_test

import (
	"math"
	"testing"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers/pricing"
)

func TestCost(t *testing.T) {
	tab := pricing.New([]configs.Price{
		{Model: "claude-*", Input: 1, Output: 2},
		{Model: "claude-sonnet-*", Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75, BatchDiscount: 0.5},
		{Model: "claude-sonnet-4-5", Input: 4, Output: 16},
		{Model: "gpt-*", Input: 2.5, Output: 10},
	})
	tests := []struct {
		model string
		u     pricing.Usage
		batch bool
		want  float64
		known bool
	}{
		{"claude-sonnet-4-5", pricing.Usage{Input: 1e6, Output: 1e6}, false, 20, true},
		{"claude-sonnet-4-6", pricing.Usage{Input: 1e6, Output: 1e6}, false, 18, true},
		{"claude-sonnet-4-6", pricing.Usage{Input: 1e6, Output: 1e6}, true, 9, true},
		{"claude-sonnet-4-6", pricing.Usage{Input: 3e6, CacheRead: 1e6, CacheWrite: 1e6}, false, 3 + 0.3 + 3.75, true},
		{"claude-haiku-4-5", pricing.Usage{Input: 1e6}, true, 1, true},
		{"gpt-4o", pricing.Usage{Output: 100}, false, 0.001, true},
		{"llama", pricing.Usage{Input: 1e6}, false, 0, false},
	}
	for _, tc := range tests {
		got, known := tab.Cost(tc.model, tc.u, tc.batch)
		if known != tc.known || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Cost(%s, %+v, batch %v) = %v, %v; want %v, %v", tc.model, tc.u, tc.batch, got, known, tc.want, tc.known)
		}
	}
	var none *pricing.Table
	if _, ok := none.Lookup("x"); ok {
		t.Error("nil table priced a model")
	}
}
