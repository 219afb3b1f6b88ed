package callbacks

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// fakeClock is a settable clock for Deliverer.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// maxRand and zeroRand pin full jitter to its upper and lower bound.
func maxRand(n int64) int64 { return n - 1 }
func zeroRand(int64) int64  { return 0 }

// recorded is one request a receiver saw.
type recorded struct {
	header http.Header
	body   []byte
}

// receiver is an httptest server that records requests and answers with
// handler (200 when nil).
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

func newReceiver(t *testing.T, handler http.HandlerFunc) *receiver {
	t.Helper()
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, recorded{header: r.Header.Clone(), body: body})
		rc.mu.Unlock()
		if handler != nil {
			handler(w, r)
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recorded(nil), rc.reqs...)
}

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

var testSecrets = []string{
	vectorSecret,
	"whsec_" + base64.StdEncoding.EncodeToString([]byte("the-new-secret-after-rotation-32")),
}

// newTestDeliverer returns a Deliverer whose client may reach loopback
// (httptest), with the given options overriding the test defaults.
func newTestDeliverer(t *testing.T, o DelivererOptions) *Deliverer {
	t.Helper()
	if o.Client == nil {
		o.Client = newTestClient(t, ClientOptions{AllowPrivate: true}, nil)
	}
	if o.Signer == nil {
		s, err := NewSigner(testSecrets...)
		if err != nil {
			t.Fatalf("NewSigner: %v", err)
		}
		o.Signer = s
	}
	return NewDeliverer(o)
}

func TestAttemptDelivered(t *testing.T) {
	for _, code := range []int{http.StatusOK, http.StatusCreated, http.StatusAccepted, http.StatusNoContent} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, status(code))
			d := newTestDeliverer(t, DelivererOptions{}) // real clock, for the reference verifier
			body := []byte(`{"id":"job_abc","status":"succeeded"}`)
			res := d.Attempt(context.Background(), Callback{URL: rc.URL + "/hook", MsgID: "job_abc", Body: body, Attempt: 1})
			if res.Outcome != OutcomeDelivered || res.Status != code || res.Err != nil || !res.NextAttemptAt.IsZero() {
				t.Fatalf("Attempt = %+v; want delivered, status %d, no error, no next attempt", res, code)
			}
			reqs := rc.requests()
			if len(reqs) != 1 {
				t.Fatalf("receiver saw %d requests; want 1", len(reqs))
			}
			h, got := reqs[0].header, reqs[0].body
			for name, want := range map[string]string{
				"Content-Type": "application/json",
				"User-Agent":   UserAgent,
				"Webhook-Id":   "job_abc",
			} {
				if v := h.Get(name); v != want {
					t.Errorf("header %s = %q; want %q", name, v, want)
				}
			}
			if !bytes.Equal(got, body) {
				t.Errorf("body = %q; want %q", got, body)
			}
			if n := len(strings.Fields(h.Get("Webhook-Signature"))); n != len(testSecrets) {
				t.Errorf("webhook-signature has %d entries; want %d", n, len(testSecrets))
			}
			for i, sec := range testSecrets {
				if err := Verify(sec, h.Get("Webhook-Id"), h.Get("Webhook-Timestamp"), h.Get("Webhook-Signature"), got, time.Now(), 0); err != nil {
					t.Errorf("Verify with secret %d: %v", i+1, err)
				}
				wh, err := standardwebhooks.NewWebhook(sec)
				if err != nil {
					t.Fatalf("NewWebhook: %v", err)
				}
				if err := wh.Verify(got, h); err != nil {
					t.Errorf("reference Verify with secret %d: %v", i+1, err)
				}
			}
		})
	}
}

