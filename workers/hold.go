// This file owns a route's hold: whether any target of a request's route
// (fallbacks included) may serve it before a given time, from the
// providers' breakers, cool-downs and key back-offs (actor.Actor.Hold).

package workers

import (
	"time"

	"github.com/relaygw/relay/workers/actor"
)

// Hold reports until when no target of req's route or its fallbacks can
// take req whatever happens meanwhile, and why (the reason of the target
// held the shortest: actor.ReasonBreakerOpen, ReasonCoolingDown or
// ReasonProviderAuth): the earliest end of its providers' holds (see
// actor.Actor.Hold). The zero time means some target may serve it now or
// as soon as capacity frees (a target without admission control, or a
// provider only short of concurrency or bucket tokens), and for an
// unknown model. It takes each provider's lock once and calls nobody.
func (r *Router) Hold(req *Request) (until time.Time, reason actor.Reason) {
	rt := r.routes.resolve(req.Fields.Model)
	if rt == nil {
		return time.Time{}, ""
	}
	for _, cand := range rt.chain {
		for _, t := range cand.targets {
			if t.Actor == nil {
				return time.Time{}, ""
			}
			u, why := t.Actor.Hold()
			if u.IsZero() {
				return time.Time{}, ""
			}
			if until.IsZero() || u.Before(until) {
				until, reason = u, why
			}
		}
	}
	return until, reason
}
