package workers_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/wire"
	"github.com/relaygw/relay/workers/workerstest"
)

// TestRouterHold: a route is held until the earliest end of its targets'
// and fallbacks' holds, and not at all while one target is free of any
// hold or has no admission control.
func TestRouterHold(t *testing.T) {
	up := httptest.NewServer(nil)
	defer up.Close()
	prov, err := workerstest.Provider(workers.ProviderOptions{Name: "p", Format: workers.FormatAnthropic, BaseURL: up.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	br := actor.BreakerOptions{MinRequests: 1, OpenFor: 15 * time.Second}
	newActor := func(name string) *actor.Actor {
		return workerstest.Actor(actor.Options{Name: name, Breaker: br, Now: clock})
	}
	target := func(a *actor.Actor) workers.Target {
		return workers.Target{Provider: prov, ProviderName: "p", Format: workers.FormatAnthropic, Model: "m", Weight: 1,
			Timeout: time.Second, Actor: a}
	}
	fail := func(a *actor.Actor, o actor.Outcome) {
		p, err := a.Admit(1, 1)
		if err != nil {
			t.Fatal(err)
		}
		p.Done(o)
	}
	a, b, fb := newActor("a"), newActor("b"), newActor("fb")
	r, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{
		{Model: "m", Targets: []workers.Target{target(a), target(b)}, Fallbacks: []string{"f"}},
		{Model: "f", Targets: []workers.Target{target(fb)}},
		{Model: "free", Targets: []workers.Target{target(nil)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	req := func(model string) *workers.Request {
		body := []byte(`{"model":"` + model + `","max_tokens":1,"messages":[]}`)
		f, err := wire.Peek(body, 0)
		if err != nil {
			t.Fatal(err)
		}
		return &workers.Request{Format: workers.FormatAnthropic, Body: body, Fields: f}
	}
	check := func(step, model string, want time.Duration, reason actor.Reason) {
		t.Helper()
		until, why := r.Hold(req(model))
		switch {
		case want == 0 && !until.IsZero():
			t.Errorf("%s: Hold(%s) = +%v %q; want none", step, model, until.Sub(now), why)
		case want != 0 && (!until.Equal(now.Add(want)) || why != reason):
			t.Errorf("%s: Hold(%s) = +%v %q; want +%v %q", step, model, until.Sub(now), why, want, reason)
		}
	}
	check("all free", "m", 0, "")
	fail(a, actor.Outcome{Kind: actor.ServerError})
	fail(b, actor.Outcome{Kind: actor.RateLimited, RetryAfter: 30 * time.Second})
	check("fallback free", "m", 0, "")
	fail(fb, actor.Outcome{Kind: actor.ServerError})
	now = now.Add(time.Second)
	check("all held", "m", 14*time.Second, actor.ReasonBreakerOpen)
	check("fallback alone", "f", 14*time.Second, actor.ReasonBreakerOpen)
	now = now.Add(14 * time.Second)
	check("breakers half-open", "m", 0, "")
	check("no admission control", "free", 0, "")
	check("unknown model", "nope", 0, "")
}
