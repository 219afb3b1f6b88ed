package actor

import (
	"errors"
	"testing"
	"time"
)

// TestSetShare: a share cuts each configured limit (rate, burst,
// concurrency), never raises one or limits an unlimited kind, survives
// Update, and nil restores the configured limits.
func TestSetShare(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	brk := BreakerOptions{FailureRatio: 0.5, MinRequests: 10, Window: time.Minute, OpenFor: time.Second}
	admits := func(a *Actor) (n int, reason Reason) {
		for range 1000 {
			if _, err := a.Admit(1, 1); err != nil {
				var r *Refusal
				errors.As(err, &r)
				return n, r.Reason
			}
			n++
		}
		return n, ""
	}
	tests := []struct {
		name       string
		opts       Options
		share      *Share
		wantAdmits int
		wantReason Reason
	}{
		{"rpm burst split", Options{RPM: 540}, &Share{RPM: 180}, 3, ReasonRPM},
		{"share never raises", Options{RPM: 60}, &Share{RPM: 6000}, 1, ReasonRPM},
		{"no share: configured burst", Options{RPM: 540}, nil, 9, ReasonRPM},
		{"concurrency share", Options{MaxConcurrency: 6}, &Share{MaxConcurrency: 2}, 2, ReasonConcurrency},
		{"no concurrency slot", Options{MaxConcurrency: 6}, &Share{MaxConcurrency: 0}, 0, ReasonConcurrency},
		{"unlimited stays unlimited", Options{}, &Share{}, 1000, ""},
		{"input tokens: a minute of the share", Options{InputTPM: 300}, &Share{InputTPM: 100}, 100, ReasonInputTPM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Name, o.Now, o.Breaker = "p", clock, brk
			a := New(o)
			a.SetShare(tc.share)
			n, reason := admits(a)
			if n != tc.wantAdmits || reason != tc.wantReason {
				t.Errorf("admitted %d then %q; want %d then %q", n, reason, tc.wantAdmits, tc.wantReason)
			}
		})
	}
	t.Run("update keeps the share, nil restores", func(t *testing.T) {
		a := New(Options{Name: "p", Now: clock, Breaker: brk, MaxConcurrency: 6})
		a.SetShare(&Share{MaxConcurrency: 1})
		a.Update(Options{Name: "p", Now: clock, Breaker: brk, MaxConcurrency: 8})
		if got := a.State().MaxConcurrency; got != 1 {
			t.Fatalf("after Update: max concurrency %d; want the share, 1", got)
		}
		a.SetShare(nil)
		if got := a.State().MaxConcurrency; got != 8 {
			t.Fatalf("after SetShare(nil): max concurrency %d; want 8", got)
		}
	})
}

// TestLearnFromPeer: a peer's later cool-down and newer caps apply;
// older caps do not; Usage counts admissions.
func TestLearnFromPeer(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := New(Options{Name: "p", Now: func() time.Time { return now },
		Breaker: BreakerOptions{FailureRatio: 0.5, MinRequests: 10, Window: time.Minute, OpenFor: time.Second}})
	a.Learn(Learned{CoolUntil: now.Add(5 * time.Second), Caps: [3]Cap{{Remaining: 2, Until: now.Add(time.Minute), At: now}}})
	if _, err := a.Admit(1, 1); err == nil {
		t.Fatal("admitted while cooling down from a peer's 429")
	}
	now = now.Add(6 * time.Second)
	for i := range 2 {
		p, err := a.Admit(1, 1)
		if err != nil {
			t.Fatalf("admit %d under a cap of 2: %v", i, err)
		}
		p.Done(Outcome{Kind: Success})
	}
	if _, err := a.Admit(1, 1); err == nil {
		t.Fatal("admitted past the peer's cap")
	}
	a.Learn(Learned{Caps: [3]Cap{{Remaining: 100, Until: now.Add(time.Minute), At: now.Add(-time.Hour)}}})
	if _, err := a.Admit(1, 1); err == nil {
		t.Fatal("an older cap replaced a newer one")
	}
	if u := a.Usage(); u.Requests != 2 || u.InFlight != 0 {
		t.Fatalf("usage %+v; want 2 requests, none in flight", u)
	}
	if l := a.Learned(); l.Caps[0].Until.IsZero() || !l.CoolUntil.IsZero() {
		t.Fatalf("learned %+v; want the cap and no cool-down", l)
	}
}
