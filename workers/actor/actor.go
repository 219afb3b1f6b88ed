// This file owns the Actor: a provider's admission state, its options
// (whose defaults configs owns) and its refusals.

package actor

import (
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults and fixed back-offs. They are constants, not settings, so that
// every Actor behaves the same way.
const (
	// DefaultMaxOutput is the output reservation made when a call gives no
	// max_tokens (maxOut <= 0).
	DefaultMaxOutput = 4096
	// DefaultRateLimitCoolDown is the cool-down after a 429 that carried no
	// retry-after hint.
	DefaultRateLimitCoolDown = time.Second
	// ProviderAuthBackoff is how long an Actor refuses with
	// [ReasonProviderAuth] after the upstream rejected the provider's own key
	// (a 401, or a 403 that a key probe confirmed). The condition needs an
	// operator, not a retry storm.
	ProviderAuthBackoff = 30 * time.Second
	// MaxLearnedWait bounds any wait learned from the upstream (a
	// retry-after hint or a rate-limit reset), so one absurd header cannot
	// take a provider out of service for days.
	MaxLearnedWait = time.Hour
)

// Reason says why [Actor.Admit] refused a call.
type Reason string

// Refusal reasons, listed in the order in which Admit checks them; a
// [Refusal] carries the first one that applies.
const (
	// ReasonProviderAuth: the upstream recently rejected the provider's key.
	ReasonProviderAuth Reason = "provider_auth"
	// ReasonBreakerOpen: the breaker is open, or half-open with every probe
	// slot taken.
	ReasonBreakerOpen Reason = "breaker_open"
	// ReasonCoolingDown: the upstream answered 429 or 529 and asked us to
	// wait.
	ReasonCoolingDown Reason = "cooling_down"
	// ReasonConcurrency: every concurrency slot is in use.
	ReasonConcurrency Reason = "concurrency"
	// ReasonRPM: the requests-per-minute bucket is empty.
	ReasonRPM Reason = "rpm"
	// ReasonInputTPM: the input-tokens-per-minute bucket is short.
	ReasonInputTPM Reason = "input_tpm"
	// ReasonOutputTPM: the output-tokens-per-minute bucket is short.
	ReasonOutputTPM Reason = "output_tpm"
)

// Refusal is the error returned by [Actor.Admit] when a call may not go
// upstream now. Match it with errors.As.
type Refusal struct {
	// Provider is the Actor's name.
	Provider string
	// Reason is the first check that refused.
	Reason Reason
	// When is the earliest time at which every time-based constraint
	// (breaker, cool-down, buckets, auth back-off) may be satisfied, for a
	// retry-after answer or for parking. It equals the refusal time when the
	// only obstacles end with a finished call (concurrency, half-open probes);
	// the caller learns of those from its own accounting of finished calls
	// (the router's OnRelease).
	When time.Time
}

// Error implements error.
func (r *Refusal) Error() string {
	return fmt.Sprintf("provider %s refused admission: %s until %s",
		r.Provider, r.Reason, r.When.Format(time.RFC3339Nano))
}

// RetryAfter is the time from now until When, never negative.
func (r *Refusal) RetryAfter(now time.Time) time.Duration {
	return max(r.When.Sub(now), 0)
}

// BreakerOptions configure an Actor's circuit breaker. FailureRatio,
// MinRequests, Window and OpenFor must be positive: they are settings of
// the configuration (providers[].breaker), which owns their defaults and
// validates them; the Actor has none of its own.
type BreakerOptions struct {
	// FailureRatio opens the breaker when failures/requests in the window
	// reach it.
	FailureRatio float64
	// MinRequests is the number of counted calls in the window below which
	// the ratio never opens the breaker; that many consecutive failures
	// open it whatever the window holds.
	MinRequests int
	// Window is the rolling window over which calls are counted, kept as
	// ten sub-buckets of Window/10.
	Window time.Duration
	// OpenFor is how long the breaker stays open before going half-open.
	OpenFor time.Duration
	// HalfOpenProbes is how many calls a half-open breaker lets through, and
	// how many of them must succeed to close it. It is not a setting of the
	// configuration, so 0 means 1.
	HalfOpenProbes int
}

// withProbes returns o with HalfOpenProbes 1 when it sets none.
func (o BreakerOptions) withProbes() BreakerOptions {
	o.HalfOpenProbes = max(o.HalfOpenProbes, 1)
	return o
}

// Options configure an Actor. A zero or negative limit means "no limit of
// that kind".
type Options struct {
	// Name identifies the provider in refusals and snapshots.
	Name string
	// MaxConcurrency bounds in-flight calls (0 = unlimited).
	MaxConcurrency int
	// RPM is requests per minute (0 = unlimited). The requests bucket
	// refills at RPM/60 per second and holds [RequestBurst](RPM), one
	// second's worth, not a full minute's.
	RPM int
	// InputTPM is input tokens per minute (0 = unlimited).
	InputTPM int
	// OutputTPM is output tokens per minute (0 = unlimited).
	OutputTPM int
	// Breaker configures the circuit breaker.
	Breaker BreakerOptions
	// Now is the clock (nil = time.Now). Tests inject a fake clock.
	Now func() time.Time
}

// OutcomeKind classifies how an upstream call ended.
type OutcomeKind int

// Outcome kinds. The zero OutcomeKind is not one of them and is treated like
// [Canceled]: neither success nor failure.
const (
	// Success: the upstream answered 2xx.
	Success OutcomeKind = iota + 1
	// ClientError: a 4xx caused by the request itself; not a breaker failure.
	ClientError
	// RateLimited: 429. Feeds the cool-down and the buckets, not the breaker.
	RateLimited
	// Overloaded: 529 (or an overloaded_error). A breaker failure; cools
	// down only when a retry-after hint came with it.
	Overloaded
	// ServerError: another 5xx. A breaker failure.
	ServerError
	// Timeout: no answer in time. A breaker failure.
	Timeout
	// ConnError: the connection failed or broke. A breaker failure.
	ConnError
	// Canceled: the caller went away; neither success nor failure.
	Canceled
	// ProviderAuth: the provider's own key refused (a 401, or a 403 that a
	// key probe confirmed; a 403 caused by the request is a ClientError).
	// Not a breaker failure; the Actor refuses with [ReasonProviderAuth] for
	// [ProviderAuthBackoff].
	ProviderAuth
)

// String returns the kind's snake_case name, for metrics labels.
func (k OutcomeKind) String() string {
	switch k {
	case Success:
		return "success"
	case ClientError:
		return "client_error"
	case RateLimited:
		return "rate_limited"
	case Overloaded:
		return "overloaded"
	case ServerError:
		return "server_error"
	case Timeout:
		return "timeout"
	case ConnError:
		return "conn_error"
	case Canceled:
		return "canceled"
	case ProviderAuth:
		return "provider_auth"
	default:
		return "unknown"
	}
}

// Outcome reports how one admitted call ended.
type Outcome struct {
	// Kind classifies the result.
	Kind OutcomeKind
	// RetryAfter is the upstream's retry-after / retry-after-ms hint (0 when
	// none). With RateLimited or Overloaded it sets the cool-down.
	RetryAfter time.Duration
	// Header holds the upstream response headers, in canonical form as
	// net/http produces them; nil when there was no response. Read:
	// anthropic-ratelimit-requests-* (requests bucket),
	// anthropic-ratelimit-input-tokens-* (input bucket; when absent,
	// anthropic-ratelimit-tokens-* is used for it),
	// anthropic-ratelimit-output-tokens-* (output bucket), with RFC 3339
	// resets; x-ratelimit-{remaining,reset}-requests (requests bucket) and
	// x-ratelimit-{remaining,reset}-tokens (input bucket: OpenAI's combined
	// token limit is configured as input_tpm), with resets like "6m0s". A
	// reset given as a bare number is read as seconds from now, or as a Unix
	// time when it is larger than 1e9.
	Header http.Header
	// InputTokens and OutputTokens are the real usage, read only when
	// UsageKnown is set.
	InputTokens, OutputTokens int
	// UsageKnown reports that InputTokens and OutputTokens are real.
	UsageKnown bool
}

// verdict of the breaker for an outcome.
type verdict int

const (
	ignored verdict = iota
	succeeded
	failed
)

func (k OutcomeKind) verdict() verdict {
	switch k {
	case Success:
		return succeeded
	case Overloaded, ServerError, Timeout, ConnError:
		return failed
	default:
		return ignored
	}
}

// producedNoOutput reports whether a call that ended this way, with unknown
// usage, is taken to have generated no output, so its whole output
// reservation is refunded. Success, Timeout and Canceled keep the reservation:
// a stream may have run for a while.
func (k OutcomeKind) producedNoOutput() bool {
	switch k {
	case ClientError, RateLimited, Overloaded, ServerError, ConnError, ProviderAuth:
		return true
	default:
		return false
	}
}

// Actor is the admission controller of one upstream provider. Create it with
// [New]. It is safe for concurrent use; see the package documentation.
type Actor struct {
	now func() time.Time

	mu        sync.Mutex
	name      string
	maxConc   int
	noSlots   bool // a share of no concurrency slot: maxConc 0 refuses all
	inFlight  int
	req       bucket
	in        bucket
	out       bucket
	br        breaker
	coolUntil time.Time
	authUntil time.Time

	opts  Options // as configured (New, Update)
	share *Share  // this relay's share of the limits in a cluster; nil: all of them
	used  Usage   // admitted so far
}

// New returns an Actor configured by o, with full buckets and a closed
// breaker.
func New(o Options) *Actor {
	a := &Actor{now: o.Now}
	if a.now == nil {
		a.now = time.Now
	}
	now := a.now()
	a.br.init(now)
	a.configure(now, o)
	return a
}

// RequestBurst is the most requests an rpm limit lets through at once: one
// second's worth, at least 1. Providers enforce per-minute request limits
// over shorter intervals (Anthropic: "60 RPM may be enforced as 1 request
// per second"), so a full minute's burst would draw 429s. Token buckets
// hold a full minute's worth, as a single request may need many tokens.
func RequestBurst(rpm int) int {
	return max(1, (rpm+59)/60)
}

// configure applies o's limits, cut to the share when one is set; a.mu
// is held or a is not yet shared.
func (a *Actor) configure(now time.Time, o Options) {
	a.opts = o
	a.name = o.Name
	a.br.configure(o.Breaker.withProbes())
	a.applyLimits(now)
}

// applyLimits sets the concurrency limit and the buckets from the
// configured options and the share; a.mu is held.
func (a *Actor) applyLimits(now time.Time) {
	o, sh := a.opts, a.share
	a.maxConc = max(o.MaxConcurrency, 0)
	a.noSlots = false
	if sh == nil {
		a.req.configure(now, o.RPM, RequestBurst(o.RPM))
		a.in.configure(now, o.InputTPM, 0)
		a.out.configure(now, o.OutputTPM, 0)
		return
	}
	if a.maxConc > 0 {
		// 0 is unlimited for the option but nothing for a share: a relay
		// granted no slot waits for its next grant.
		a.maxConc = min(a.maxConc, max(sh.MaxConcurrency, 0))
		a.noSlots = a.maxConc == 0
	}
	a.req.configureShare(now, o.RPM, sh.RPM, RequestBurst(int(math.Ceil(min(sh.RPM, float64(max(o.RPM, 0)))))))
	a.in.configureShare(now, o.InputTPM, sh.InputTPM, 0)
	a.out.configureShare(now, o.OutputTPM, sh.OutputTPM, 0)
}

// Name returns the provider name the Actor was configured with.
func (a *Actor) Name() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.name
}