func TestAttemptOutcomes(t *testing.T) {
	tests := []struct {
		name        string
		handler     http.HandlerFunc
		attempt     int
		maxAttempts int
		wantOutcome string
		wantStatus  int
	}{
		{name: "2xx delivered", handler: status(200), attempt: 1, wantOutcome: OutcomeDelivered, wantStatus: 200},
		{name: "2xx on last attempt delivered", handler: status(200), attempt: 3, maxAttempts: 3, wantOutcome: OutcomeDelivered, wantStatus: 200},
		{name: "410 gone", handler: status(410), attempt: 1, wantOutcome: OutcomeGone, wantStatus: 410},
		{name: "410 on last attempt gone", handler: status(410), attempt: 3, maxAttempts: 3, wantOutcome: OutcomeGone, wantStatus: 410},
		{name: "503 retry", handler: status(503), attempt: 1, wantOutcome: OutcomeRetry, wantStatus: 503},
		{name: "500 retry", handler: status(500), attempt: 2, wantOutcome: OutcomeRetry, wantStatus: 500},
		{name: "400 retry", handler: status(400), attempt: 1, wantOutcome: OutcomeRetry, wantStatus: 400},
		{name: "404 retry", handler: status(404), attempt: 1, wantOutcome: OutcomeRetry, wantStatus: 404},
		{name: "429 retry", handler: status(429), attempt: 1, wantOutcome: OutcomeRetry, wantStatus: 429},
		{name: "304 retry", handler: status(304), attempt: 1, wantOutcome: OutcomeRetry, wantStatus: 304},
		{name: "503 on last attempt failed", handler: status(503), attempt: 3, maxAttempts: 3, wantOutcome: OutcomeFailed, wantStatus: 503},
		{name: "attempt past max failed", handler: status(503), attempt: 4, maxAttempts: 3, wantOutcome: OutcomeFailed, wantStatus: 503},
		{name: "attempt 0 counts as 1", handler: status(503), attempt: 0, maxAttempts: 2, wantOutcome: OutcomeRetry, wantStatus: 503},
		{name: "single attempt allowed", handler: status(500), attempt: 1, maxAttempts: 1, wantOutcome: OutcomeFailed, wantStatus: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, tt.handler)
			clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			d := newTestDeliverer(t, DelivererOptions{MaxAttempts: tt.maxAttempts, Now: clock.Now})
			res := d.Attempt(context.Background(), Callback{URL: rc.URL, MsgID: "job_1", Body: []byte(`{}`), Attempt: tt.attempt})
			if res.Outcome != tt.wantOutcome || res.Status != tt.wantStatus {
				t.Fatalf("Attempt = %+v; want outcome %q status %d", res, tt.wantOutcome, tt.wantStatus)
			}
			if (res.Err == nil) != (tt.wantOutcome == OutcomeDelivered) {
				t.Errorf("Attempt error = %v; want an error unless delivered", res.Err)
			}
			if (tt.wantOutcome == OutcomeRetry) == res.NextAttemptAt.IsZero() {
				t.Errorf("NextAttemptAt = %v; want set only for retry", res.NextAttemptAt)
			}
		})
	}
}

func TestAttemptRedirectNotFollowed(t *testing.T) {
	target := newReceiver(t, nil)
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL+"/internal", code)
			})
			d := newTestDeliverer(t, DelivererOptions{})
			res := d.Attempt(context.Background(), Callback{URL: rc.URL, MsgID: "job_1", Body: []byte(`{}`), Attempt: 1})
			if res.Outcome != OutcomeRetry || res.Status != code {
				t.Errorf("Attempt = %+v; want retry with status %d", res, code)
			}
			if n := len(target.requests()); n != 0 {
				t.Errorf("redirect target saw %d requests; want 0", n)
			}
		})
	}
}

// TestAttemptBackoff: a 503 receiver, attempt by attempt, with the jitter
// pinned to its bounds and free.
func TestAttemptBackoff(t *testing.T) {
	const (
		base     = time.Second
		maxDelay = 10 * time.Minute
		attempts = 15
	)
	ceiling := func(attempt int) time.Duration {
		return min(maxDelay, base*time.Duration(1<<(attempt-1)))
	}
	tests := []struct {
		name string
		rand func(int64) int64
		want func(attempt int) (lo, hi time.Duration)
	}{
		{name: "upper bound", rand: maxRand, want: func(a int) (time.Duration, time.Duration) { return ceiling(a), ceiling(a) }},
		{name: "lower bound", rand: zeroRand, want: func(int) (time.Duration, time.Duration) { return 0, 0 }},
		{name: "random within bounds", rand: nil, want: func(a int) (time.Duration, time.Duration) { return 0, ceiling(a) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, status(503))
			clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			d := newTestDeliverer(t, DelivererOptions{MaxAttempts: attempts, BaseBackoff: base, MaxBackoff: maxDelay, Now: clock.Now, Rand: tt.rand})
			for attempt := 1; attempt <= attempts; attempt++ {
				res := d.Attempt(context.Background(), Callback{URL: rc.URL, MsgID: "job_1", Body: []byte(`{}`), Attempt: attempt})
				if attempt == attempts {
					if res.Outcome != OutcomeFailed || !res.NextAttemptAt.IsZero() {
						t.Errorf("attempt %d = %+v; want failed with no next attempt", attempt, res)
					}
					break
				}
				lo, hi := tt.want(attempt)
				delay := res.NextAttemptAt.Sub(clock.Now())
				if res.Outcome != OutcomeRetry || delay < lo || delay > hi {
					t.Errorf("attempt %d = %s after %v; want retry in [%v, %v]", attempt, res.Outcome, delay, lo, hi)
				}
				clock.Advance(delay)
			}
		})
	}
}

