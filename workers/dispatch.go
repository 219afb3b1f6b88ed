package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/relaygw/relay/workers/actor"
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

// ErrUnknownModel is returned by Do for a model no route serves.
var ErrUnknownModel = errors.New("unknown model")

// ErrInvalidRequest is returned by Do when the client's body cannot be
// expressed in a target's API format (a malformed message list, say); the
// error's text is safe to show the client.
var ErrInvalidRequest = errors.New("invalid request")

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
	// RetryRatio and RetryFloor size the retry budget shared by all
	// requests: retries may add RetryRatio of the request rate, and at
	// least RetryFloor per second (defaults 0.2 and 3).
	RetryRatio, RetryFloor float64
	// Backoff is the base of the full-jitter backoff before calling a
	// target that already failed once more (default 100ms, capped at 2s).
	Backoff time.Duration
	// OnRelease, when set, is called whenever an upstream call ends and
	// its provider's capacity may have freed (the lanes' dispatcher kicks
	// off from it). It must not block.
	OnRelease func()
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
	budget      *retryBudget
	backoff     time.Duration
	onRelease   func()
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
	if opts.RetryRatio <= 0 {
		opts.RetryRatio = defaultRetryRatio
	}
	if opts.RetryFloor <= 0 {
		opts.RetryFloor = defaultRetryFloor
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 100 * time.Millisecond
	}
	return &Router{
		routes:      routes,
		models:      models(routes),
		maxAttempts: opts.MaxAttempts,
		metrics:     opts.Metrics,
		log:         log,
		budget:      newRetryBudget(opts.RetryRatio, opts.RetryFloor, nil),
		backoff:     opts.Backoff,
		onRelease:   opts.OnRelease,
	}, nil
}

// Has reports whether a route serves model.
func (r *Router) Has(model string) bool {
	_, ok := r.routes[model]
	return ok
}

// Models returns the public model names served, sorted.
func (r *Router) Models() []string { return append([]string(nil), r.models...) }

