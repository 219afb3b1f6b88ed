package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// waiting reports how many reserve calls wait on b now.
func (b *bodyBudget) waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiters
}

// TestBodyBudget: reserve takes bytes while they fit, waits for bytes
// given back (or a raised limit) until its deadline, and gives up with
// errBudgetFull, or with ctx's error when ctx ends first.
func TestBodyBudget(t *testing.T) {
	for _, tc := range []struct {
		name     string
		limit    int64
		held     int64 // reserved before
		n        int64 // to reserve
		wait     time.Duration
		meantime func(b *bodyBudget, cancel context.CancelFunc) // once reserve waits
		want     error
		wantUsed int64
	}{
		{name: "fits", limit: 100, held: 40, n: 60, want: nil, wantUsed: 100},
		{name: "zero bytes always fit", limit: 10, held: 10, n: 0, want: nil, wantUsed: 10},
		{name: "full, no wait", limit: 100, held: 50, n: 51, want: errBudgetFull, wantUsed: 50},
		{name: "full, wait ends", limit: 100, held: 50, n: 51, wait: 50 * time.Millisecond, want: errBudgetFull, wantUsed: 50},
		{name: "bytes given back while waiting", limit: 100, held: 50, n: 80, wait: time.Minute,
			meantime: func(b *bodyBudget, _ context.CancelFunc) { b.release(30) }, want: nil, wantUsed: 100},
		{name: "too few given back, then enough", limit: 100, held: 60, n: 70, wait: time.Minute,
			meantime: func(b *bodyBudget, _ context.CancelFunc) {
				b.release(10) // 50 held: 70 still does not fit
				b.release(20)
			}, want: nil, wantUsed: 100},
		{name: "limit raised while waiting", limit: 100, held: 90, n: 20, wait: time.Minute,
			meantime: func(b *bodyBudget, _ context.CancelFunc) { b.setLimit(200) }, want: nil, wantUsed: 110},
		{name: "client gone while waiting", limit: 100, held: 90, n: 20, wait: time.Minute,
			meantime: func(_ *bodyBudget, cancel context.CancelFunc) { cancel() }, want: context.Canceled, wantUsed: 90},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBodyBudget(tc.limit)
			if err := b.reserve(context.Background(), tc.held, time.Time{}); err != nil {
				t.Fatalf("reserving %d of %d: %v", tc.held, tc.limit, err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- b.reserve(ctx, tc.n, time.Now().Add(tc.wait)) }()
			if tc.meantime != nil {
				deadline := time.Now().Add(10 * time.Second)
				for b.waiting() == 0 {
					if time.Now().After(deadline) {
						t.Fatal("reserve never waited")
					}
					time.Sleep(time.Millisecond)
				}
				tc.meantime(b, cancel)
			}
			if err := <-done; !errors.Is(err, tc.want) {
				t.Errorf("reserve(%d) = %v, want %v", tc.n, err, tc.want)
			}
			if got := b.inUse(); got != tc.wantUsed {
				t.Errorf("in use %d, want %d", got, tc.wantUsed)
			}
			if w := b.waiting(); w != 0 {
				t.Errorf("%d waiters left", w)
			}
		})
	}
}

// TestBodyChargeSteps: a body is charged in steps of bodyChunk, then an
// eighth of what is held, never past one byte over the body limit nor
// past the whole budget (413 beyond it).
func TestBodyChargeSteps(t *testing.T) {
	for _, tc := range []struct {
		name         string
		budget       int64
		limit        int64
		held         int64
		wantHeld     int64
		wantTooLarge bool
	}{
		{name: "first chunk", budget: 1 << 30, limit: 32 << 20, held: 0, wantHeld: bodyChunk},
		{name: "small steps stay a chunk", budget: 1 << 30, limit: 32 << 20, held: 64 << 10, wantHeld: 80 << 10},
		{name: "large bodies step an eighth", budget: 1 << 30, limit: 32 << 20, held: 8 << 20, wantHeld: 9 << 20},
		{name: "one byte past the limit", budget: 1 << 30, limit: 20000, held: bodyChunk, wantHeld: 20001},
		{name: "up to the whole budget", budget: 40000, limit: 1 << 20, held: 32768, wantHeld: 40000},
		{name: "past the whole budget", budget: 40000, limit: 1 << 20, held: 40000, wantTooLarge: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{budget: newBodyBudget(tc.budget)}
			if err := s.budget.reserve(context.Background(), tc.held, time.Time{}); err != nil {
				t.Fatal(err)
			}
			br := &bodyReader{s: s, limit: tc.limit, held: tc.held, read: tc.held}
			aerr := br.chargeWith(context.Background())
			switch {
			case tc.wantTooLarge:
				if aerr == nil || aerr.status != 413 {
					t.Fatalf("charge = %v, want 413", aerr)
				}
			case aerr != nil:
				t.Fatalf("charge: %v", aerr)
			case br.held != tc.wantHeld || s.budget.inUse() != tc.wantHeld:
				t.Errorf("held %d (budget %d), want %d", br.held, s.budget.inUse(), tc.wantHeld)
			}
		})
	}
}
