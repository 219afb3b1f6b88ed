package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/relaygw/relay/workers/translate"
	"github.com/relaygw/relay/workers/wire"
	"github.com/tidwall/gjson"
)

// maxResponseBytes bounds a non-streaming upstream response body.
const maxResponseBytes = 64 << 20

// defaultMaxAttempts bounds the upstream calls made for one request.
const defaultMaxAttempts = 3

// Request is one client request as the gateway hands it over.
type Request struct {
	// Format is the client's API format.
	Format Format
	// Body is the client's body, unchanged. It must not be modified until
	// Do returns (and, for streams, until the stream is closed).
	Body []byte
	// Fields are the body's routing fields, from wire.Peek(Body).
	Fields wire.Fields
	// Header holds client headers to forward upstream: no credentials, no
	// hop-by-hop headers, no Accept-Encoding.
	Header http.Header
}

// Response is an upstream answer in the client's format. Exactly one of
// Body and Stream is set. A Response with a Stream must be closed.
type Response struct {
	// StatusCode is the status to send the client.
	StatusCode int
	// Header holds upstream headers worth passing on (Content-Type,
	// Request-Id, ...).
	Header http.Header
	// Body is the whole body of a non-streaming answer.
	Body []byte
	// Stream yields the events of a streaming answer.
	Stream *Stream
	// Provider names the provider that answered.
	Provider string
	// UpstreamModel is the model name sent upstream.
	UpstreamModel string
	// Attempts counts the upstream calls made, this one included.
	Attempts int
	// Usage is the token usage of a non-streaming answer; for streams see
	// Stream.Usage.
	Usage wire.Usage
}

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
	// FailProviderAuth is the upstream refusing the provider's own key.
	FailProviderAuth
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
}

// Error summarises the failures without any key or upstream body.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("no upstream could serve the request")
	for i, f := range e.Failures {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", f.Provider, f.Err)
	}
	return b.String()
}

// RetryAfter is the shortest upstream retry-after hint, or 0 when none gave one.
func (e *Error) RetryAfter() time.Duration {
	var d time.Duration
	for _, f := range e.Failures {
		if f.RetryAfter > 0 && (d == 0 || f.RetryAfter < d) {
			d = f.RetryAfter
		}
	}
	return d
}

// Transient reports whether waiting could help: false when every failure
// was a broken answer or a refused provider key, which need an operator.
func (e *Error) Transient() bool {
	for _, f := range e.Failures {
		if f.Kind != FailGarbage && f.Kind != FailProviderAuth {
			return true
		}
	}
	return len(e.Failures) == 0
}

// ErrUnknownModel is returned by Do for a model no route serves.
var ErrUnknownModel = errors.New("unknown model")

// RouterOptions configure a Router.
type RouterOptions struct {
	// Routes are the routes to serve.
	Routes []RouteSpec
	// MaxAttempts bounds upstream calls per request (default 3).
	MaxAttempts int
	// Metrics records upstream calls; nil records nothing.
	Metrics *Metrics
	// Logger logs failed attempts; nil discards.
	Logger *slog.Logger
}

// Router serves requests from its routes' targets. It is safe for
// concurrent use and immutable apart from its round-robin state: a new
// configuration means a new Router.
type Router struct {
	routes      map[string]*route
	models      []string
	maxAttempts int
	metrics     *Metrics
	log         *slog.Logger
}

// NewRouter returns a Router for opts.
func NewRouter(opts RouterOptions) (*Router, error) {
	routes, err := buildRoutes(opts.Routes)
	if err != nil {
		return nil, err
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = defaultMaxAttempts
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Router{
		routes:      routes,
		models:      models(routes),
		maxAttempts: opts.MaxAttempts,
		metrics:     opts.Metrics,
		log:         log,
	}, nil
}

// Has reports whether a route serves model.
func (r *Router) Has(model string) bool {
	_, ok := r.routes[model]
	return ok
}

// Models returns the public model names served, sorted.
func (r *Router) Models() []string { return append([]string(nil), r.models...) }

// Do serves req: it picks a target of the request's route, and while
// attempts fail before any answer has been accepted it moves to another
// target of the route, then to the fallback routes, up to MaxAttempts calls.
// An upstream 4xx caused by the request is an answer, not a failure: it
// comes back as a Response with that status. Do returns *Error when nothing
// could serve, ErrUnknownModel for an unknown model, and the context's
// error when the caller went away.
func (r *Router) Do(ctx context.Context, req *Request) (*Response, error) {
	rt, ok := r.routes[req.Fields.Model]
	if !ok {
		return nil, ErrUnknownModel
	}
	var (
		failures []Failure
		tried    []*target
		attempts int
	)
	skip := func(t *target) bool {
		for _, x := range tried {
			if x == t {
				return true
			}
		}
		return false
	}
	for _, cand := range rt.chain {
		for attempts < r.maxAttempts {
			t := cand.pick(skip)
			if t == nil {
				break
			}
			tried = append(tried, t)
			attempts++
			resp, fail := r.attempt(ctx, req, t)
			if fail == nil {
				resp.Attempts = attempts
				return resp, nil
			}
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("client gone: %w", err)
			}
			r.log.LogAttrs(ctx, slog.LevelWarn, "upstream attempt failed",
				slog.String("provider", fail.Provider), slog.String("kind", fail.Kind.String()),
				slog.Int("status", fail.Status), slog.String("error", fail.Err.Error()))
			failures = append(failures, *fail)
		}
	}
	return nil, &Error{Failures: failures}
}