// Update changes the Actor's limits in place for a configuration hot reload.
// In-flight permits stay valid and are settled normally, the breaker keeps
// its state (an open breaker keeps its current reopening time; new
// thresholds apply from the next call; the rolling counts are cleared only
// when Window changes), and cool-down, auth back-off and learned header caps
// are kept. Bucket levels are kept and clamped to a lowered burst; a bucket
// that gains a limit starts full. Lowering MaxConcurrency below the in-flight
// count refuses new calls until enough finish. The clock (Options.Now) cannot
// be changed and is ignored.
func (a *Actor) Update(o Options) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.configure(now, o)
}

// Permit is the right to make one upstream call, returned by [Actor.Admit].
// It must be finished with [Permit.Done] exactly once; later calls are
// ignored. A Permit is safe to finish from any goroutine.
type Permit struct {
	a          *Actor
	done       bool // guarded by a.mu
	probe      bool
	gen        uint64
	inLim      *rate.Limiter
	outLim     *rate.Limiter
	inCharged  int
	outCharged int
}

// sizes returns the input and output charges for a call, each clamped to its
// bucket's burst.
func (a *Actor) sizes(inTokens, maxOut int) (in, out int) {
	if maxOut <= 0 {
		maxOut = DefaultMaxOutput
	}
	return a.in.clamp(max(inTokens, 0)), a.out.clamp(maxOut)
}

