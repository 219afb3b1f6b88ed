// This file owns what a cluster of relays needs from an Actor: its share
// of the provider's limits (workers/lease grants it), what it admitted,
// and what the upstream taught it, to teach the other relays.

package actor

import "time"

// Share is this relay's share of a provider's limits when several relays
// hold them together: rates per minute, concurrency in calls. A share
// only ever lowers a configured limit; a kind with no configured limit
// stays unlimited whatever the share says.
type Share struct {
	RPM, InputTPM, OutputTPM float64
	MaxConcurrency           int
}

// SetShare makes s the Actor's effective limits (each the smaller of the
// configured limit and the share); nil restores the configured limits in
// full. The requests bucket's burst follows the share (ceil(share/60),
// so N relays together allow what one relay alone would), the token
// buckets hold a minute of their share. Bucket levels are kept and
// clamped to a lowered burst, as with [Actor.Update], which keeps the
// share: Update changes what is configured, SetShare what part of it
// this relay may use.
func (a *Actor) SetShare(s *Share) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if s != nil {
		c := *s
		s = &c
	}
	a.share = s
	a.applyLimits(now)
}

// Usage counts what an Actor admitted since it was made, as charged at
// admission (estimates), and its calls in flight now.
type Usage struct {
	Requests, InputTokens, OutputTokens float64
	InFlight                            int
}

// Usage returns what the Actor admitted so far and holds now.
func (a *Actor) Usage() Usage {
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.used
	u.InFlight = a.inFlight
	return u
}

// Cap is a cap on one bucket learned from rate-limit headers: until
// Until, at most Remaining more, as learned at At.
type Cap struct {
	Remaining float64
	Until, At time.Time
}

// Learned is what the upstream taught an Actor: a cool-down and a cap per
// bucket (requests, input tokens, output tokens); zero times when none.
type Learned struct {
	CoolUntil time.Time
	Caps      [3]Cap
}

// Learned returns the cool-down and the caps in force now.
func (a *Actor) Learned() Learned {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	var l Learned
	if a.coolUntil.After(now) {
		l.CoolUntil = a.coolUntil
	}
	for i, b := range []*bucket{&a.req, &a.in, &a.out} {
		if b.capped(now) {
			l.Caps[i] = Cap{Remaining: b.capLeft, Until: b.capUntil, At: b.capAt}
		}
	}
	return l
}

// Learn applies what another relay learned from the same upstream: a
// later cool-down extends this one; a cap (with a non-zero Until)
// replaces an older one of its bucket (by At), bounded by
// [MaxLearnedWait].
func (a *Actor) Learn(l Learned) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if l.CoolUntil.After(now) {
		until := l.CoolUntil
		if bound := now.Add(MaxLearnedWait); until.After(bound) {
			until = bound
		}
		a.coolUntil = later(a.coolUntil, until)
	}
	for i, b := range []*bucket{&a.req, &a.in, &a.out} {
		c := l.Caps[i]
		if c.Until.IsZero() || !c.At.After(b.capAt) {
			continue
		}
		b.learn(now, c.Remaining, c.Until)
		b.capAt = c.At
	}
}
