package actor

import (
	"testing"
	"time"
)

// TestHold: only an open breaker, a cool-down and a key back-off hold a
// provider, until the latest of them ends; concurrency, buckets and a
// half-open breaker never do.
func TestHold(t *testing.T) {
	bo := BreakerOptions{FailureRatio: 0.5, MinRequests: 1, Window: 10 * time.Second, OpenFor: 15 * time.Second}
	tests := []struct {
		name   string
		o      Options
		setup  func(a *Actor)
		want   time.Duration // from the start; 0: no hold
		reason Reason
	}{
		{name: "fresh", o: Options{Breaker: bo}},
		{name: "concurrency and buckets", o: Options{Breaker: bo, MaxConcurrency: 1, RPM: 1},
			setup: func(a *Actor) { _, _ = a.Admit(1, 1) }},
		{name: "breaker open", o: Options{Breaker: bo},
			setup: func(a *Actor) { mustAdmitNoT(a).Done(Outcome{Kind: ServerError}) }, want: 15 * time.Second, reason: ReasonBreakerOpen},
		{name: "cooling down", o: Options{Breaker: bo},
			setup: func(a *Actor) { mustAdmitNoT(a).Done(Outcome{Kind: RateLimited, RetryAfter: 7 * time.Second}) },
			want:  7 * time.Second, reason: ReasonCoolingDown},
		{name: "529 with retry-after: breaker and cool-down, the later wins", o: Options{Breaker: bo},
			setup: func(a *Actor) { mustAdmitNoT(a).Done(Outcome{Kind: Overloaded, RetryAfter: 20 * time.Second}) },
			want:  20 * time.Second, reason: ReasonCoolingDown},
		{name: "provider key refused", o: Options{Breaker: bo},
			setup: func(a *Actor) { mustAdmitNoT(a).Done(Outcome{Kind: ProviderAuth}) }, want: ProviderAuthBackoff, reason: ReasonProviderAuth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, c := newActor(t, tc.o)
			start := c.Now()
			if tc.setup != nil {
				tc.setup(a)
			}
			until, reason := a.Hold()
			if tc.want == 0 {
				if !until.IsZero() || reason != "" {
					t.Fatalf("Hold = %v, %q; want none", until, reason)
				}
				return
			}
			if !until.Equal(start.Add(tc.want)) || reason != tc.reason {
				t.Fatalf("Hold = +%v, %q; want +%v, %q", until.Sub(start), reason, tc.want, tc.reason)
			}
			c.Advance(tc.want)
			if until, reason := a.Hold(); !until.IsZero() {
				t.Errorf("Hold after it ended = %v, %q; want none", until, reason)
			}
		})
	}
}

// TestHoldHalfOpen: a half-open breaker whose probe is out holds nothing
// (the probe may close it at any moment).
func TestHoldHalfOpen(t *testing.T) {
	a, c := newActor(t, Options{Breaker: BreakerOptions{FailureRatio: 0.5, MinRequests: 1, Window: time.Minute, OpenFor: time.Second}})
	mustAdmitNoT(a).Done(Outcome{Kind: Timeout})
	c.Advance(time.Second)
	p := mustAdmitNoT(a) // the probe
	if _, err := a.Admit(1, 1); err == nil {
		t.Fatal("a second call passed a half-open breaker")
	}
	if until, _ := a.Hold(); !until.IsZero() {
		t.Errorf("Hold while a probe is out = %v; want none", until)
	}
	p.Done(Outcome{Kind: Success})
}

func mustAdmitNoT(a *Actor) *Permit {
	p, err := a.Admit(1, 1)
	if err != nil {
		panic(err)
	}
	return p
}
