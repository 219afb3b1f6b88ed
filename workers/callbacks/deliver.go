package callbacks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Outcomes of one delivery attempt, as Result.Outcome. They are also the
// values of the relay_callbacks_total{outcome} label.
const (
	// OutcomeDelivered means the receiver answered 2xx: stop.
	OutcomeDelivered = "delivered"
	// OutcomeRetry means the attempt failed in a way a later attempt may
	// not: try again at Result.NextAttemptAt.
	OutcomeRetry = "retry"
	// OutcomeGone means the receiver answered 410 Gone: stop, and stop
	// sending to this URL.
	OutcomeGone = "gone"
	// OutcomeFailed means the last allowed attempt failed, or the callback
	// can never be delivered (a refused URL or address): stop.
	OutcomeFailed = "failed"
)

// Delivery defaults.
const (
	// DefaultMaxAttempts is the attempts per callback (SPEC.md §2).
	DefaultMaxAttempts = 10
	// DefaultBaseBackoff is the backoff ceiling after the first attempt.
	DefaultBaseBackoff = time.Second
	// DefaultMaxBackoff caps the backoff ceiling.
	DefaultMaxBackoff = 10 * time.Minute
	// UserAgent is sent with every callback.
	UserAgent = "relay-webhooks/1"
	// MaxResponseBytes is the most of a response body that is read (and
	// discarded) before the connection is closed.
	MaxResponseBytes = 64 << 10
)

// Callback is one webhook message.
type Callback struct {
	// URL is the receiver's callback_url, already accepted by Checker.
	URL string
	// MsgID is the webhook-id: stable for a job across every attempt, so
	// the receiver can deduplicate.
	MsgID string
	// Body is the JSON payload, identical across attempts.
	Body []byte
	// Attempt is this attempt's number, starting at 1; values below 1
	// count as 1.
	Attempt int
}

// Result is the outcome of one delivery attempt.
type Result struct {
	// Outcome is OutcomeDelivered, OutcomeRetry, OutcomeGone or
	// OutcomeFailed.
	Outcome string
	// Status is the receiver's HTTP status, or 0 when there was no
	// response.
	Status int
	// Err describes why the attempt did not deliver; nil when delivered.
	// It never holds the signing secret, nor the callback URL's path or
	// query.
	Err error
	// NextAttemptAt is when the next attempt is due; set only when Outcome
	// is OutcomeRetry.
	NextAttemptAt time.Time
	// RetryAfter is the receiver's Retry-After on a 429 or 503 (capped at
	// MaxBackoff), 0 when none: a caller keeping its own schedule should
	// not attempt again before it.
	RetryAfter time.Duration
}

// DelivererOptions configures NewDeliverer. Zero fields take defaults.
type DelivererOptions struct {
	// Client sends the requests; nil means NewClient(ClientOptions{}),
	// the strict policy. Use NewClient so redirects are not followed and
	// addresses are checked at dial time.
	Client *http.Client
	// Signer signs callbacks. It is required: without one every attempt
	// fails with ErrUnsigned and nothing is sent, since a receiver could
	// not tell a callback from a forgery.
	Signer *Signer
	// MaxAttempts is the attempts per callback; 0 means DefaultMaxAttempts.
	MaxAttempts int
	// BaseBackoff is the backoff ceiling after attempt 1, doubling with
	// each attempt; 0 means DefaultBaseBackoff.
	BaseBackoff time.Duration
	// MaxBackoff caps the backoff ceiling and any Retry-After; 0 means
	// DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand returns a uniform integer in [0, n) for jitter; nil means
	// math/rand/v2's Int64N. It must be safe for concurrent use if the
	// Deliverer is used concurrently.
	Rand func(n int64) int64
}

// Deliverer sends callbacks, one attempt per call, and says what to do
// next. It keeps no state between attempts and is safe for concurrent use.
type Deliverer struct {
	client      *http.Client
	signer      *Signer
	maxAttempts int
	base        time.Duration
	cap         time.Duration
	now         func() time.Time
	rand        func(n int64) int64
}

