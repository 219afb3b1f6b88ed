// Package actor is the per-provider admission controller of the relay.
//
// Each upstream provider (one base URL and one API key) gets one [Actor]. The
// Actor owns all of that provider's admission state: the concurrency limit,
// three token buckets (requests, input tokens and output tokens per minute),
// a circuit breaker, a rate-limit cool-down and a provider-auth back-off. The
// router asks [Actor.Admit] before each upstream call and reports the outcome
// through [Permit.Done] afterwards; it never touches the state directly.
//
// # Concurrency
//
// An Actor is safe for concurrent use by any number of goroutines. All of its
// state sits behind one mutex, held only for a few arithmetic steps; nothing
// blocks while holding it and the package starts no goroutines. A [Permit] is
// also safe to finish from any goroutine. Time-based recovery (bucket refill,
// end of a cool-down, the breaker going half-open) is evaluated lazily from the
// injected clock, so no timers run in the background: a caller that parks
// work arms its own timer at the refusal's [Refusal.When], and learns of
// capacity freed by a finished call from its own bookkeeping (in the relay,
// the router's OnRelease kicks the lanes).
//
// # Token buckets
//
// Buckets are [golang.org/x/time/rate] limiters with limit = per-minute/60 per
// second; they refill continuously. The input and output token buckets hold
// the full per-minute amount (burst = per-minute), so a fresh or idle provider
// may spend a whole minute's token quota at once. The requests bucket holds
// only one second's worth, [RequestBurst] = max(1, ceil(rpm/60)), because
// providers enforce per-minute request limits over shorter intervals
// (Anthropic: "60 RPM may be enforced as 1 request per second"): an rpm of 60
// lets one call through at once and then one per second. Token counts are
// floats, so many tiny requests at high frequency still see the bucket
// refill. A charge larger than the burst is clamped to the burst, so a huge
// request is admitted once the bucket is full rather than refused forever.
//
// All buckets are checked and then charged under the Actor's mutex, which is
// the only code that ever touches the limiters; if any bucket refuses, none is
// charged, so a refusal never leaks tokens. (This is equivalent to reserving
// every bucket and cancelling the others' reservations, without the allocation
// of a [rate.Reservation].) Output is reserved at max_tokens (or
// [DefaultMaxOutput]) at admission and the unused part is refunded by
// [Permit.Done]; the input estimate is corrected up or down when the real usage
// is known. Refunds use a negative ReserveN, which x/time/rate applies as a
// credit capped at the burst (golang/go#54082); a test pins that behaviour.
//
// # Learning from the upstream
//
// Rate-limit headers on an upstream response (Anthropic
// anthropic-ratelimit-*-{remaining,reset}, OpenAI x-ratelimit-{remaining,
// reset}-*) set a per-bucket cap: until the stated reset, the bucket may not
// hand out more than the stated remaining amount, however full the local
// limiter is. Admissions under a cap consume it. Caps apply even to buckets
// with no configured limit, so a provider's real limits are respected without
// configuration. See [Outcome] for how each header maps onto a bucket.
//
// # Circuit breaker
//
// The breaker is a small rolling-window breaker written here rather than
// github.com/sony/gobreaker/v2: gobreaker reads time.Now directly (no clock can
// be injected, so it cannot be tested on a fake clock or share the Actor's
// clock) and does not expose when an open breaker will go half-open, which
// [Refusal.When] needs. It counts [ServerError], [Overloaded], [Timeout]
// and [ConnError] as failures and [Success] as success; other outcomes are
// ignored. It opens when, within the rolling [BreakerOptions.Window] (ten
// sub-buckets), at least MinRequests calls were counted and failures/requests
// >= FailureRatio, or at once after MinRequests consecutive failures within
// one window (a
// provider that starts failing everything is cut off without waiting for
// its earlier successes to leave the window). It stays open for OpenFor, then half-open admits
// HalfOpenProbes probe calls: one failure reopens it for another OpenFor, and
// HalfOpenProbes successes close it. A probe that ends without a verdict (for
// example [Canceled]) frees its probe slot. Results of calls admitted before a
// state change are ignored.
package actor
