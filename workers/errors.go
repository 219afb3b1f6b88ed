package workers

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/relaygw/relay/workers/actor"
)

// FailureKind classifies a failed upstream attempt.
type FailureKind uint8

// The kinds of upstream failure.
const (
	// FailUnreachable is a connection that could not be made or broke before an answer.
	FailUnreachable FailureKind = iota + 1
	// FailTimeout is a call that outlived its provider's timeout.
	FailTimeout
	// FailStatus is a retryable upstream status (408, 429, 5xx, 529).
	FailStatus
	// FailGarbage is a 2xx answer that is not what the API promises.
	FailGarbage
	// FailProviderAuth is the upstream refusing the provider's own key: a
	// 401, or a 403 that a key probe confirmed.
	FailProviderAuth
	// FailInvalidRequest is a client body the target's format cannot
	// express; no call was made, and no other target is tried.
	FailInvalidRequest
)

// String names the kind for logs and metrics.
func (k FailureKind) String() string {
	switch k {
	case FailUnreachable:
		return "unreachable"
	case FailTimeout:
		return "timeout"
	case FailStatus:
		return "status"
	case FailGarbage:
		return "garbage"
	case FailProviderAuth:
		return "provider_auth"
	case FailInvalidRequest:
		return "invalid_request"
	}
	return "unknown"
}

// Failure is one failed upstream attempt.
type Failure struct {
	// Provider names the provider that failed.
	Provider string
	// Kind classifies the failure.
	Kind FailureKind
	// Status is the upstream status, when there was one.
	Status int
	// RetryAfter is the upstream's retry-after hint, when it gave one.
	RetryAfter time.Duration
	// Err describes the failure; it never holds a key.
	Err error
}

// Error is returned by Do when no target could serve the request.
type Error struct {
	// Failures lists every failed attempt in order.
	Failures []Failure
	// Refusals lists the targets whose providers had no capacity (breaker
	// open, cooling down, concurrency or a token bucket exhausted).
	Refusals []*actor.Refusal
	// Attempts counts the upstream calls made.
	Attempts int
}

// NoCapacity reports whether nothing was even tried: every target refused
// for lack of capacity. The client should come back after RetryAfter.
// Providers set aside because the upstream refused their keys are not
// short of capacity: see Transient.
func (e *Error) NoCapacity() bool {
	return len(e.Failures) == 0 && len(e.Refusals) > 0 && e.Transient()
}

// RateLimitedOnly reports whether every call made was answered 429: the
// upstreams' limits were tighter than the relay's buckets, and waiting for
// their cool-down will help.
func (e *Error) RateLimitedOnly() bool {
	for _, f := range e.Failures {
		if f.Kind != FailStatus || f.Status != http.StatusTooManyRequests {
			return false
		}
	}
	return len(e.Failures) > 0
}

// ShouldRetry reports whether a client retry could help: false when the
// relay already retried on the client's behalf and no upstream gave a hint
// that capacity returns soon.
func (e *Error) ShouldRetry() bool {
	if len(e.Refusals) > 0 || e.Attempts <= 1 {
		return true
	}
	for _, f := range e.Failures {
		if f.RetryAfter > 0 {
			return true
		}
	}
	return false
}

// Error summarises the failures without any key or upstream body.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("no upstream could serve the request")
	sep := ": "
	for _, f := range e.Failures {
		fmt.Fprintf(&b, "%s%s: %s", sep, f.Provider, f.Err)
		sep = "; "
	}
	for _, r := range e.Refusals {
		fmt.Fprintf(&b, "%s%s", sep, r)
		sep = "; "
	}
	return b.String()
}

// RetryAfter is the shortest wait any upstream hinted at or any refusing
// provider computed, or 0 when there is no hint.
func (e *Error) RetryAfter() time.Duration {
	var d time.Duration
	take := func(x time.Duration) {
		if x > 0 && (d == 0 || x < d) {
			d = x
		}
	}
	for _, f := range e.Failures {
		take(f.RetryAfter)
	}
	now := time.Now()
	for _, r := range e.Refusals {
		take(r.RetryAfter(now))
	}
	return d
}

// Transient reports whether waiting could help: false when every failure
// was a broken answer or a refused provider key, and every refusal a
// provider set aside for its refused key: those need an operator.
func (e *Error) Transient() bool {
	for _, f := range e.Failures {
		if f.Kind != FailGarbage && f.Kind != FailProviderAuth {
			return true
		}
	}
	for _, r := range e.Refusals {
		if r.Reason != actor.ReasonProviderAuth {
			return true
		}
	}
	return false
}

// KeysRefused reports whether every target failed or was refused because
// the upstream refused its provider's own key (a 401, or a confirmed 403):
// only an operator can help, not a retry by the client.
func (e *Error) KeysRefused() bool {
	for _, f := range e.Failures {
		if f.Kind != FailProviderAuth {
			return false
		}
	}
	for _, r := range e.Refusals {
		if r.Reason != actor.ReasonProviderAuth {
			return false
		}
	}
	return len(e.Failures)+len(e.Refusals) > 0
}

// ErrUnknownModel is returned by Do for a model no route serves.
var ErrUnknownModel = errors.New("unknown model")

// ErrInvalidRequest is returned by Do when the client's body cannot be
// expressed in a target's API format (a malformed message list, say); the
// error's text is safe to show the client.
var ErrInvalidRequest = errors.New("invalid request")