// Do serves req. It picks a target of the request's route by weight among
// those whose provider admits the call (breaker, concurrency, buckets), and
// while calls fail before any answer has been accepted it moves on: first
// to targets not yet tried, then to the fallback routes, and only then,
// after a full-jitter backoff, to a target that already failed with a
// transient error. Calls are bounded by MaxAttempts, by the request's
// context and by a retry budget shared by all requests. An upstream 4xx
// caused by the request is an answer, not a failure: it comes back as a
// Response with that status. Do returns *Error when nothing could serve,
// ErrUnknownModel for an unknown model, and the context's error when the
// caller went away.
//
// A non-nil grant, from Admit, is used for the first call.
func (r *Router) Do(ctx context.Context, req *Request, g *Grant) (*Response, error) {
	rt, ok := r.routes[req.Fields.Model]
	if !ok {
		g.Release()
		return nil, ErrUnknownModel
	}
	r.budget.request()
	d := dispatch{r: r, req: req, inTokens: -1}
	if g != nil {
		if resp, done := d.call(ctx, g.t, g.permit); done {
			return resp, d.err
		}
	}
	for _, cand := range rt.chain {
		for !d.exhausted() {
			t := cand.pick(d.skipTried)
			if t == nil {
				break
			}
			if resp, done := d.try(ctx, t); done {
				return resp, d.err
			}
		}
	}
	// Every target has been tried or refused: go round the failed ones
	// again, after a backoff, while their failures were transient and
	// attempts remain.
	for progressed := true; progressed && !d.exhausted(); {
		progressed = false
		for _, t := range d.tried {
			if f := d.failed[t]; d.exhausted() || f == nil || !retrySame(f) || contains(d.refused, t) {
				continue
			}
			if !d.sleep(ctx) {
				break
			}
			progressed = true
			if resp, done := d.try(ctx, t); done {
				return resp, d.err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("client gone: %w", err)
	}
	return nil, &Error{Failures: d.failures, Refusals: d.refusals, Attempts: d.attempts}
}

// dispatch is the state of one Do call.
type dispatch struct {
	r        *Router
	req      *Request
	inTokens int // estimated input tokens; -1 until needed
	attempts int
	tried    []*target
	failed   map[*target]*Failure
	refused  []*target
	failures []Failure
	refusals []*actor.Refusal
	noBudget bool
	err      error
}

func (d *dispatch) exhausted() bool { return d.attempts >= d.r.maxAttempts || d.noBudget }

// skipTried skips targets already called or refused in this request.
func (d *dispatch) skipTried(t *target) bool {
	for _, x := range d.tried {
		if x == t {
			return true
		}
	}
	for _, x := range d.refused {
		if x == t {
			return true
		}
	}
	return false
}

// admit asks t's provider for capacity. It returns false, recording the
// refusal, when there is none.
func (d *dispatch) admit(t *target) (*actor.Permit, bool) {
	if t.Actor == nil {
		return nil, true
	}
	in := 0
	if t.EstimateInput {
		if d.inTokens < 0 {
			d.inTokens = wire.EstimateInputTokens(d.req.Body)
		}
		in = d.inTokens
	}
	p, err := t.Actor.Admit(in, d.req.Fields.MaxTokens)
	if err != nil {
		var ref *actor.Refusal
		if errors.As(err, &ref) {
			d.refusals = append(d.refusals, ref)
		}
		d.refused = append(d.refused, t)
		d.r.metrics.refusal(t.ProviderName, refusalReason(err))
		return nil, false
	}
	return p, true
}

// try asks t's provider for admission and calls it. done reports that the
// request is answered (resp) or must end (d.err).
func (d *dispatch) try(ctx context.Context, t *target) (resp *Response, done bool) {
	permit, ok := d.admit(t)
	if !ok {
		return nil, false
	}
	return d.call(ctx, t, permit)
}

// call makes one upstream call to t under permit, within the budget.
func (d *dispatch) call(ctx context.Context, t *target, permit *actor.Permit) (resp *Response, done bool) {
	if d.attempts > 0 && !d.r.budget.allow() {
		d.r.finish(permit, actor.Outcome{Kind: actor.Canceled})
		d.noBudget = true
		d.r.metrics.budgetExhausted()
		return nil, false
	}
	d.attempts++
	if !contains(d.tried, t) {
		d.tried = append(d.tried, t)
	}
	resp, fail := d.r.attempt(ctx, d.req, t, permit)
	if fail == nil {
		resp.Attempts = d.attempts
		return resp, true
	}
	if err := ctx.Err(); err != nil {
		d.err = fmt.Errorf("client gone: %w", err)
		return nil, true
	}
	if fail.Kind == FailInvalidRequest {
		d.err = fmt.Errorf("%w: %v", ErrInvalidRequest, fail.Err)
		return nil, true
	}
	d.r.log.LogAttrs(ctx, slog.LevelWarn, "upstream attempt failed",
		slog.String("provider", fail.Provider), slog.String("kind", fail.Kind.String()),
		slog.Int("status", fail.Status), slog.String("error", fail.Err.Error()))
	if d.failed == nil {
		d.failed = make(map[*target]*Failure, 2)
	}
	d.failed[t] = fail
	d.failures = append(d.failures, *fail)
	return nil, false
}

// sleep waits a full-jitter backoff before calling a failed target again,
// reporting false when the context ends or its deadline would pass first.
func (d *dispatch) sleep(ctx context.Context) bool {
	ceiling := min(d.r.backoff<<min(d.attempts, 5), 2*time.Second)
	wait := time.Duration(rand.Int64N(int64(ceiling) + 1))
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		return false
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// retrySame reports whether a target that failed with f may succeed when
// called again soon: after a connection error, a timeout or a 5xx/529
// without a retry-after hint; not after a 429 or a hint (the provider
// asked for time), a refused key or a broken answer.
func retrySame(f *Failure) bool {
	switch f.Kind {
	case FailUnreachable, FailTimeout:
		return true
	case FailStatus:
		return f.Status != http.StatusTooManyRequests && f.RetryAfter == 0
	}
	return false
}

func contains(ts []*target, t *target) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

func refusalReason(err error) string {
	var ref *actor.Refusal
	if errors.As(err, &ref) {
		return string(ref.Reason)
	}
	return "unknown"
}

// finish reports a call's outcome to its permit, if any, and tells
// whoever waits for capacity that some may have freed.
func (r *Router) finish(p *actor.Permit, o actor.Outcome) {
	if p == nil {
		return
	}
	p.Done(o)
	if r.onRelease != nil {
		r.onRelease()
	}
}

// Grant is capacity Admit took for a request: a target and its provider's
// permit. Pass it to Do, or Release it.
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
	rt, ok := r.routes[req.Fields.Model]
	if !ok {
		return nil, ErrUnknownModel
	}
	d := dispatch{r: r, req: req, inTokens: -1}
	for _, cand := range rt.chain {
		for {
			t := cand.pick(d.skipTried)
			if t == nil {
				break
			}
			if p, ok := d.admit(t); ok {
				return &Grant{r: r, t: t, permit: p}, nil
			}
		}
	}
	return nil, &Error{Refusals: d.refusals}
}

// Admitter is what AdmitFunc needs of a Router.
type Admitter interface {
	Admit(req *Request) (*Grant, error)
}

// AdmitFunc adapts a's admission of req to the lanes' AdmitFunc: the
// grant, or the earliest time a refusing provider named.
func AdmitFunc(a Admitter, req *Request) func() (any, time.Time, bool) {
	return func() (any, time.Time, bool) {
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

// ReleaseGrant releases a *Grant held as an any (the lanes' Release).
func ReleaseGrant(g any) {
	if gr, ok := g.(*Grant); ok {
		gr.Release()
	}
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

// attempt makes one upstream call to t under permit (nil when the target
// has no admission control). It returns a Response for any answer the
// client should see, or a Failure worth trying elsewhere; either way the
// permit learns the outcome (a Stream reports it when it ends).
func (r *Router) attempt(ctx context.Context, req *Request, t *target, permit *actor.Permit) (*Response, *Failure) {
	body, err := r.upstreamBody(req, t)
	if err != nil {
		// The client's body could not be expressed in the target's format.
		r.finish(permit, actor.Outcome{Kind: actor.Canceled})
		return nil, &Failure{Provider: t.ProviderName, Kind: FailInvalidRequest, Err: err}
	}
	callCtx, cancel := context.WithTimeout(ctx, t.Timeout)
	start := time.Now()
	resp, err := t.Provider.Call(callCtx, &Call{Body: body, Stream: req.Fields.Stream, Header: req.Header})
	if err != nil {
		cancel()
		return nil, r.callFailure(ctx, callCtx, t, permit, start, err)
	}
	status := resp.StatusCode
	switch {
	case status >= 200 && status < 300:
		if req.Fields.Stream {
			return r.streamAnswer(ctx, req, t, permit, resp, cancel, start)
		}
		defer cancel()
		return r.bodyAnswer(ctx, callCtx, req, t, permit, resp, start)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		drain(resp)
		cancel()
		r.finish(permit, actor.Outcome{Kind: actor.ProviderAuth, Header: resp.Header})
		r.metrics.attempt(t.ProviderName, "provider_auth", time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailProviderAuth, Status: status,
			Err: fmt.Errorf("upstream refused the provider's key (status %d)", status)}
	case retryableStatus(status):
		ra := retryAfter(resp.Header)
		drain(resp)
		cancel()
		r.finish(permit, actor.Outcome{Kind: statusOutcome(status), RetryAfter: ra, Header: resp.Header})
		r.metrics.attempt(t.ProviderName, strconv.Itoa(status), time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailStatus, Status: status, RetryAfter: ra,
			Err: fmt.Errorf("upstream status %d", status)}
	default:
		defer cancel()
		return r.clientErrorAnswer(ctx, callCtx, req, t, permit, resp, start)
	}
}

// statusOutcome classifies a retryable upstream status for the actor.
func statusOutcome(status int) actor.OutcomeKind {
	switch status {
	case http.StatusTooManyRequests:
		return actor.RateLimited
	case 529:
		return actor.Overloaded
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return actor.Timeout
	}
	return actor.ServerError
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

func (r *Router) callFailure(ctx, callCtx context.Context, t *target, permit *actor.Permit, start time.Time, err error) *Failure {
	f := &Failure{Provider: t.ProviderName, Kind: FailUnreachable, Err: err}
	outcome, kind := "unreachable", actor.ConnError
	switch {
	case ctx.Err() != nil:
		outcome, kind = "canceled", actor.Canceled
	case errors.Is(callCtx.Err(), context.DeadlineExceeded):
		f.Kind = FailTimeout
		f.Err = fmt.Errorf("upstream timed out after %s", t.Timeout)
		outcome, kind = "timeout", actor.Timeout
	}
	r.finish(permit, actor.Outcome{Kind: kind})
	r.metrics.attempt(t.ProviderName, outcome, time.Since(start))
	return f
}

// bodyAnswer reads a 2xx non-streaming answer and checks it is JSON.
func (r *Router) bodyAnswer(ctx, callCtx context.Context, req *Request, t *target, permit *actor.Permit, resp *http.Response, start time.Time) (*Response, *Failure) {
	data, err := readBody(resp)
	if err != nil {
		return nil, r.callFailure(ctx, callCtx, t, permit, start, fmt.Errorf("read upstream body: %w", err))
	}
	if !gjson.ValidBytes(data) || !gjson.ParseBytes(data).IsObject() {
		r.finish(permit, actor.Outcome{Kind: actor.ServerError, Header: resp.Header})
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
	r.finish(permit, actor.Outcome{Kind: actor.Success, Header: resp.Header,
		InputTokens: usage.Input, OutputTokens: usage.Output, UsageKnown: usage.Known})
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
func (r *Router) clientErrorAnswer(ctx, callCtx context.Context, req *Request, t *target, permit *actor.Permit, resp *http.Response, start time.Time) (*Response, *Failure) {
	data, err := readBody(resp)
	if err != nil {
		return nil, r.callFailure(ctx, callCtx, t, permit, start, fmt.Errorf("read upstream error body: %w", err))
	}
	r.finish(permit, actor.Outcome{Kind: actor.ClientError, Header: resp.Header})
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
// the body yet; the Stream owns it, cancel and the permit.
func (r *Router) streamAnswer(ctx context.Context, req *Request, t *target, permit *actor.Permit, resp *http.Response, cancel context.CancelFunc, start time.Time) (*Response, *Failure) {
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		drain(resp)
		cancel()
		r.finish(permit, actor.Outcome{Kind: actor.ServerError, Header: resp.Header})
		r.metrics.attempt(t.ProviderName, "garbage", time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailGarbage, Status: resp.StatusCode,
			Err: fmt.Errorf("upstream answered a stream request with content type %q", ct)}
	}
	r.metrics.attempt(t.ProviderName, strconv.Itoa(resp.StatusCode), -1)
	s := newStream(resp.Body, cancel, req.Format, t.Format, req.Fields.IncludeUsage)
	upHeader := resp.Header
	s.onDone = func(u wire.Usage, broken bool) {
		kind := actor.Success
		switch {
		case ctx.Err() != nil:
			kind = actor.Canceled
		case broken:
			kind = actor.ConnError
		}
		r.finish(permit, actor.Outcome{Kind: kind, Header: upHeader,
			InputTokens: u.Input, OutputTokens: u.Output, UsageKnown: u.Known})
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