// check evaluates every admission constraint at now. It returns the first
// refusing reason ("" when the call may go) and the latest time among the
// constraints, which is now when nothing refuses.
func (a *Actor) check(now time.Time, in, out int) (Reason, time.Time) {
	var reason Reason
	when := now
	note := func(r Reason, t time.Time) {
		if reason == "" {
			reason = r
		}
		if t.After(when) {
			when = t
		}
	}
	if now.Before(a.authUntil) {
		note(ReasonProviderAuth, a.authUntil)
	}
	if ok, t := a.br.allow(now); !ok {
		note(ReasonBreakerOpen, t)
	}
	if now.Before(a.coolUntil) {
		note(ReasonCoolingDown, a.coolUntil)
	}
	if (a.maxConc > 0 || a.noSlots) && a.inFlight >= a.maxConc {
		note(ReasonConcurrency, now)
	}
	if ok, t := a.req.ready(now, 1); !ok {
		note(ReasonRPM, t)
	}
	if ok, t := a.in.ready(now, in); !ok {
		note(ReasonInputTPM, t)
	}
	if ok, t := a.out.ready(now, out); !ok {
		note(ReasonOutputTPM, t)
	}
	return reason, when
}

// Admit asks for capacity for one call estimated at inTokens input tokens
// and maxOut output tokens (the request's max_tokens; <= 0 reserves
// [DefaultMaxOutput]). It never blocks. On success it charges every bucket,
// takes a concurrency slot (and a probe slot when the breaker is half-open)
// and returns a Permit that must be finished exactly once. Otherwise it
// charges nothing and returns a *[Refusal].
func (a *Actor) Admit(inTokens, maxOut int) (*Permit, error) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	in, out := a.sizes(inTokens, maxOut)
	if reason, when := a.check(now, in, out); reason != "" {
		return nil, &Refusal{Provider: a.name, Reason: reason, When: when}
	}
	// Every bucket said yes under a.mu, and nothing else touches the
	// limiters, so these charges cannot fail.
	a.req.take(now, 1)
	a.in.take(now, in)
	a.out.take(now, out)
	a.inFlight++
	a.used.Requests++
	a.used.InputTokens += float64(in)
	a.used.OutputTokens += float64(out)
	return &Permit{
		a:          a,
		probe:      a.br.admit(),
		gen:        a.br.gen,
		inLim:      a.in.lim,
		outLim:     a.out.lim,
		inCharged:  in,
		outCharged: out,
	}, nil
}

