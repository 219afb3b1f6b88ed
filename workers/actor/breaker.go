package actor

import "time"

// windowSlots is the number of sub-buckets of the breaker's rolling window.
const windowSlots = 10

// slot counts the calls of one sub-bucket period.
type slot struct {
	idx       int64 // period number since the window's origin
	req, fail uint32
}

// window counts requests and failures over the last windowSlots periods.
type window struct {
	origin time.Time
	period time.Duration
	slots  [windowSlots]slot
}

func (w *window) index(now time.Time) int64 {
	i := int64(now.Sub(w.origin) / w.period)
	return max(i, 0)
}

func (w *window) record(now time.Time, failure bool) {
	i := w.index(now)
	s := &w.slots[i%windowSlots]
	if s.idx != i {
		*s = slot{idx: i}
	}
	s.req++
	if failure {
		s.fail++
	}
}

func (w *window) sum(now time.Time) (req, fail uint32) {
	i := w.index(now)
	for _, s := range w.slots {
		if s.idx <= i && s.idx > i-windowSlots {
			req += s.req
			fail += s.fail
		}
	}
	return req, fail
}

func (w *window) clear() { w.slots = [windowSlots]slot{} }

// breaker is a rolling-window circuit breaker on an injected clock. It is
// guarded by the Actor's mutex. Transitions out of the open state happen
// lazily in current.
type breaker struct {
	o         BreakerOptions // with defaults applied
	state     BreakerState
	gen       uint64 // bumped on every state change; stale results are ignored
	openUntil time.Time
	probes    int       // probe permits given out in this half-open period
	probeOK   int       // probe successes in this half-open period
	streak    int       // consecutive failures while closed, within one window
	streakAt  time.Time // when the streak began
	win       window
}

func (b *breaker) init(now time.Time) {
	b.win.origin = now
}

// configure applies new settings and keeps the state. Counts are cleared when
// the window length changes, since they no longer fit its sub-buckets.
func (b *breaker) configure(o BreakerOptions) {
	period := max(o.Window/windowSlots, 1)
	if period != b.win.period {
		b.win.period = period
		b.win.clear()
	}
	b.o = o
}

// current returns the state at now, moving an expired open breaker to
// half-open.
func (b *breaker) current(now time.Time) BreakerState {
	if b.state == BreakerOpen && !now.Before(b.openUntil) {
		b.state = BreakerHalfOpen
		b.gen++
		b.probes, b.probeOK = 0, 0
	}
	return b.state
}

// allow reports whether a call may pass now and, if not, when it may
// (half-open with every probe out: now, as only a finished probe can help).
func (b *breaker) allow(now time.Time) (bool, time.Time) {
	switch b.current(now) {
	case BreakerOpen:
		return false, b.openUntil
	case BreakerHalfOpen:
		return b.probes < b.o.HalfOpenProbes, now
	default:
		return true, now
	}
}

// admit records an admission that allow approved and reports whether it is a
// half-open probe.
func (b *breaker) admit() bool {
	if b.state != BreakerHalfOpen {
		return false
	}
	b.probes++
	return true
}

func (b *breaker) open(now time.Time) {
	b.streak = 0
	b.state = BreakerOpen
	b.openUntil = now.Add(b.o.OpenFor)
	b.gen++
	b.win.clear()
}

// record feeds the verdict of a call admitted in generation gen.
func (b *breaker) record(now time.Time, gen uint64, probe bool, v verdict) {
	st := b.current(now)
	if gen != b.gen {
		return
	}
	switch v {
	case ignored:
		if st == BreakerHalfOpen && probe {
			b.probes-- // free the slot for another probe
		}
	case succeeded:
		switch st {
		case BreakerClosed:
			b.streak = 0
			b.win.record(now, false)
		case BreakerHalfOpen:
			b.probeOK++
			if b.probeOK >= b.o.HalfOpenProbes {
				b.state = BreakerClosed
				b.gen++
				b.win.clear()
			}
		}
	case failed:
		switch st {
		case BreakerClosed:
			b.win.record(now, true)
			if b.streak == 0 || now.Sub(b.streakAt) > b.o.Window {
				b.streak, b.streakAt = 0, now
			}
			b.streak++
			req, fail := b.win.sum(now)
			// The ratio over the window catches a provider that fails
			// often; the streak (MinRequests failures in a row within one
			// window) catches one that just started failing everything,
			// whose earlier successes would otherwise hold the ratio down
			// for most of a window.
			if (int(req) >= b.o.MinRequests && float64(fail) >= b.o.FailureRatio*float64(req)) ||
				b.streak >= b.o.MinRequests {
				b.open(now)
			}
		case BreakerHalfOpen:
			b.open(now)
		}
	}
}