func TestBackoffNoOverflow(t *testing.T) {
	tests := []struct {
		name string
		base time.Duration
		cap  time.Duration
	}{
		{name: "defaults", base: DefaultBaseBackoff, cap: DefaultMaxBackoff},
		{name: "huge cap", base: time.Hour, cap: time.Duration(1<<63 - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDeliverer(DelivererOptions{Client: &http.Client{}, BaseBackoff: tt.base, MaxBackoff: tt.cap, Rand: maxRand})
			prev := time.Duration(0)
			for attempt := 1; attempt <= 200; attempt++ {
				got := d.backoff(attempt)
				if got < prev || got > tt.cap {
					t.Fatalf("backoff(%d) = %v; want non-decreasing and <= %v (previous %v)", attempt, got, tt.cap, prev)
				}
				prev = got
			}
			if prev != tt.cap && tt.cap < time.Duration(1<<63-1) {
				t.Errorf("backoff(200) = %v; want the cap %v", prev, tt.cap)
			}
		})
	}
}

func TestAttemptRetryAfter(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name       string
		code       int
		retryAfter string
		want       time.Duration
	}{
		{name: "429 seconds", code: 429, retryAfter: "120", want: 120 * time.Second},
		{name: "503 seconds", code: 503, retryAfter: "30", want: 30 * time.Second},
		{name: "503 http date", code: 503, retryAfter: start.Add(300 * time.Second).UTC().Format(http.TimeFormat), want: 300 * time.Second},
		{name: "capped at max backoff", code: 429, retryAfter: "86400", want: time.Hour},
		{name: "invalid ignored", code: 429, retryAfter: "soon", want: 0},
		{name: "negative ignored", code: 429, retryAfter: "-5", want: 0},
		{name: "past date ignored", code: 503, retryAfter: start.Add(-time.Minute).UTC().Format(http.TimeFormat), want: 0},
		{name: "other status ignores it", code: 500, retryAfter: "120", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", tt.retryAfter)
				w.WriteHeader(tt.code)
			})
			clock := &fakeClock{t: start}
			d := newTestDeliverer(t, DelivererOptions{MaxBackoff: time.Hour, Now: clock.Now, Rand: zeroRand})
			res := d.Attempt(context.Background(), Callback{URL: rc.URL, MsgID: "job_1", Body: []byte(`{}`), Attempt: 1})
			if got := res.NextAttemptAt.Sub(start); res.Outcome != OutcomeRetry || got != tt.want {
				t.Errorf("Attempt = %s in %v; want retry in %v", res.Outcome, got, tt.want)
			}
		})
	}
}

