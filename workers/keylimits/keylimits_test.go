package keylimits_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/keylimits"
)

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

func TestLimiter(t *testing.T) {
	clk := &clock{}
	clk.ns.Store(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC).UnixNano())
	relays := atomic.Int64{}
	relays.Store(1)
	l := keylimits.New(keylimits.Options{Now: clk.now, Relays: func() int { return int(relays.Load()) }})
	lim := configs.KeyLimits{RPM: 120, MaxConcurrency: 2}

	if p, err := l.Admit("free", configs.KeyLimits{}, 10, 10); p != nil || err != nil {
		t.Fatalf("a key without limits: %v, %v; want nothing to do", p, err)
	}
	p1, err := l.Admit("k", lim, 10, 10)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := l.Admit("k", lim, 10, 10)
	if err != nil {
		t.Fatal(err)
	}
	// rpm 120 holds two requests at once; the third is refused on rpm and
	// on concurrency, rpm first in time.
	_, err = l.Admit("k", lim, 10, 10)
	var ref *keylimits.Refusal
	if !errors.As(err, &ref) || ref.Key != "k" || ref.Reason != actor.ReasonConcurrency {
		t.Fatalf("third: %v; want a concurrency refusal of k", err)
	}
	if held, _ := l.Hold("k", lim, 10, 10); !held {
		t.Error("Hold says the key is free while it is full")
	}
	// Undo gives everything back: the slot and the request.
	p2.Undo()
	if _, err := l.Admit("k", lim, 10, 10); err != nil {
		t.Errorf("after Undo: %v; want the slot and the request back", err)
	}
	p1.Done(5, 5, true)
	// Requests: 2 taken and one given back, 1 more taken: empty. Four
	// requests ahead at 2/s take about 2.5 s.
	if w := l.Wait("k", lim, 4, 10, 10); w < 2*time.Second || w > 3*time.Second {
		t.Errorf("Wait with 4 ahead = %v; want about 2.5s", w)
	}

	// Three relays share the limits: each takes a third (rounded up), in
	// place, keeping its state.
	relays.Store(3)
	clk.add(time.Minute)
	lim2 := configs.KeyLimits{RPM: 1200, MaxConcurrency: 9}
	if _, err := l.Admit("k", lim2, 10, 10); err != nil {
		t.Fatalf("after the update: %v", err)
	}
	// One of the three slots is still held by the permit admitted before
	// (its Done never came), and this one: a third fits.
	if _, err := l.Admit("k", lim2, 10, 10); err != nil {
		t.Errorf("a second under a third of 9 slots: %v", err)
	}
	if _, err := l.Admit("k", lim2, 10, 10); err == nil {
		t.Error("a fourth slot admitted; a third of 9 is 3")
	}
}
