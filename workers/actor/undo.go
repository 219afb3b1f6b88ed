// This file owns what an Actor offers an admission made of several
// parts (a key's limits and then a provider's): a look at whether Admit
// would succeed, and the undoing of a permit that was never used.

package actor

import "time"

// Peek reports whether Admit(inTokens, maxOut) would succeed now, without
// charging anything; when it would not, it also returns the first
// refusing reason and the time Refusal.When would name.
func (a *Actor) Peek(inTokens, maxOut int) (ok bool, reason Reason, when time.Time) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	in, out := a.sizes(inTokens, maxOut)
	reason, when = a.check(now, in, out)
	return reason == "", reason, when
}

// Undo gives back everything p took, as if Admit had never been called:
// the concurrency slot, the probe slot of a half-open breaker, the
// request and both token charges. It is for a permit that was never used
// (the rest of a combined admission refused). Like Done it finishes p:
// later calls of either are ignored.
func (p *Permit) Undo() {
	if p == nil || p.a == nil {
		return
	}
	a := p.a
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	a.inFlight--
	a.used.Requests--
	a.used.InputTokens -= float64(p.inCharged)
	a.used.OutputTokens -= float64(p.outCharged)
	a.req.settle(now, p.reqLim, 1, 0, false, true)
	a.in.settle(now, p.inLim, p.inCharged, 0, false, true)
	a.out.settle(now, p.outLim, p.outCharged, 0, false, true)
	a.br.record(now, p.gen, p.probe, ignored)
}
