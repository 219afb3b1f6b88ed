// This file owns the Actor's hold: the time before which it refuses every
// call whatever other calls do, for callers that decide whether waiting
// can help at all.

package actor

import "time"

// Hold reports until when the Actor refuses every call whatever happens
// meanwhile, and why: the latest end of an open breaker, a cool-down (an
// upstream's retry-after) and a provider-key back-off still in force. The
// zero time means no such hold: the provider may admit a call now or as
// soon as a running call ends (concurrency, token buckets, a half-open
// breaker's probe), which no one can bound in advance. None of these
// holds ends early: an open breaker stays open until its time (a reload
// keeps it), and later answers only lengthen a cool-down or back-off.
func (a *Actor) Hold() (until time.Time, reason Reason) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	note := func(r Reason, t time.Time) {
		if t.After(now) && t.After(until) {
			until, reason = t, r
		}
	}
	note(ReasonProviderAuth, a.authUntil)
	if a.br.current(now) == BreakerOpen {
		note(ReasonBreakerOpen, a.br.openUntil)
	}
	note(ReasonCoolingDown, a.coolUntil)
	return until, reason
}
