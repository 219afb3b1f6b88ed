// Package gateway is the relay's HTTP front door: an Echo application that
// speaks the Anthropic Messages and OpenAI Chat Completions APIs exactly,
// authenticates relay keys, checks what each key may use, and hands each
// request to a Dispatcher, relaying the answer (streams event by event) in
// the caller's own format.
//
// The gateway is the one place that maps errors to HTTP statuses and error
// bodies (SPEC §3, errors.go), and decides what a request may use
// (policy.go). It never calls a provider itself, never sees a
// provider's key, and never writes a client's key to a log line, metric or
// error.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/relaygw/relay/gateway/metering"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/logctx"
)

// Options configure a Server.
type Options struct {
	// WriteTimeout bounds each write to a client: a whole non-streaming
	// answer, or one event of a stream (default 60s). There is no global
	// write timeout, so long streams are never cut.
	WriteTimeout time.Duration
	// BodyReadTimeout bounds reading a request body, from the handler's
	// first read to its end (default 60s), so a client that trickles its
	// body holds its share of the body memory budget no longer.
	BodyReadTimeout time.Duration
	// BodyBudgetWait is the longest one request's body reads wait, in
	// all, for room in the body memory budget before it is answered 503
	// (default 1s).
	BodyBudgetWait time.Duration
	// ReadHeaderTimeout bounds reading request headers (default 10s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections (default 120s).
	IdleTimeout time.Duration
}

// Deps are the Server's collaborators.
type Deps struct {
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
	// Registry registers the gateway's metrics; nil uses a new registry.
	Registry *prometheus.Registry
	// Ready reports readiness for /readyz: nil when ready, else why not
	// (NATS down, the job store unavailable), which /readyz answers in
	// its 503 body. Nil Ready means always ready.
	Ready func() error
	// Lanes parks requests when no provider has capacity; nil answers
	// 429 at once instead.
	Lanes Parker
	// Jobs serves the asynchronous /v1/jobs endpoints; nil leaves them
	// unrouted (404).
	Jobs JobService
	// Meter records every answered request's usage and serves GET
	// /v1/usage from its counters; nil meters into Registry's metrics
	// only (GET /v1/usage then answers 503).
	Meter *metering.Meter
	// Budgets reports keys' remaining budgets in GET /v1/usage; nil
	// shows none.
	Budgets BudgetReporter
	// Quotas enforces the keys' limits and budgets (quota.go); nil
	// enforces none. Give the JobRunner the same one.
	Quotas *Quotas
}

// Server is the relay's HTTP front door. It is safe for concurrent use.
type Server struct {
	opts  Options
	log   *slog.Logger
	echo  *echo.Echo
	http  *http.Server
	state atomic.Pointer[state]
	// runtime holds the keys made at run time (SetRuntimeKeys).
	runtime atomic.Pointer[keyTable]
	metrics *metrics
	ready   func() error
	lanes   Parker
	jobs    JobService
	// budget bounds the bytes of request bodies held at once
	// (Config.BodyMemoryBytes); it outlives configuration reloads.
	budget       *bodyBudget
	bodyRejected prometheus.Counter
	fast         *fastMetrics // early answers (admit.go)
	meter        *metering.Meter
	budgets      BudgetReporter
	quotas       *Quotas // keys' limits and budgets (quota.go)
}

// withDefaults fills o's unset fields with their defaults.
func (o Options) withDefaults() Options {
	o.WriteTimeout = positiveOr(o.WriteTimeout, 60*time.Second)
	o.BodyReadTimeout = positiveOr(o.BodyReadTimeout, 60*time.Second)
	o.BodyBudgetWait = positiveOr(o.BodyBudgetWait, defaultBodyBudgetWait)
	o.ReadHeaderTimeout = positiveOr(o.ReadHeaderTimeout, 10*time.Second)
	o.IdleTimeout = positiveOr(o.IdleTimeout, 120*time.Second)
	return o
}

// withDefaults fills d's unset fields with their defaults.
func (d Deps) withDefaults() Deps {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.Ready == nil {
		d.Ready = func() error { return nil }
	}
	if d.Meter == nil {
		d.Meter = metering.New(metering.Options{Registry: d.Registry, Logger: d.Logger})
	}
	return d
}

