// This file owns admission ahead of a call: Admit takes capacity for a
// request (a Grant), and TryAdmit says, when there is none, when to try
// again (the gateway hands it to the lanes for a parked request).

package workers

import (
	"errors"
	"time"

	"github.com/relaygw/relay/workers/actor"
)

// Grant is capacity Admit took for a request: a target and its provider's
// permit. Pass it to Do, or Release it. The gateway parks requests on the
// lanes with it as their grant.
type Grant struct {
	r      *Router
	t      *target
	permit *actor.Permit
}

// Provider names the provider the grant is for.
func (g *Grant) Provider() string { return g.t.ProviderName }

// Release gives the capacity back unused. A nil Grant is fine.
func (g *Grant) Release() {
	if g != nil {
		g.r.finish(g.permit, actor.Outcome{Kind: actor.Canceled})
	}
}

// Admit takes capacity for req without calling anyone: the first target,
// by weight along the route and its fallbacks, whose provider admits the
// call. When none does, it returns an *Error whose Refusals say why and
// until when (Error.RetryAfter).
func (r *Router) Admit(req *Request) (*Grant, error) {
	rt := r.routes.resolve(req.Fields.Model)
	if rt == nil {
		return nil, ErrUnknownModel
	}
	tr := tries{r: r, req: req, inTokens: -1}
	for _, cand := range rt.chain {
		for {
			t := cand.pick(tr.skipTried)
			if t == nil {
				break
			}
			if p, ok := tr.admit(t); ok {
				return &Grant{r: r, t: t, permit: p}, nil
			}
		}
	}
	return nil, &Error{Refusals: tr.refusals}
}

// Admitter is what TryAdmit needs of a Router.
type Admitter interface {
	Admit(req *Request) (*Grant, error)
}

// TryAdmit takes capacity for req from a: the grant, or when none is
// free (ok false) the earliest time a refusing provider named (zero when
// only a finished call can free capacity).
func TryAdmit(a Admitter, req *Request) (g *Grant, retryAt time.Time, ok bool) {
	g, err := a.Admit(req)
	if err != nil {
		var we *Error
		if errors.As(err, &we) {
			return nil, we.wakeAt(time.Now()), false
		}
		return nil, time.Time{}, false
	}
	return g, time.Time{}, true
}

// wakeAt is when time alone may give a parked request the capacity its
// route's providers refused, or zero when only a finished call can (its
// release kicks the lanes then). A refusal for a busy concurrency slot
// names the refusal time itself; handing that to the lanes as a retry time
// would make their dispatcher poll every millisecond until the slot frees.
func (e *Error) wakeAt(now time.Time) time.Time {
	var t time.Time
	for _, r := range e.Refusals {
		switch {
		case r.Reason == actor.ReasonConcurrency:
			// Concurrency is checked after the breaker, cool-down and key
			// back-off, so those were fine; a bucket that also refuses is
			// asked again on the kick the freed slot brings.
			continue
		case r.Reason == actor.ReasonBreakerOpen && !r.When.After(now):
			// Half-open with every probe taken: a probe's end kicks.
			continue
		}
		if t.IsZero() || r.When.Before(t) {
			t = r.When
		}
	}
	return t
}

// NextCapacity is the earliest time any refusing provider named, or the
// zero time when none named one.
func (e *Error) NextCapacity() time.Time {
	var t time.Time
	for _, r := range e.Refusals {
		if !r.When.IsZero() && (t.IsZero() || r.When.Before(t)) {
			t = r.When
		}
	}
	return t
}
