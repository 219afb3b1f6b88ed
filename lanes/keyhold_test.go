package lanes

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeyHoldSkipsOnlyItsKey: a parked request whose key's own limits
// hold it (Waiter.KeyHold) does not hold up the other keys' requests for
// the same route; it is served once its key lets it, at the time its key
// named, without a kick; KeyParked counts each key's parked requests.
func TestKeyHoldSkipsOnlyItsKey(t *testing.T) {
	h := newHarness(t, Spec{Name: "lane", MaxWait: time.Minute})
	var heldUntil atomic.Int64 // unix nanos; 0: not held
	heldUntil.Store(time.Now().Add(time.Hour).UnixNano())
	hold := func() (bool, time.Time) {
		u := time.Unix(0, heldUntil.Load())
		return time.Now().Before(u), u
	}
	limited := h.waiter("limited", "lane", "key-a", "r")
	limited.KeyHold = hold
	ctx := context.Background()
	first := h.start(ctx, "limited", limited)
	others := []<-chan result{
		h.start(ctx, "other-1", h.waiter("other-1", "lane", "key-b", "r")),
		h.start(ctx, "other-2", h.waiter("other-2", "lane", "key-b", "r")),
	}
	if n := h.s.KeyParked("key-a"); n != 1 {
		t.Errorf("KeyParked(key-a) = %d; want 1", n)
	}
	if n := h.s.KeyParked("key-b"); n != 2 {
		t.Errorf("KeyParked(key-b) = %d; want 2", n)
	}
	h.c.add(h.s, "r", 3)
	for _, ch := range others {
		if r := h.recv(ch); r.err != nil {
			t.Fatalf("%s: %v; want a grant while key-a is held", r.id, r.err)
		}
	}
	if got := h.c.callsOf("limited"); got != 0 {
		t.Errorf("the held key's request was offered to the providers %d times; want 0", got)
	}
	// Its key lets it go in 50 ms: the dispatcher's timer, not a kick,
	// serves it.
	heldUntil.Store(time.Now().Add(50 * time.Millisecond).UnixNano())
	h.s.Kick() // the pass that learns the new time
	if r := h.recv(first); r.err != nil {
		t.Fatalf("limited: %v; want a grant once its key lets it", r.err)
	}
	if n := h.s.KeyParked("key-a"); n != 0 {
		t.Errorf("KeyParked(key-a) = %d after it left; want 0", n)
	}
}