// New returns a Server serving cfg.
func New(cfg Config, opts Options, deps Deps) *Server {
	opts = opts.withDefaults()
	deps = deps.withDefaults()
	s := &Server{
		opts:    opts,
		log:     slog.New(logctx.Handler(deps.Logger.Handler())),
		metrics: newMetrics(deps.Registry),
		ready:   deps.Ready,
		lanes:   deps.Lanes,
		jobs:    deps.Jobs,
		budget:  newBodyBudget(defaultBodyMemoryBytes),
		fast:    newFastMetrics(deps.Registry),
		meter:   deps.Meter,
		budgets: deps.Budgets,
		quotas:  deps.Quotas,
	}
	if k, ok := deps.Lanes.(kicker); ok && s.quotas != nil {
		s.quotas.kick = k.Kick
	}
	s.bodyRejected = registerBodyMetrics(deps.Registry, s.budget)
	s.SetConfig(cfg)
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleEchoError
	e.Use(s.requestContext)
	e.POST("/v1/messages", s.proxyHandler(workers.FormatAnthropic))
	e.POST("/v1/chat/completions", s.proxyHandler(workers.FormatOpenAI))
	e.POST("/v1/messages/count_tokens", s.handleCountTokens)
	e.GET("/v1/models", s.handleModels)
	e.GET("/v1/models/:id", s.handleModel)
	e.GET("/v1/usage", s.handleUsage)
	if s.jobs != nil {
		e.POST("/v1/jobs", s.jobsHandler(s.handleJobSubmit))
		e.GET("/v1/jobs/:id", s.jobsHandler(s.handleJobGet))
		e.DELETE("/v1/jobs/:id", s.jobsHandler(s.handleJobCancel))
		s.registerJobList(e)
		s.registerBatches(e)
	}
	e.GET("/healthz", s.handleHealthz)
	e.GET("/readyz", s.handleReadyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(deps.Registry, promhttp.HandlerOpts{Registry: deps.Registry})))
	s.echo = e
	// HTTP/1.1, and HTTP/2 without TLS for clients that speak it with prior
	// knowledge (h2c: load balancers, meshes, Go's transport with
	// Protocols set): many concurrent requests, parked ones included, then
	// share one connection instead of holding one each.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s.http = &http.Server{
		Handler:           e,
		Protocols:         &protocols,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(deps.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

// SetConfig atomically replaces what the gateway serves. Requests already
// in flight finish on the configuration they started with.
// A new BodyMemoryBytes applies to bytes reserved from then on.
func (s *Server) SetConfig(cfg Config) {
	st := newState(cfg, &s.runtime)
	s.quotas.setConfig(cfg)
	s.fast.seed(st.dispatcher)
	s.metrics.known(cfg)
	s.seedMeter(cfg, st)
	s.budget.setLimit(st.bodyMemoryBytes)
	s.state.Store(st)
}

// BodyBytesInUse returns the bytes of request bodies charged to the body
// memory budget now (the relay_body_bytes_in_use gauge).
func (s *Server) BodyBytesInUse() int64 { return s.budget.inUse() }

// Handler returns the gateway's HTTP handler, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.echo }

// Serve accepts connections on ln until Shutdown. It returns nil after a
// Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections and waits, until ctx is done, for
// in-flight requests and streams to finish. When ctx ends first, remaining
// connections are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
		return fmt.Errorf("shutdown http: %w", err)
	}
	return nil
}

func (s *Server) handleHealthz(c echo.Context) error {
	return c.String(http.StatusOK, "ok\n")
}

func (s *Server) handleReadyz(c echo.Context) error {
	if err := s.ready(); err != nil {
		return c.String(http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
	}
	if s.state.Load().dispatcher == nil {
		return c.String(http.StatusServiceUnavailable, "not ready: no configuration\n")
	}
	return c.String(http.StatusOK, "ok\n")
}

// handleEchoError renders errors Echo raises itself (unknown path, wrong
// method) in the caller's format.
func (s *Server) handleEchoError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var ae *apiError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he) && he.Code == http.StatusNotFound:
		ae = errNotFound("no such endpoint: " + c.Request().Method + " " + c.Request().URL.Path)
	case errors.As(err, &he) && he.Code == http.StatusMethodNotAllowed:
		ae = errMethod()
	default:
		ae = errInternal("internal error")
		ae.cause = err
	}
	s.writeError(c, formatOf(c.Request()), requestIDOf(c), ae)
}

// formatOf guesses the API format of a request outside the two proxy
// endpoints: Anthropic when the path or headers say so.
func formatOf(r *http.Request) workers.Format {
	if r.Header.Get("Anthropic-Version") != "" || len(r.URL.Path) >= 12 && r.URL.Path[:12] == "/v1/messages" {
		return workers.FormatAnthropic
	}
	return workers.FormatOpenAI
}

// writeError answers e in format f.
func (s *Server) writeError(c echo.Context, f workers.Format, requestID string, e *apiError) {
	h := c.Response().Header()
	h["X-Request-Id"] = []string{requestID}
	if f == workers.FormatAnthropic {
		// The Anthropic SDKs read request-id into Error.RequestID.
		h["Request-Id"] = []string{requestID}
	}
	h["Content-Type"] = []string{"application/json"}
	if e.retryAfter > 0 {
		h["Retry-After"] = []string{retryAfterValue(e.retryAfter)}
		h["Retry-After-Ms"] = []string{fmt.Sprint(e.retryAfter.Milliseconds())}
	}
	if e.noRetry {
		h["X-Should-Retry"] = []string{"false"}
	}
	if e.estimatedWait > 0 {
		h["X-Relay-Estimated-Wait-Ms"] = []string{strconv.FormatInt(e.estimatedWait.Milliseconds(), 10)}
	}
	c.Response().WriteHeader(e.statusFor(f))
	_, _ = c.Response().Write(e.body(f, requestID))
}
