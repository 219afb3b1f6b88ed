// Package keylimits holds the relay API keys' own limits: requests,
// input and output tokens per minute and concurrent calls per key,
// checked together with the providers' limits before a request is
// admitted.
//
// Each limited key gets one [actor.Actor], the providers' admission
// controller, with its breaker unused: the same token buckets
// (golang.org/x/time/rate), the same reservation of max_tokens and
// settlement to the real usage. Limiters are keyed by the key's name,
// made on first use and updated in place when the key's limits change
// (a configuration reload, a key changed through the admin API), so a
// key's buckets survive a reload.
//
// On several relays a key's limits are held for the whole cluster by a
// capacity lease (package workers/lease, through Actor), like a
// provider's; without one they may be divided statically by the number
// of relays (Options.Relays).
package keylimits

import (
	"math"
	"sync"
	"time"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers/actor"
)

// Options configure a Limiter.
type Options struct {
	// Relays returns how many relays share the keys' limits (this one
	// included); each enforces its share. Nil or a result below 1 means 1.
	Relays func() int
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Limiter is the set of the keys' limiters. It is safe for concurrent
// use.
type Limiter struct {
	relays func() int
	now    func() time.Time

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	limits configs.KeyLimits // as configured, before division
	share  int               // the divisor applied
	a      *actor.Actor
}

// New returns a Limiter.
func New(o Options) *Limiter {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Limiter{relays: o.Relays, now: o.Now, keys: map[string]*entry{}}
}

// Limited reports whether lim sets any limit.
func Limited(lim configs.KeyLimits) bool { return lim != (configs.KeyLimits{}) }

// breakerOptions are valid breaker settings for a key's Actor. The breaker
// never sees a verdict (keys' permits end as Canceled), so it never opens.
var breakerOptions = actor.BreakerOptions{FailureRatio: 1, MinRequests: math.MaxInt32, Window: time.Minute, OpenFor: time.Second}

func (l *Limiter) share() int {
	if l.relays == nil {
		return 1
	}
	return max(l.relays(), 1)
}

// divide is one relay's share of a per-relay limit: limit/n rounded up, so
// that a limit is never divided down to nothing (0 stays 0: no limit).
func divide(limit, n int) int {
	if limit <= 0 {
		return 0
	}
	return max(1, (limit+n-1)/n)
}

func options(name string, lim configs.KeyLimits, n int) actor.Options {
	return actor.Options{
		Name:           name,
		MaxConcurrency: divide(lim.MaxConcurrency, n),
		RPM:            divide(lim.RPM, n),
		InputTPM:       divide(lim.InputTPM, n),
		OutputTPM:      divide(lim.OutputTPM, n),
		Breaker:        breakerOptions,
	}
}

// Actor returns the Actor of the key named name with limits lim, making
// it or updating it in place; nil when lim sets no limit. A cluster's
// lease holds the key's limits through it (workers/lease.ActorHolder:
// its share of the cluster's limits).
func (l *Limiter) Actor(name string, lim configs.KeyLimits) *actor.Actor {
	return l.actorFor(name, lim)
}

// actorFor is Actor.
func (l *Limiter) actorFor(name string, lim configs.KeyLimits) *actor.Actor {
	if !Limited(lim) {
		return nil
	}
	n := l.share()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[name]
	switch {
	case e == nil:
		o := options(name, lim, n)
		o.Now = l.now
		e = &entry{limits: lim, share: n, a: actor.New(o)}
		l.keys[name] = e
	case e.limits != lim || e.share != n:
		e.limits, e.share = lim, n
		e.a.Update(options(name, lim, n))
	}
	return e.a
}

// Refusal says why a key's limits refused a request, and until when.
type Refusal struct {
	// Key names the key.
	Key string
	// Reason is the first limit that refused: rpm, input_tpm, output_tpm
	// or concurrency.
	Reason actor.Reason
	// When is the earliest time the key's buckets may admit the request;
	// for concurrency alone, the refusal time (a finished call frees it).
	When time.Time
}

// Error implements error.
func (r *Refusal) Error() string {
	return "key " + r.Key + " is over its " + string(r.Reason) + " limit"
}

// Permit is a key's admission of one request; finish it with Done or
// Undo exactly once. A nil Permit (the key has no limits) is fine.
type Permit struct {
	p *actor.Permit
}

// Admit takes the key's capacity for one request estimated at inTokens
// input tokens and maxOut output tokens (<= 0: actor.DefaultMaxOutput).
// It returns a nil Permit and nil error for a key without limits, and a
// *Refusal when the key is over a limit.
func (l *Limiter) Admit(name string, lim configs.KeyLimits, inTokens, maxOut int) (*Permit, error) {
	a := l.actorFor(name, lim)
	if a == nil {
		return nil, nil
	}
	p, err := a.Admit(inTokens, maxOut)
	if err != nil {
		r := &Refusal{Key: name, When: l.now()}
		if ref, ok := err.(*actor.Refusal); ok {
			r.Reason, r.When = ref.Reason, ref.When
		}
		return nil, r
	}
	return &Permit{p: p}, nil
}

// Hold reports whether the key's limits would refuse the request now and,
// if so, until when (the refusal time itself when only a finished call
// can free a concurrency slot).
func (l *Limiter) Hold(name string, lim configs.KeyLimits, inTokens, maxOut int) (held bool, until time.Time) {
	a := l.actorFor(name, lim)
	if a == nil {
		return false, time.Time{}
	}
	ok, _, when := a.Peek(inTokens, maxOut)
	return !ok, when
}

// Wait estimates how long the key's token buckets take to admit ahead+1
// requests of this size (ahead of them already waiting): 0 when they
// could now. Concurrency is not counted: only finished calls free it.
func (l *Limiter) Wait(name string, lim configs.KeyLimits, ahead, inTokens, maxOut int) time.Duration {
	a := l.actorFor(name, lim)
	if a == nil {
		return 0
	}
	if maxOut <= 0 {
		maxOut = actor.DefaultMaxOutput
	}
	st := a.State()
	n := float64(ahead + 1)
	w := max(need(st.Requests, n), need(st.InputTokens, n*float64(max(inTokens, 0))), need(st.OutputTokens, n*float64(maxOut)))
	if math.IsInf(w, 1) || w > float64(math.MaxInt64/2) {
		return time.Duration(math.MaxInt64 / 2)
	}
	return time.Duration(w)
}

// need is the time, in nanoseconds, until bucket b holds amount, at its
// refill rate; 0 when it does now or has no limit.
func need(b actor.BucketState, amount float64) float64 {
	if b.PerMinute <= 0 || b.Available >= amount {
		return 0
	}
	if !b.CappedUntil.IsZero() {
		return math.Inf(1)
	}
	return (amount - b.Available) / (float64(b.PerMinute) / 60) * float64(time.Second)
}

// Done settles the key's token buckets to the request's real usage
// (known: the upstream stated it; unknown keeps the reservation) and
// frees its concurrency slot.
func (p *Permit) Done(inTokens, outTokens int, known bool) {
	if p == nil {
		return
	}
	p.p.Done(actor.Outcome{Kind: actor.Canceled, InputTokens: inTokens, OutputTokens: outTokens, UsageKnown: known})
}

// Undo gives back everything the permit took: the request was never sent.
func (p *Permit) Undo() {
	if p == nil {
		return
	}
	p.p.Undo()
}

// Forget drops the limiters of keys not in keep (keys removed by a reload
// or revoked); their permits in flight still finish normally.
func (l *Limiter) Forget(keep func(name string) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name := range l.keys {
		if !keep(name) {
			delete(l.keys, name)
		}
	}
}