// NewDeliverer returns a Deliverer with o's settings and defaults for the
// zero fields.
func NewDeliverer(o DelivererOptions) *Deliverer {
	d := &Deliverer{
		client:      o.Client,
		signer:      o.Signer,
		maxAttempts: o.MaxAttempts,
		base:        o.BaseBackoff,
		cap:         o.MaxBackoff,
		now:         o.Now,
		rand:        o.Rand,
	}
	if d.client == nil {
		d.client = NewClient(ClientOptions{})
	}
	if d.maxAttempts <= 0 {
		d.maxAttempts = DefaultMaxAttempts
	}
	if d.base <= 0 {
		d.base = DefaultBaseBackoff
	}
	if d.cap <= 0 {
		d.cap = DefaultMaxBackoff
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.rand == nil {
		d.rand = rand.Int64N
	}
	return d
}

// Attempt makes one delivery attempt: it POSTs cb.Body to cb.URL with the
// Standard Webhooks headers (webhook-id, a webhook-timestamp of the current
// time, webhook-signature) plus content-type: application/json and
// user-agent: relay-webhooks/1, reads at most MaxResponseBytes of the
// response and discards them.
//
// A 2xx is OutcomeDelivered and 410 is OutcomeGone. Any other status
// (including 3xx, which is never followed), a timeout or a connection error
// is OutcomeRetry with NextAttemptAt set by full-jitter exponential backoff,
// uniform in [0, min(MaxBackoff, BaseBackoff*2^(Attempt-1))] after now, and
// no earlier than a 429's or 503's Retry-After (itself capped at
// MaxBackoff); on the last allowed attempt it is OutcomeFailed instead. A
// URL that fails the form checks of Checker, or an address refused at dial
// time, is OutcomeFailed at once: retrying cannot help. A cancelled ctx
// counts as a failed attempt like any other.
func (d *Deliverer) Attempt(ctx context.Context, cb Callback) Result {
	attempt := max(cb.Attempt, 1)
	u, _, err := parseCallbackURL(cb.URL)
	if err != nil {
		return Result{Outcome: OutcomeFailed, Err: err}
	}
	if d.signer == nil {
		return Result{Outcome: OutcomeFailed, Err: ErrUnsigned}
	}
	if !validMsgID(cb.MsgID) {
		return Result{Outcome: OutcomeFailed, Err: errors.New("callbacks: webhook-id must be 1 to 256 printable ASCII characters without spaces")}
	}
	now := d.now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cb.URL, bytes.NewReader(cb.Body))
	if err != nil {
		return Result{Outcome: OutcomeFailed, Err: fmt.Errorf("%w: cannot build request", ErrBadURL)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set("Webhook-Id", cb.MsgID)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("Webhook-Signature", d.signer.Sign(cb.MsgID, now, cb.Body))

	resp, err := d.client.Do(req)
	if err != nil {
		err = redactURL(err, u)
		if errors.Is(err, ErrForbiddenAddress) {
			return Result{Outcome: OutcomeFailed, Err: err}
		}
		return d.retry(attempt, 0, err, 0)
	}
	// Drain a bounded amount so a well-behaved receiver's connection can be
	// reused; a read error does not change what the status said.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxResponseBytes))
	_ = resp.Body.Close()

	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return Result{Outcome: OutcomeDelivered, Status: code}
	case code == http.StatusGone:
		return Result{Outcome: OutcomeGone, Status: code, Err: errors.New("callbacks: receiver answered 410 gone")}
	case code >= 300 && code < 400:
		return d.retry(attempt, code, fmt.Errorf("callbacks: receiver answered redirect %d, which is not followed", code), 0)
	default:
		var after time.Duration
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			after = retryAfter(resp.Header.Get("Retry-After"), d.now())
		}
		return d.retry(attempt, code, fmt.Errorf("callbacks: receiver answered %d", code), after)
	}
}

// CloseIdleConnections closes the idle connections of the Deliverer's
// client. Call it when the Deliverer is no longer used, notably when
// NewDeliverer built the client.
func (d *Deliverer) CloseIdleConnections() { d.client.CloseIdleConnections() }

// retry returns OutcomeRetry with the next attempt time, or OutcomeFailed
// when attempt was the last one allowed.
func (d *Deliverer) retry(attempt, status int, err error, after time.Duration) Result {
	if attempt >= d.maxAttempts {
		return Result{Outcome: OutcomeFailed, Status: status, Err: fmt.Errorf("callbacks: giving up after %d attempts: %w", attempt, err)}
	}
	after = min(after, d.cap)
	delay := max(d.backoff(attempt), after)
	return Result{Outcome: OutcomeRetry, Status: status, Err: err, NextAttemptAt: d.now().Add(delay), RetryAfter: after}
}

// backoff returns a full-jitter delay, uniform in
// [0, min(cap, base*2^(attempt-1))].
func (d *Deliverer) backoff(attempt int) time.Duration {
	ceiling := d.cap
	if shift := attempt - 1; shift < 62 {
		if b := d.base << shift; b>>shift == d.base && b > 0 && b < ceiling {
			ceiling = b
		}
	}
	if ceiling == math.MaxInt64 {
		return time.Duration(d.rand(int64(ceiling)))
	}
	return time.Duration(d.rand(int64(ceiling) + 1))
}

// retryAfter parses a Retry-After value, in seconds or as an HTTP date; 0
// when absent or invalid.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 || s > int64(365*24*time.Hour/time.Second) {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// redactURL replaces the URL in a *url.Error with its scheme and host, so
// a token in the callback URL's path or query stays out of errors and
// logs. The error chain is kept.
func redactURL(err error, u *url.URL) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	c := *ue
	c.URL = u.Scheme + "://" + u.Host
	return &c
}

// validMsgID reports whether id can be a webhook-id header value.
func validMsgID(id string) bool {
	if id == "" || len(id) > 256 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}
