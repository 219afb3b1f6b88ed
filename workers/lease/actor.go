package lease

import (
	"math"

	"github.com/relaygw/relay/workers/actor"
)

// ActorHolder holds a provider's lease with its actor: the actor admits
// under the granted share, and reports what it admitted and learned.
type ActorHolder struct {
	Actor *actor.Actor
	// Backlog returns the requests parked for the provider per lane,
	// highest priority first (nil: none).
	Backlog func() []int
	// OnApply, when set, runs after a grant is applied (the relay kicks
	// its lanes: capacity may have grown).
	OnApply func()
}

// Demand implements Holder.
func (h ActorHolder) Demand() Demand {
	u := h.Actor.Usage()
	l := h.Actor.Learned()
	d := Demand{Requests: u.Requests, InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, InFlight: u.InFlight}
	if h.Backlog != nil {
		d.Backlog = h.Backlog()
	}
	d.Learned.CoolUntil = l.CoolUntil
	for i, c := range l.Caps {
		d.Learned.Caps[i] = Cap{Remaining: c.Remaining, Until: c.Until, At: c.At}
	}
	return d
}

// Apply implements Holder.
func (h ActorHolder) Apply(g Grant) {
	if g.Whole {
		h.Actor.SetShare(nil)
	} else {
		h.Actor.SetShare(&actor.Share{RPM: g.Share[RPM], InputTPM: g.Share[InputTPM], OutputTPM: g.Share[OutputTPM],
			MaxConcurrency: int(math.Floor(g.Share[MaxConcurrency] + 1e-9))})
		var l actor.Learned
		l.CoolUntil = g.Learned.CoolUntil
		for i, c := range g.Learned.Caps {
			l.Caps[i] = actor.Cap{Remaining: c.Remaining, Until: c.Until, At: c.At}
		}
		h.Actor.Learn(l)
	}
	if h.OnApply != nil {
		h.OnApply()
	}
}
