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

// TestTryAdmitBusySlotNamesNoTime: a parked request refused only for a
// busy concurrency slot must not get a retry time (the lanes would poll
// every millisecond); the release of the slot kicks them instead.
func TestTryAdmitBusySlotNamesNoTime(t *testing.T) {
	up := httptest.NewServer(nil)
	defer up.Close()
	prov, err := workerstest.Provider(workers.ProviderOptions{Name: "p", Format: workers.FormatAnthropic, BaseURL: up.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	a := workerstest.Actor(actor.Options{Name: "p", MaxConcurrency: 1, RPM: 60})
	r, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{{Model: "m", Targets: []workers.Target{
		{Provider: prov, ProviderName: "p", Format: workers.FormatAnthropic, Model: "m", Weight: 1, Timeout: time.Second, Actor: a}}}}})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"model":"m","max_tokens":1,"messages":[]}`)
	f, err := wire.Peek(body, 0)
	if err != nil {
		t.Fatal(err)
	}
	req := &workers.Request{Format: workers.FormatAnthropic, Body: body, Fields: f}
	admit := func() (*workers.Grant, time.Time, bool) { return workers.TryAdmit(r, req) }
	g, _, ok := admit()
	if !ok {
		t.Fatal("first admission refused")
	}
	if _, at, ok := admit(); ok || !at.IsZero() {
		t.Errorf("busy slot: ok %v, retry time %v; want refused with no time", ok, at)
	}
	g.Release()
	// The one-second request burst is spent: the bucket names its refill.
	for range 2 {
		if g, _, ok := admit(); ok {
			g.Release()
		}
	}
	if _, at, ok := admit(); ok || at.IsZero() || !at.After(time.Now()) {
		t.Errorf("empty rpm bucket: ok %v, retry time %v; want a future time", ok, at)
	}
}