// attempt makes one upstream call to t. It returns a Response for any
// answer the client should see, or a Failure worth trying elsewhere.
func (r *Router) attempt(ctx context.Context, req *Request, t *target) (*Response, *Failure) {
	body, err := r.upstreamBody(req, t)
	if err != nil {
		// The client's body could not be expressed in the target's format.
		return nil, &Failure{Provider: t.ProviderName, Kind: FailGarbage, Err: err}
	}
	callCtx, cancel := context.WithTimeout(ctx, t.Timeout)
	start := time.Now()
	resp, err := t.Provider.Call(callCtx, &Call{Body: body, Stream: req.Fields.Stream, Header: req.Header})
	if err != nil {
		cancel()
		return nil, r.callFailure(ctx, callCtx, t, start, err)
	}
	status := resp.StatusCode
	switch {
	case status >= 200 && status < 300:
		if req.Fields.Stream {
			return r.streamAnswer(req, t, resp, cancel, start)
		}
		defer cancel()
		return r.bodyAnswer(ctx, callCtx, req, t, resp, start)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		drain(resp)
		cancel()
		r.metrics.attempt(t.ProviderName, "provider_auth", time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailProviderAuth, Status: status,
			Err: fmt.Errorf("upstream refused the provider's key (status %d)", status)}
	case retryableStatus(status):
		ra := retryAfter(resp.Header)
		drain(resp)
		cancel()
		r.metrics.attempt(t.ProviderName, strconv.Itoa(status), time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailStatus, Status: status, RetryAfter: ra,
			Err: fmt.Errorf("upstream status %d", status)}
	default:
		defer cancel()
		return r.clientErrorAnswer(ctx, callCtx, req, t, resp, start)
	}
}

// upstreamBody expresses the client's body in t's format with t's model.
func (r *Router) upstreamBody(req *Request, t *target) ([]byte, error) {
	switch {
	case t.Format == req.Format:
		return wire.RewriteModel(nil, req.Body, req.Fields, t.Model), nil
	case req.Format == FormatAnthropic:
		return translate.AnthropicToOpenAIRequest(req.Body, t.Model)
	default:
		return translate.OpenAIToAnthropicRequest(req.Body, t.Model)
	}
}

func (r *Router) callFailure(ctx, callCtx context.Context, t *target, start time.Time, err error) *Failure {
	f := &Failure{Provider: t.ProviderName, Kind: FailUnreachable, Err: err}
	outcome := "unreachable"
	if ctx.Err() == nil && errors.Is(callCtx.Err(), context.DeadlineExceeded) {
		f.Kind = FailTimeout
		f.Err = fmt.Errorf("upstream timed out after %s", t.Timeout)
		outcome = "timeout"
	}
	r.metrics.attempt(t.ProviderName, outcome, time.Since(start))
	return f
}

// bodyAnswer reads a 2xx non-streaming answer and checks it is JSON.
func (r *Router) bodyAnswer(ctx, callCtx context.Context, req *Request, t *target, resp *http.Response, start time.Time) (*Response, *Failure) {
	data, err := readBody(resp)
	if err != nil {
		f := r.callFailure(ctx, callCtx, t, start, fmt.Errorf("read upstream body: %w", err))
		return nil, f
	}
	if !gjson.ValidBytes(data) || !gjson.ParseBytes(data).IsObject() {
		r.metrics.attempt(t.ProviderName, "garbage", time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailGarbage, Status: resp.StatusCode,
			Err: errors.New("upstream answered with a body that is not a JSON object")}
	}
	var usage wire.Usage
	if t.Format == FormatAnthropic {
		usage = wire.AnthropicUsage(data)
	} else {
		usage = wire.OpenAIUsage(data)
	}
	if t.Format != req.Format {
		if req.Format == FormatAnthropic {
			data, err = translate.OpenAIToAnthropicResponse(data)
		} else {
			data, err = translate.AnthropicToOpenAIResponse(data)
		}
		if err != nil {
			r.metrics.attempt(t.ProviderName, "garbage", time.Since(start))
			return nil, &Failure{Provider: t.ProviderName, Kind: FailGarbage, Status: resp.StatusCode,
				Err: fmt.Errorf("translate upstream answer: %w", err)}
		}
	}
	r.metrics.attempt(t.ProviderName, strconv.Itoa(resp.StatusCode), time.Since(start))
	r.metrics.tokens(t.ProviderName, usage)
	return &Response{
		StatusCode:    resp.StatusCode,
		Header:        passHeaders(resp.Header, t.Format == req.Format),
		Body:          data,
		Provider:      t.ProviderName,
		UpstreamModel: t.Model,
		Usage:         usage,
	}, nil
}

