package lanes

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDrainRate: the rate is trusted from drainMinSamples dispatches
// within drainWindow, follows a steady flow, and slows once it stops.
func TestDrainRate(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name    string
		n       int           // dispatches
		every   time.Duration // between dispatches
		after   time.Duration // from the last dispatch to the estimate
		trusted bool
		min     float64
		max     float64
	}{
		{name: "cold", n: 0},
		{name: "too few", n: drainMinSamples - 1, every: 100 * time.Millisecond},
		{name: "steady 10/s", n: 200, every: 100 * time.Millisecond, trusted: true, min: 9.5, max: 10.5},
		{name: "steady 1000/s", n: 500, every: time.Millisecond, trusted: true, min: 950, max: 1050},
		{name: "stopped a while ago", n: 64, every: 100 * time.Millisecond, after: 6300 * time.Millisecond, trusted: true, min: 4.5, max: 5.5},
		{name: "out of the window", n: 64, every: 100 * time.Millisecond, after: drainWindow + time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d drain
			now := start
			for range tc.n {
				now = now.Add(tc.every)
				d.Observe(now)
			}
			rate, ok := d.Rate(now.Add(tc.after), drainWindow, drainMinSamples)
			if ok != tc.trusted || ok && (rate < tc.min || rate > tc.max) {
				t.Errorf("rate = %.2f/s trusted %v; want trusted %v within [%g, %g]", rate, ok, tc.trusted, tc.min, tc.max)
			}
		})
	}
}

// fakeTime is a settable clock for a Set.
type fakeTime struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeTime) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// TestEstimateFailFast: a FailFast request is refused at Park when the
// lane's trusted estimate (the requests ahead of it over the route's drain
// rate) ends after its wait, and parks when the lane is cold, when its
// wait is long enough, or when keys taking turns put little ahead of it.
func TestEstimateFailFast(t *testing.T) {
	clock := &fakeTime{now: time.Unix(1_700_000_000, 0)}
	h := newHarness(t, Spec{Name: "a", MaxWait: time.Hour})
	h.s.now = clock.Now // before anything parks: the dispatcher reads it only in passes
	park := func(id, key string, wait time.Duration, failFast bool) (*Ticket, error) {
		w := h.waiter(id, "a", key, "r")
		w.MaxWait, w.FailFast = wait, failFast
		return h.s.Park(t.Context(), w)
	}
	for i := range 40 {
		if _, err := park("backlog", "heavy", time.Hour, false); err != nil {
			t.Fatalf("park %d: %v", i, err)
		}
	}
	if _, _, trusted := h.s.Estimate("a", "r", "heavy"); trusted {
		t.Fatal("a cold lane's estimate is trusted")
	}
	if _, err := park("cold", "heavy", time.Second, true); err != nil {
		t.Fatalf("cold lane: Park = %v; want parked (no history, no refusal)", err)
	}
	// 20 dispatches at 10/s, as the dispatcher records them.
	h.s.mu.Lock()
	for range 20 {
		clock.mu.Lock()
		clock.now = clock.now.Add(100 * time.Millisecond)
		clock.mu.Unlock()
		h.s.byName["a"].observeDrain("r", clock.Now())
	}
	h.s.mu.Unlock()
	wait, ahead, trusted := h.s.Estimate("a", "r", "heavy")
	// The cold request may have expired meanwhile (its deadline is on
	// the fake clock): 40 or 41 ahead.
	if !trusted || ahead < 40 || ahead > 41 || wait < 4*time.Second || wait > 4400*time.Millisecond {
		t.Fatalf("Estimate = %v, %d ahead, trusted %v; want about 4.1s, 41, true", wait, ahead, trusted)
	}
	_, err := park("short", "heavy", 2*time.Second, true)
	var early *EarlyError
	if !errors.As(err, &early) || !errors.Is(err, ErrCannotServeInTime) || early.Reason != ReasonLaneWait ||
		early.Wait < 4*time.Second {
		t.Fatalf("2s wait behind 41 at 10/s: Park = %v; want EarlyError lane_wait %v", err, wait)
	}
	if _, err := park("short-no-failfast", "heavy", 2*time.Second, false); err != nil {
		t.Errorf("without FailFast: Park = %v; want parked", err)
	}
	if _, err := park("long", "heavy", 10*time.Second, true); err != nil {
		t.Errorf("10s wait: Park = %v; want parked", err)
	}
	if _, err := park("other-key", "light", time.Second, true); err != nil {
		t.Errorf("another key (1 ahead of it): Park = %v; want parked", err)
	}
	if n := testutil.ToFloat64(h.s.metrics.rejections.WithLabelValues("a", "early")); n != 1 {
		t.Errorf("rejected{reason=early} = %v; want 1", n)
	}
}

// TestHoldFailFast: with the route held for 15 s, a FailFast request
// with a 5 s wait is refused at Park and one parked before the hold began
// is answered as soon as the dispatcher sees the hold; a 60 s one parks
// and is served once the hold ends.
func TestHoldFailFast(t *testing.T) {
	h := newHarness(t, Spec{Name: "a", MaxWait: time.Hour})
	var mu sync.Mutex
	var until time.Time
	hold := func() (time.Time, string) {
		mu.Lock()
		defer mu.Unlock()
		return until, "breaker_open"
	}
	waiter := func(id string, wait time.Duration) Waiter {
		w := h.waiter(id, "a", "k", "r")
		w.MaxWait, w.FailFast, w.Hold = wait, true, hold
		return w
	}
	before := h.start(t.Context(), "before", waiter("before", 5*time.Second))
	mu.Lock()
	until = time.Now().Add(15 * time.Second)
	mu.Unlock()
	start := time.Now()
	_, err := h.s.Park(t.Context(), waiter("short", 5*time.Second))
	var early *EarlyError
	if !errors.As(err, &early) || early.Reason != "breaker_open" || early.Wait < 14*time.Second || early.Wait > 15*time.Second {
		t.Fatalf("5s wait, held 15s: Park = %v; want EarlyError breaker_open ~15s", err)
	}
	h.s.Kick()
	r := h.recv(before)
	if !errors.As(r.err, &early) || early.Reason != "breaker_open" {
		t.Fatalf("parked before the hold: %v; want EarlyError breaker_open", r.err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("parked request answered after %s; want before its wait ended", d)
	}
	long := h.start(t.Context(), "long", waiter("long", 60*time.Second))
	h.s.Kick()
	mu.Lock()
	until = time.Time{}
	mu.Unlock()
	h.c.add(h.s, "r", 1)
	if r := h.recv(long); r.err != nil || grantName(r.grant) != "grant-long" {
		t.Errorf("60s wait: %v %v; want served", r.grant, r.err)
	}
}