func TestAttemptNetworkFailures(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	release := make(chan struct{})
	hang := newReceiver(t, func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before hang.Close

	tests := []struct {
		name    string
		url     string
		timeout time.Duration
		check   func(error) bool
	}{
		{name: "connection refused", url: closedURL + "/hook?token=s3cr3t", check: func(err error) bool { return err != nil }},
		{name: "timeout", url: hang.URL + "/hook?token=s3cr3t", timeout: 50 * time.Millisecond, check: func(err error) bool {
			var te interface{ Timeout() bool }
			return errors.As(err, &te) && te.Timeout()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := newTestClient(t, ClientOptions{AllowPrivate: true, Timeout: tt.timeout}, nil)
			d := newTestDeliverer(t, DelivererOptions{Client: client, MaxAttempts: 2})
			for i, want := range []string{OutcomeRetry, OutcomeFailed} {
				attempt := i + 1
				res := d.Attempt(context.Background(), Callback{URL: tt.url, MsgID: "job_1", Body: []byte(`{}`), Attempt: attempt})
				if res.Outcome != want || res.Status != 0 || !tt.check(res.Err) {
					t.Errorf("attempt %d = %+v; want %s, status 0 and a matching error", attempt, res, want)
				}
				if res.Err != nil && strings.Contains(res.Err.Error(), "s3cr3t") {
					t.Errorf("attempt %d error %q shows the URL's query", attempt, res.Err)
				}
			}
		})
	}
}

func TestAttemptRefused(t *testing.T) {
	rc := newReceiver(t, nil)
	tests := []struct {
		name   string
		client ClientOptions
		cb     Callback
		want   error
	}{
		{name: "loopback refused at dial time", cb: Callback{URL: rc.URL, MsgID: "job_1"}, want: ErrForbiddenAddress},
		{name: "non-http scheme", client: ClientOptions{AllowPrivate: true}, cb: Callback{URL: "ftp://" + rc.Listener.Addr().String(), MsgID: "job_1"}},
		{name: "userinfo", client: ClientOptions{AllowPrivate: true}, cb: Callback{URL: strings.Replace(rc.URL, "://", "://u:p@", 1), MsgID: "job_1"}, want: ErrBadURL},
		{name: "empty msg id", client: ClientOptions{AllowPrivate: true}, cb: Callback{URL: rc.URL}},
		{name: "msg id with newline", client: ClientOptions{AllowPrivate: true}, cb: Callback{URL: rc.URL, MsgID: "job_1\r\nX-Injected: 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDeliverer(t, DelivererOptions{Client: newTestClient(t, tt.client, nil)})
			tt.cb.Attempt = 1
			res := d.Attempt(context.Background(), tt.cb)
			if res.Outcome != OutcomeFailed || res.Err == nil || tt.want != nil && !errors.Is(res.Err, tt.want) {
				t.Errorf("Attempt(%q) = %+v; want failed wrapping %v", tt.cb.URL, res, tt.want)
			}
		})
	}
	if n := len(rc.requests()); n != 0 {
		t.Errorf("receiver saw %d requests; want 0", n)
	}
}

// countingBody counts the bytes read from a response body.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

type countingTransport struct {
	base http.RoundTripper
	n    *atomic.Int64
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil {
		resp.Body = countingBody{ReadCloser: resp.Body, n: t.n}
	}
	return resp, err
}

func TestAttemptResponseBodyLimit(t *testing.T) {
	tests := []struct {
		name string
		size int
		want int64
	}{
		{name: "small body read whole", size: 1000, want: 1000},
		{name: "exactly the limit", size: MaxResponseBytes, want: MaxResponseBytes},
		{name: "large body cut at the limit", size: 4 << 20, want: MaxResponseBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write(bytes.Repeat([]byte("x"), tt.size))
			})
			var read atomic.Int64
			client := newTestClient(t, ClientOptions{AllowPrivate: true}, nil)
			client.Transport = countingTransport{base: client.Transport, n: &read}
			d := newTestDeliverer(t, DelivererOptions{Client: client})
			res := d.Attempt(context.Background(), Callback{URL: rc.URL, MsgID: "job_1", Body: []byte(`{}`), Attempt: 1})
			if res.Outcome != OutcomeDelivered {
				t.Fatalf("Attempt = %+v; want delivered", res)
			}
			if got := read.Load(); got != tt.want {
				t.Errorf("read %d bytes of a %d-byte body; want %d", got, tt.size, tt.want)
			}
		})
	}
}

// TestAttemptStableAcrossRetries: every attempt carries the same
// webhook-id and body and a fresh timestamp (reliability.md W3).
func TestAttemptStableAcrossRetries(t *testing.T) {
	rc := newReceiver(t, status(503))
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	d := newTestDeliverer(t, DelivererOptions{Now: clock.Now})
	body := []byte(`{"id":"job_7","status":"failed"}`)
	for attempt := 1; attempt <= 3; attempt++ {
		d.Attempt(context.Background(), Callback{URL: rc.URL, MsgID: "job_7", Body: body, Attempt: attempt})
		clock.Advance(90 * time.Second)
	}
	reqs := rc.requests()
	if len(reqs) != 3 {
		t.Fatalf("receiver saw %d requests; want 3", len(reqs))
	}
	for i, r := range reqs {
		t.Run(fmt.Sprintf("attempt %d", i+1), func(t *testing.T) {
			wantTS := strconv.FormatInt(1_700_000_000+int64(i)*90, 10)
			if id, ts := r.header.Get("Webhook-Id"), r.header.Get("Webhook-Timestamp"); id != "job_7" || ts != wantTS {
				t.Errorf("webhook-id, webhook-timestamp = %q, %q; want %q, %q", id, ts, "job_7", wantTS)
			}
			if !bytes.Equal(r.body, body) {
				t.Errorf("body = %q; want %q", r.body, body)
			}
			now := time.Unix(1_700_000_000+int64(i)*90, 0)
			if err := Verify(testSecrets[0], "job_7", wantTS, r.header.Get("Webhook-Signature"), r.body, now, 0); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

// TestAttemptUnsigned: without a Signer nothing is sent, and the attempt
// fails for good rather than going out unsigned.
func TestAttemptUnsigned(t *testing.T) {
	rc := newReceiver(t, nil)
	d := NewDeliverer(DelivererOptions{Client: NewClient(ClientOptions{AllowPrivate: true})})
	t.Cleanup(d.CloseIdleConnections)
	res := d.Attempt(context.Background(), Callback{URL: rc.URL, MsgID: "job_1", Body: []byte(`{}`), Attempt: 1})
	if res.Outcome != OutcomeFailed || !errors.Is(res.Err, ErrUnsigned) {
		t.Fatalf("Attempt without a Signer = %+v; want failed with ErrUnsigned", res)
	}
	if n := len(rc.requests()); n != 0 {
		t.Errorf("receiver got %d requests; want none", n)
	}
}
