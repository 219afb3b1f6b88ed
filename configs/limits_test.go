package configs

import (
	"math"
	"slices"
	"testing"
	"time"
)

// TestKeyLimitsAndPrices: per-key limits, budgets and the prices table
// are read from YAML and every bad value is named by its path.
func TestKeyLimitsAndPrices(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []Problem
	}{
		{"valid", func(c *Config) {
			c.Keys[0].KeyLimits = KeyLimits{RPM: 60, InputTPM: 1000, OutputTPM: 500, MaxConcurrency: 2}
			c.Keys[0].Budget = &Budget{USD: 10, Period: BudgetMonth}
			c.Prices = []Price{{Model: "claude-*", Input: 3, Output: 15, BatchDiscount: 0.5}}
		}, nil},
		{"token budget needs no prices", func(c *Config) {
			c.Keys[0].Budget = &Budget{Tokens: 1e6, Period: BudgetTotal}
		}, nil},
		{"negative limits", func(c *Config) {
			c.Keys[0].KeyLimits = KeyLimits{RPM: -1, MaxConcurrency: -2}
		}, []Problem{{Path: "keys[0].rpm", Msg: "must be >= 0"}, {Path: "keys[0].max_concurrency", Msg: "must be >= 0"}}},
		{"budget with both", func(c *Config) {
			c.Keys[0].Budget = &Budget{USD: 1, Tokens: 5, Period: BudgetDay}
			c.Prices = []Price{{Model: "m", Input: 1}}
		}, []Problem{{Path: "keys[0].budget", Msg: "set one of usd and tokens, not both"}}},
		{"budget with neither and no period", func(c *Config) {
			c.Keys[0].Budget = &Budget{}
		}, []Problem{{Path: "keys[0].budget", Msg: "set usd or tokens (> 0)"}, {Path: "keys[0].budget.period", Msg: "must be set to day, month or total"}}},
		{"budget period", func(c *Config) {
			c.Keys[0].Budget = &Budget{Tokens: 5, Period: "week"}
		}, []Problem{{Path: "keys[0].budget.period", Msg: `must be day, month or total, not "week"`}}},
		{"usd budget without prices", func(c *Config) {
			c.Keys[0].Budget = &Budget{USD: 5, Period: BudgetDay}
		}, []Problem{{Path: "keys[0].budget.usd", Msg: "needs a prices table (or budget in tokens)"}}},
		{"bad prices", func(c *Config) {
			c.Prices = []Price{{Model: "m", Input: -1, Output: math.NaN()}, {Model: "m", BatchDiscount: 1}, {}}
		}, []Problem{
			{Path: "prices[0].input", Msg: "must be a number >= 0 (USD per million tokens)"},
			{Path: "prices[0].output", Msg: "must be a number >= 0 (USD per million tokens)"},
			{Path: "prices[1].model", Msg: `"m" is already priced by prices[0]`},
			{Path: "prices[1].batch_discount", Msg: "must be >= 0 and < 1 (0.5 is half price)"},
			{Path: "prices[2].model", Msg: "must be set (an upstream model id or a glob)"},
		}},
		{"usage retention", func(c *Config) {
			c.Usage = Usage{Retention: Duration(time.Minute), CounterRetention: Duration(time.Hour)}
		}, []Problem{
			{Path: "usage.retention", Msg: "must be at least 1h (how long usage events stay on RELAY_USAGE)"},
			{Path: "usage.counter_retention", Msg: "must be 0 (forever) or at least 48h (the counters are kept per UTC day)"},
		}},
		{"usage counters kept forever", func(c *Config) {
			c.Usage.CounterRetention = 0
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(c)
			if got := Problems(c.Validate()); !slices.Equal(got, tc.want) {
				t.Errorf("problems =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// TestKeyLimitsYAML: the limits sit beside the key's other fields.
func TestKeyLimitsYAML(t *testing.T) {
	c, err := Parse([]byte(`
providers: [{name: p, type: openai, base_url: "http://127.0.0.1:1/v1", api_key: k}]
routes: [{model: m, targets: [{provider: p}]}]
keys:
  - {name: a, key: secret-a, rpm: 60, max_concurrency: 3, budget: {tokens: 1000, period: day}}
prices:
  - {model: m, input: 1.5, output: 2, batch_discount: 0.5}
`))
	if err != nil {
		t.Fatal(err)
	}
	k := c.Keys[0]
	if k.RPM != 60 || k.MaxConcurrency != 3 || k.Budget == nil || k.Budget.Tokens != 1000 || k.Budget.Period != BudgetDay {
		t.Errorf("key = %+v; want rpm 60, max_concurrency 3, 1000 tokens a day", k)
	}
	if len(c.Prices) != 1 || c.Prices[0].Input != 1.5 || c.Prices[0].BatchDiscount != 0.5 {
		t.Errorf("prices = %+v", c.Prices)
	}
}