// clientErrorAnswer passes an upstream 4xx caused by the request on to the
// client, in the client's format.
func (r *Router) clientErrorAnswer(ctx, callCtx context.Context, req *Request, t *target, resp *http.Response, start time.Time) (*Response, *Failure) {
	data, err := readBody(resp)
	if err != nil {
		return nil, r.callFailure(ctx, callCtx, t, start, fmt.Errorf("read upstream error body: %w", err))
	}
	r.metrics.attempt(t.ProviderName, strconv.Itoa(resp.StatusCode), time.Since(start))
	h := passHeaders(resp.Header, t.Format == req.Format)
	if t.Format != req.Format {
		if req.Format == FormatAnthropic {
			data = translate.OpenAIToAnthropicError(resp.StatusCode, data)
		} else {
			data = translate.AnthropicToOpenAIError(resp.StatusCode, data)
		}
		h.Set("Content-Type", "application/json")
	}
	return &Response{
		StatusCode:    resp.StatusCode,
		Header:        h,
		Body:          data,
		Provider:      t.ProviderName,
		UpstreamModel: t.Model,
	}, nil
}

// streamAnswer accepts a 2xx streaming answer. Nothing has been read from
// the body yet; the Stream owns it and cancel.
func (r *Router) streamAnswer(req *Request, t *target, resp *http.Response, cancel context.CancelFunc, start time.Time) (*Response, *Failure) {
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		drain(resp)
		cancel()
		r.metrics.attempt(t.ProviderName, "garbage", time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailGarbage, Status: resp.StatusCode,
			Err: fmt.Errorf("upstream answered a stream request with content type %q", ct)}
	}
	r.metrics.attempt(t.ProviderName, strconv.Itoa(resp.StatusCode), -1)
	s := newStream(resp.Body, cancel, req.Format, t.Format, req.Fields.IncludeUsage)
	s.onDone = func(u wire.Usage) {
		r.metrics.tokens(t.ProviderName, u)
		r.metrics.upstreamDone(t.ProviderName, time.Since(start))
	}
	h := passHeaders(resp.Header, t.Format == req.Format)
	h.Set("Content-Type", "text/event-stream")
	return &Response{
		StatusCode:    resp.StatusCode,
		Header:        h,
		Stream:        s,
		Provider:      t.ProviderName,
		UpstreamModel: t.Model,
	}, nil
}

// retryableStatus reports whether another target may succeed where an
// upstream answered status.
func retryableStatus(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests ||
		status >= 500
}

// retryAfter reads retry-after-ms or retry-after (seconds or an HTTP date).
func retryAfter(h http.Header) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// passHeaders selects the upstream response headers a client may see.
// Rate-limit headers describe the provider's key, not the client's, so
// they stay behind.
func passHeaders(up http.Header, sameFormat bool) http.Header {
	h := make(http.Header, 3)
	if ct := up.Get("Content-Type"); ct != "" {
		h["Content-Type"] = []string{ct}
	}
	if v := up.Get("Request-Id"); v != "" && sameFormat {
		h["Request-Id"] = []string{v}
	}
	if v := up.Get("X-Request-Id"); v != "" {
		h["X-Upstream-Request-Id"] = []string{v}
	}
	return h
}

// readBody reads a bounded response body and closes it.
func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	n := resp.ContentLength
	if n < 0 || n > maxResponseBytes {
		n = 4096
	}
	buf := make([]byte, 0, n+1)
	lr := io.LimitReader(resp.Body, maxResponseBytes+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if len(buf) > maxResponseBytes {
		return nil, fmt.Errorf("upstream body over %d bytes", maxResponseBytes)
	}
	return buf, nil
}

// drain reads a little of an unwanted body so the connection can be
// reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}
