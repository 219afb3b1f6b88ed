// This file owns the Router: serving one request from its route's
// targets, retries across targets and fallbacks, and the per-request
// record of tries. Routes and targets themselves are in routes.go.

package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/logctx"
	"github.com/relaygw/relay/workers/wire"
)

// maxResponseBytes bounds a non-streaming upstream response body.
const maxResponseBytes = 64 << 20

// defaultBackoff is RouterOptions.Backoff when it is zero. The backoff is
// not a setting of the configuration (only tests change it), so zero
// cannot mean anything else.
const defaultBackoff = 100 * time.Millisecond

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
	// InputEstimate, when positive, is wire.EstimateInputTokens(Body),
	// already made by the caller (for its key's limits): admission then
	// does not walk the body again.
	InputEstimate int
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

// RouterOptions configure a Router.
type RouterOptions struct {
	// Routes are the routes to serve.
	Routes []RouteSpec
	// MaxAttempts bounds upstream calls per request, at least 1
	// (retry.max_attempts; configs owns its default, like the other
	// settings below).
	MaxAttempts int
	// Metrics records upstream calls; nil records nothing.
	Metrics *Metrics
	// Logger logs failed attempts; nil discards.
	Logger *slog.Logger
	// RetryRatio and RetryFloor size the retry budget shared by all
	// requests: retries may add RetryRatio of the request rate, and at
	// least RetryFloor per second; both must be positive
	// (retry.budget_ratio, retry.budget_floor).
	RetryRatio, RetryFloor float64
	// Backoff is the base of the full-jitter backoff before calling a
	// target that already failed once more (0 means 100ms; capped at 2s).
	Backoff time.Duration
	// OnRelease, when set, is called whenever an upstream call ends and
	// its provider's capacity may have freed (the lanes' dispatcher kicks
	// off from it). It must not block.
	OnRelease func()
	// MaxJSONDepth bounds the nesting of the JSON the router reads:
	// upstream answers and stream events nested deeper are garbage, and
	// the conversions between formats refuse them (max_json_depth; 0
	// means wire.FallbackMaxDepth).
	MaxJSONDepth int
}

// Router serves requests from its routes' targets. It is safe for
// concurrent use and immutable apart from its round-robin state: a new
// configuration means a new Router.
type Router struct {
	routes      *routeTable
	models      []string // the exact routes' names, sorted
	maxAttempts int
	metrics     *Metrics
	log         *slog.Logger
	budget      *retryBudget
	backoff     time.Duration
	onRelease   func()
	maxDepth    int
}

// NewRouter returns a Router for opts.
func NewRouter(opts RouterOptions) (*Router, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	routes, err := buildRoutes(opts.Routes)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = slog.New(logctx.Handler(log.Handler()))
	if opts.Backoff <= 0 {
		opts.Backoff = defaultBackoff
	}
	r := &Router{
		routes:      routes,
		models:      routes.exactModels(),
		maxAttempts: opts.MaxAttempts,
		metrics:     opts.Metrics,
		log:         log,
		budget:      newRetryBudget(opts.RetryRatio, opts.RetryFloor, nil),
		backoff:     opts.Backoff,
		onRelease:   opts.OnRelease,
		maxDepth:    opts.MaxJSONDepth,
	}
	r.metrics.known(r.providerNames())
	return r, nil
}

// check reports a retry setting NewRouter cannot work with. They have no
// defaults here: the configuration's are the only ones.
func (o RouterOptions) check() error {
	switch {
	case o.MaxAttempts < 1:
		return fmt.Errorf("workers: router: max attempts %d, want at least 1", o.MaxAttempts)
	case !(o.RetryRatio > 0):
		return fmt.Errorf("workers: router: retry budget ratio %g, want > 0", o.RetryRatio)
	case !(o.RetryFloor > 0):
		return fmt.Errorf("workers: router: retry budget floor %g, want > 0", o.RetryFloor)
	}
	return nil
}

// Has reports whether a route serves model.
func (r *Router) Has(model string) bool { return r.routes.resolve(model) != nil }

// Route returns the name of the route serving model (its pattern, for a
// pattern route), and whether one does. Metrics, logs and keys' allowed
// routes go by this name, never by the client's model.
func (r *Router) Route(model string) (string, bool) {
	if rt := r.routes.resolve(model); rt != nil {
		return rt.model, true
	}
	return "", false
}

