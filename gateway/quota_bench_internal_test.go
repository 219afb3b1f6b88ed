package gateway

import (
	"testing"
	"time"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/budgets"
	"github.com/relaygw/relay/workers/keylimits"
	"github.com/relaygw/relay/workers/pricing"
	"github.com/relaygw/relay/workers/wire"
	"github.com/relaygw/relay/workers/workerstest"
)

// BenchmarkAdmission measures a request's admission as the gateway makes
// it, from its body to the settlement of its usage, without the upstream
// call: the provider's admission alone ("provider"), and with the key's
// limits and a budget too ("key-limits-and-budget": the key's buckets,
// the worst-case reservation at the route's prices and its settlement).
// The provider has input, output and request limits (so the input
// estimate is made in both); the key's limits and budget are too large
// to refuse.
func BenchmarkAdmission(b *testing.B) {
	body := []byte(`{"model":"claude-sonnet","max_tokens":256,"messages":[{"role":"user","content":"Summarise the relay's admission in one paragraph, please."}]}`)
	fields, err := wire.Peek(body, 0)
	if err != nil {
		b.Fatal(err)
	}
	a := workerstest.Actor(actor.Options{Name: "p", RPM: 1 << 30, InputTPM: 1 << 40, OutputTPM: 1 << 40})
	prov, err := workerstest.Provider(workers.ProviderOptions{Name: "p", Format: workers.FormatAnthropic, BaseURL: "http://127.0.0.1:1", APIKey: "k"})
	if err != nil {
		b.Fatal(err)
	}
	defer prov.Close()
	router, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{{Model: "claude-sonnet",
		Targets: []workers.Target{{Provider: prov, ProviderName: "p", Format: workers.FormatAnthropic, Model: "claude-sonnet-4-5",
			Weight: 1, Timeout: time.Minute, Actor: a, EstimateInput: true}}}}})
	if err != nil {
		b.Fatal(err)
	}
	usage := wire.Usage{Input: 20, Output: 100, Known: true}
	k := Key{Name: "team-a", Limits: configs.KeyLimits{RPM: 1 << 30, InputTPM: 1 << 40, OutputTPM: 1 << 40, MaxConcurrency: 1 << 20},
		Budget: &configs.Budget{USD: 1e9, Period: configs.BudgetMonth}}
	q := &Quotas{Limits: keylimits.New(keylimits.Options{}), Budgets: budgets.New(budgets.Options{})}
	q.setConfig(Config{Keys: []Key{k}, Prices: pricing.New([]configs.Price{{Model: "claude-sonnet-*", Input: 3, Output: 15}})})
	req := &workers.Request{Format: workers.FormatAnthropic, Body: body, Fields: fields}

	b.Run("provider", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				g, err := router.Admit(req)
				if err != nil {
					b.Error(err)
					return
				}
				g.Release()
			}
		})
	})
	b.Run("key-limits-and-budget", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				kg := q.newGate(&k, body, fields)
				if err := kg.reserve(b.Context(), k.Budget, router, fields.Model); err != nil {
					b.Error(err)
					return
				}
				r := *req
				r.InputEstimate = kg.in
				g, err := kg.admit(router, &r)
				if err != nil {
					b.Error(err)
					return
				}
				kg.called = true
				g.Release()
				kg.settle(usage, "claude-sonnet-4-5", true, false)
			}
		})
	})
}
