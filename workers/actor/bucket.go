package actor

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// bucket is one per-minute budget: an optional local limiter plus an optional
// cap learned from upstream headers. It is guarded by the Actor's mutex, and
// only the Actor touches its limiter.
type bucket struct {
	lim    *rate.Limiter // nil: no configured limit
	perMin int           // the configured per-minute limit; 0 when lim is nil
	rate   float64       // the limiter's per-minute rate: perMin, or a cluster share of it
	burst  int           // the limiter's burst

	// Learned cap: until capUntil the bucket hands out at most capLeft
	// more; capAt is when it was learned (here or by a peer relay).
	capLeft  float64
	capUntil time.Time
	capAt    time.Time
}

// configure sets the per-minute limit (<= 0 removes it) and the burst, the
// most the bucket holds (<= 0: a full minute's worth). An existing limiter
// keeps its level, clamped to a lowered burst; a new one starts full.
func (b *bucket) configure(now time.Time, perMin, burst int) {
	b.configureShare(now, perMin, float64(perMin), burst)
}

// configureShare is configure with the limiter running at share per
// minute (at most perMin) instead of perMin: a relay's share of a limit
// held by a cluster. The burst is clamped to max(1, share).
func (b *bucket) configureShare(now time.Time, perMin int, share float64, burst int) {
	if perMin <= 0 {
		b.lim, b.perMin, b.rate, b.burst = nil, 0, 0, 0
		return
	}
	share = min(max(share, 0), float64(perMin))
	if most := max(1, int(share)); burst <= 0 || burst > most {
		burst = most
	}
	r := rate.Limit(share / 60)
	b.perMin, b.rate, b.burst = perMin, share, burst
	if b.lim == nil {
		b.lim = rate.NewLimiter(r, burst)
		return
	}
	b.lim.SetLimitAt(now, r)
	b.lim.SetBurstAt(now, burst)
}

// clamp limits a charge to the burst so that a huge request can be admitted
// once the bucket is full.
func (b *bucket) clamp(n int) int {
	if b.lim != nil && n > b.burst {
		return b.burst
	}
	return n
}

func (b *bucket) capped(now time.Time) bool { return now.Before(b.capUntil) }

// ready reports whether n tokens can be taken at now and, if not, the
// earliest time they may be.
func (b *bucket) ready(now time.Time, n int) (bool, time.Time) {
	if n <= 0 {
		return true, now
	}
	ok, at := true, now
	if b.lim != nil {
		if tok := b.lim.TokensAt(now); tok < float64(n) {
			ok, at = false, b.refillAt(now, float64(n)-tok, n)
		}
	}
	if b.capped(now) && b.capLeft < float64(n) {
		ok = false
		at = later(at, b.capUntil)
	}
	return ok, at
}

// refillAt is the first millisecond at which the limiter holds n tokens,
// given that it lacks need of them at now. It asks the limiter itself so
// that Admit at the returned time succeeds despite float rounding.
func (b *bucket) refillAt(now time.Time, need float64, n int) time.Time {
	exact := need * 60 * float64(time.Second) / b.rate
	if b.rate <= 0 || exact > float64(math.MaxInt64/2) {
		return now.Add(math.MaxInt64 / 2)
	}
	d := time.Duration(math.Ceil(exact))
	d = (d + time.Millisecond - 1).Truncate(time.Millisecond)
	for b.lim.TokensAt(now.Add(d)) < float64(n) {
		d += time.Millisecond
	}
	return now.Add(d)
}

// take charges n tokens; ready(now, n) must have said yes.
func (b *bucket) take(now time.Time, n int) {
	if n <= 0 {
		return
	}
	if b.lim != nil {
		b.lim.AllowN(now, n)
	}
	if b.capped(now) {
		b.capLeft -= float64(n)
	}
}

// settle corrects a permit's charge of this bucket once the call is over.
// With known usage the charge becomes the real amount (clamped to the burst);
// without it the charge is refunded when refundAll, else kept. A limiter
// replaced by Update since admission is left alone. Extra charges may drive
// the limiter negative (a debt repaid by refill) and also consume the cap;
// refunds never raise the cap.
func (b *bucket) settle(now time.Time, charged *rate.Limiter, n, real int, known, refundAll bool) {
	if charged == nil || charged != b.lim {
		return
	}
	var delta int
	switch {
	case known:
		delta = b.clamp(max(real, 0)) - n
	case refundAll:
		delta = -n
	}
	if delta == 0 {
		return
	}
	// ReserveN with maxFutureReserve = Inf always succeeds for |n| <= burst:
	// a positive n charges (possibly into debt), a negative n credits, capped
	// at the burst on the next read (golang/go#54082; pinned by
	// TestLimiterCredit).
	b.lim.ReserveN(now, delta)
	if delta > 0 && b.capped(now) {
		b.capLeft -= float64(delta)
	}
}

// learn caps the bucket at remaining until reset, replacing an older cap.
func (b *bucket) learn(now time.Time, remaining float64, reset time.Time) {
	if !reset.After(now) {
		return
	}
	if limit := now.Add(MaxLearnedWait); reset.After(limit) {
		reset = limit
	}
	b.capLeft = max(remaining, 0)
	b.capUntil = reset
	b.capAt = now
}

func (b *bucket) state(now time.Time) BucketState {
	s := BucketState{PerMinute: b.perMin, Available: math.Inf(1)}
	if b.lim != nil {
		s.Available = b.lim.TokensAt(now)
	}
	if b.capped(now) {
		s.CappedUntil = b.capUntil
		s.Available = min(s.Available, b.capLeft)
	}
	return s
}