// Models returns the names of the exact routes, sorted; pattern routes
// are listed by ListModels.
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
	rt := r.routes.resolve(req.Fields.Model)
	if rt == nil {
		g.Release()
		return nil, ErrUnknownModel
	}
	r.budget.request()
	tr := tries{r: r, req: req, inTokens: -1}
	if g != nil {
		if resp, done := tr.call(ctx, g.t, g.permit); done {
			return resp, tr.err
		}
	}
	for _, cand := range rt.chain {
		for !tr.exhausted() {
			t := cand.pick(tr.skipTried)
			if t == nil {
				break
			}
			if resp, done := tr.try(ctx, t); done {
				return resp, tr.err
			}
		}
	}
	// Every target has been tried or refused: go round the failed ones
	// again, after a backoff, while their failures were transient and
	// attempts remain.
	for progressed := true; progressed && !tr.exhausted(); {
		progressed = false
		for _, t := range tr.tried {
			if f := tr.failed[t]; tr.exhausted() || f == nil || !retrySame(f) || contains(tr.refused, t) {
				continue
			}
			if !tr.sleep(ctx) {
				break
			}
			progressed = true
			if resp, done := tr.try(ctx, t); done {
				return resp, tr.err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("client gone: %w", err)
	}
	return nil, &Error{Failures: tr.failures, Refusals: tr.refusals, Attempts: tr.attempts}
}

// tries is the record of one request's tries across its route's targets
// (one Do call, or one Admit): what was tried, refused and failed, and
// how many upstream calls were made.
type tries struct {
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

func (tr *tries) exhausted() bool { return tr.attempts >= tr.r.maxAttempts || tr.noBudget }

// skipTried skips targets already called or refused in this request.
func (tr *tries) skipTried(t *target) bool {
	for _, x := range tr.tried {
		if x == t {
			return true
		}
	}
	for _, x := range tr.refused {
		if x == t {
			return true
		}
	}
	return false
}

// admit asks t's provider for capacity. It returns false, recording the
// refusal, when there is none.
func (tr *tries) admit(t *target) (*actor.Permit, bool) {
	if t.Actor == nil {
		return nil, true
	}
	in := 0
	if t.EstimateInput {
		if tr.inTokens < 0 {
			tr.inTokens = tr.req.InputEstimate
			if tr.inTokens <= 0 {
				tr.inTokens = wire.EstimateInputTokens(tr.req.Body)
			}
		}
		in = tr.inTokens
	}
	p, err := t.Actor.Admit(in, tr.req.Fields.MaxTokens)
	if err != nil {
		var ref *actor.Refusal
		if errors.As(err, &ref) {
			tr.refusals = append(tr.refusals, ref)
		}
		tr.refused = append(tr.refused, t)
		tr.r.metrics.refusal(t.ProviderName, refusalReason(err))
		return nil, false
	}
	return p, true
}

// try asks t's provider for admission and calls it. done reports that the
// request is answered (resp) or must end (tr.err).
func (tr *tries) try(ctx context.Context, t *target) (resp *Response, done bool) {
	permit, ok := tr.admit(t)
	if !ok {
		return nil, false
	}
	return tr.call(ctx, t, permit)
}

// call makes one upstream call to t under permit, within the budget.
func (tr *tries) call(ctx context.Context, t *target, permit *actor.Permit) (resp *Response, done bool) {
	if tr.attempts > 0 && !tr.r.budget.allow() {
		tr.r.finish(permit, actor.Outcome{Kind: actor.Canceled})
		tr.noBudget = true
		tr.r.metrics.budgetExhausted()
		return nil, false
	}
	tr.attempts++
	if !contains(tr.tried, t) {
		tr.tried = append(tr.tried, t)
	}
	actx, at := startAttempt(ctx, tr.req, t, tr.attempts)
	resp, fail := tr.r.attempt(actx, tr.req, t, permit)
	tr.r.endAttempt(ctx, at, resp, fail)
	if fail == nil {
		resp.Attempts = tr.attempts
		return resp, true
	}
	if err := ctx.Err(); err != nil {
		tr.err = fmt.Errorf("client gone: %w", err)
		return nil, true
	}
	if fail.Kind == FailInvalidRequest {
		tr.err = fmt.Errorf("%w: %v", ErrInvalidRequest, fail.Err)
		return nil, true
	}
	if tr.failed == nil {
		tr.failed = make(map[*target]*Failure, 2)
	}
	tr.failed[t] = fail
	tr.failures = append(tr.failures, *fail)
	return nil, false
}

// sleep waits a full-jitter backoff before calling a failed target again,
// reporting false when the context ends or its deadline would pass first.
func (tr *tries) sleep(ctx context.Context) bool {
	ceiling := min(tr.r.backoff<<min(tr.attempts, 5), 2*time.Second)
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
