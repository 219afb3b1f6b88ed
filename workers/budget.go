// This file owns the retry budget shared by all of a Router's requests.

package workers

import (
	"sync"
	"time"
)

// retryBudget bounds retries across all requests, so that an outage does
// not multiply the load on the upstreams: every request deposits ratio of
// a retry token, time deposits floor tokens per second, and each retry
// spends one. The balance is capped at one second's worth of deposits at
// the floor rate plus burst, so a quiet period cannot bank an avalanche.
// It is safe for concurrent use.
type retryBudget struct {
	ratio float64 // tokens deposited per request
	floor float64 // tokens deposited per second
	max   float64
	now   func() time.Time

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// retryBudgetBurst is the retries a budget holds beyond one second's
// worth at its floor rate (not a setting).
const retryBudgetBurst = 10

func newRetryBudget(ratio, floor float64, now func() time.Time) *retryBudget {
	if now == nil {
		now = time.Now
	}
	b := &retryBudget{ratio: ratio, floor: floor, max: floor + retryBudgetBurst, now: now}
	b.tokens = b.max
	b.last = now()
	return b
}

// request records a new client request.
func (b *retryBudget) request() {
	b.mu.Lock()
	b.refill()
	b.tokens = min(b.max, b.tokens+b.ratio)
	b.mu.Unlock()
}

// allow spends one retry token, reporting false when none is left.
func (b *retryBudget) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	if b.tokens < 1-1e-9 { // tolerate float rounding of the deposits
		return false
	}
	b.tokens--
	return true
}

func (b *retryBudget) refill() {
	now := b.now()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.max, b.tokens+d.Seconds()*b.floor)
		b.last = now
	}
}
