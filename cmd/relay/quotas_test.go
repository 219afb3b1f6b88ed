package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestServeKeyBudget: `relay serve` enforces a key's budget from its
// configuration: answers until what is left cannot cover a request's
// worst case, then 429 naming the budget, counted in
// relay_key_budget_refusals_total.
func TestServeKeyBudget(t *testing.T) {
	t.Parallel()
	body := "lanes:\n  - {name: interactive, max_wait: 30s}\n" + providerSim + "routes:\n" + routeSonnet
	p := startReloadRelay(t, relayOpts{grace: "2s", tokenInterval: "1ms", keyBudget: "{tokens: 40, period: day}"},
		[]string{canaryKey}, body)
	served := 0
	for range 20 {
		code, resp := p.ask("claude-sonnet", nil)
		if code == http.StatusOK {
			served++
			continue
		}
		if code != http.StatusTooManyRequests || !strings.Contains(resp, "rate_limit_error") || !strings.Contains(resp, "budget") {
			t.Fatalf("after %d answers: %d %s; want 429 naming the budget", served, code, resp)
		}
		break
	}
	if served == 0 || served == 20 {
		t.Fatalf("served %d of 20 against a budget of 40 tokens; want some, then the budget's refusal", served)
	}
	if n := p.metric(`relay_key_budget_refusals_total{key="key0",reason="exhausted"}`); n != 1 {
		t.Errorf(`relay_key_budget_refusals_total{key="key0",reason="exhausted"} = %v; want 1`, n)
	}
	p.stop()
}