// Done reports the outcome of the permitted call. It releases the
// concurrency slot; settles the token buckets (refunds the unused output
// reservation and corrects the input estimate when o.UsageKnown; without
// usage, refunds the whole output reservation for outcomes that produce no
// output and keeps every charge otherwise); feeds the breaker; sets the
// cool-down for 429/529 and the auth back-off for ProviderAuth; caps the
// buckets from the rate-limit headers. Calls after
// the first are ignored, as are calls on a nil Permit.
func (p *Permit) Done(o Outcome) {
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

	a.in.settle(now, p.inLim, p.inCharged, o.InputTokens, o.UsageKnown, false)
	a.out.settle(now, p.outLim, p.outCharged, o.OutputTokens, o.UsageKnown, o.Kind.producedNoOutput())
	a.br.record(now, p.gen, p.probe, o.Kind.verdict())

	switch o.Kind {
	case RateLimited:
		d := o.RetryAfter
		if d <= 0 {
			d = DefaultRateLimitCoolDown
		}
		a.coolUntil = later(a.coolUntil, now.Add(min(d, MaxLearnedWait)))
	case Overloaded:
		if o.RetryAfter > 0 {
			a.coolUntil = later(a.coolUntil, now.Add(min(o.RetryAfter, MaxLearnedWait)))
		}
	case ProviderAuth:
		a.authUntil = later(a.authUntil, now.Add(ProviderAuthBackoff))
	}
	if o.Header != nil {
		a.learn(now, o.Header)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// BreakerState is the state of an Actor's circuit breaker.
type BreakerState int

// Breaker states.
const (
	BreakerClosed BreakerState = iota
	BreakerHalfOpen
	BreakerOpen
)

// String returns "closed", "half_open" or "open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half_open"
	case BreakerOpen:
		return "open"
	default:
		return fmt.Sprintf("BreakerState(%d)", int(s))
	}
}

// BucketState is a snapshot of one token bucket.
type BucketState struct {
	// PerMinute is the configured limit (0 = none).
	PerMinute int
	// Available is what the bucket could hand out now: the smaller of the
	// limiter's tokens and any learned cap; +Inf when neither applies. It is
	// negative while the bucket repays an input correction.
	Available float64
	// CappedUntil is when the cap learned from upstream headers ends; zero
	// when none is in force.
	CappedUntil time.Time
}

// State is a snapshot of an Actor, for metrics and admin pages.
type State struct {
	Name           string
	Breaker        BreakerState
	BreakerOpenAt  time.Time // when an open breaker goes half-open; zero otherwise
	InFlight       int
	MaxConcurrency int
	CoolingUntil   time.Time // zero or past when not cooling down
	AuthFailUntil  time.Time // zero or past when the provider key is not suspect
	Requests       BucketState
	InputTokens    BucketState
	OutputTokens   BucketState
}

// State returns a snapshot of the Actor at the current time.
func (a *Actor) State() State {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.br.current(now)
	s := State{
		Name:           a.name,
		Breaker:        st,
		InFlight:       a.inFlight,
		MaxConcurrency: a.maxConc,
		CoolingUntil:   a.coolUntil,
		AuthFailUntil:  a.authUntil,
		Requests:       a.req.state(now),
		InputTokens:    a.in.state(now),
		OutputTokens:   a.out.state(now),
	}
	if st == BreakerOpen {
		s.BreakerOpenAt = a.br.openUntil
	}
	return s
}

var _ error = (*Refusal)(nil)
