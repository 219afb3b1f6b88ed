package gateway_test

// harness_test.go owns the one test harness of the gateway's tests:
// newRelay wires a relay the way cmd/relay does (providers → router →
// lanes → jobs service → gateway) over real loopback HTTP, in front of
// simulated upstreams, shaped by functional options (withLanes, withJobs,
// withFrontDoor, ...). Every test builds its relay with it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/gateway/metering"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/callbacks"
	"github.com/relaygw/relay/workers/pricing"
	"github.com/relaygw/relay/workers/simupstream"
	"github.com/relaygw/relay/workers/workerstest"
)

// Keys used by the tests. canaryKey must never appear in logs or metrics.
const (
	canaryKey     = "relay-canary-key-7f3a9c"
	limitedKey    = "relay-limited-key-5b2e"
	batchOnlyKey  = "relay-batch-only-key-31d7"
	providerKeyA  = "sk-ant-provider-secret-A"
	providerKeyOA = "sk-openai-provider-secret-B"
)

// waitLimit bounds every wait of the gateway's tests on an event.
const waitLimit = 15 * time.Second

// relay is a gateway wired the way cmd/relay wires it, over real loopback
// HTTP, in front of simulated upstreams.
type relay struct {
	URL       string
	Anthropic *simupstream.Server // serves route claude-sonnet (renamed claude-sonnet-4-5)
	OpenAI    *simupstream.Server // serves route gpt-4o
	Gateway   *gateway.Server
	Registry  *prometheus.Registry
	Actors    map[string]*actor.Actor // from withActors, by provider name
	Lanes     *lanes.Set              // nil without withLanes
	JS        jetstream.JetStream     // nil without withLanes or withJobs
	Jobs      *jobs.Service           // nil without withJobs
	Runner    *holdRunner             // the jobs service's runner; nil without withJobs
	Meter     *metering.Meter         // nil without withMeter
	runJobs   func()                  // starts the jobs service (see withJobsIdle)
	logs      *syncBuffer
}

// relayConfig is what the relayOption functions set; newRelay fills the
// defaults.
type relayConfig struct {
	maxBody         int64
	timeout         time.Duration // the providers' and default routes' timeout
	extraRoutes     []workers.RouteSpec
	upstreams       simupstream.Options // of both simulated upstreams
	claudeFallbacks []string
	quiet           bool                     // log at warn only
	actors          map[string]actor.Options // admission control of "anthropic-a", "openai-b"
	backoff         time.Duration            // the router's retry backoff base (0: the default)
	bodyMemory      int64                    // Config.BodyMemoryBytes (0: the default)
	bodyReadTimeout time.Duration            // Options.BodyReadTimeout (0: the default)
	maxJSONDepth    int                      // gateway's, router's, runner's, jobs' (0: the default)
	keys            []gateway.Key            // nil: team-a and limited
	frontDoor       bool                     // serve with gateway.Server.Serve (HTTP/1.1 and h2c)
	nats            *embeddednats.Server     // nil: natstest.Start when lanes or jobs need it
	lanes           []lanes.Spec             // nil: no lanes.Set
	jobs            *jobs.Options            // nil: no jobs service
	jobRunner       jobs.Runner              // nil: the real gateway.JobRunner
	heldJobs        bool                     // the holdRunner starts held
	jobsIdle        bool                     // the jobs service runs only on relay.runJobs
	meter           bool                     // meter into a usage store on NATS (withMeter)
	quotas          *gateway.Quotas          // keys' limits and budgets (nil: none)
	prices          *pricing.Table           // Config.Prices
}

// withMeter meters usage into a Store on the relay's NATS, priced by
// prices; the Meter is relay.Meter.
func withMeter(prices *pricing.Table) relayOption {
	return func(c *relayConfig) { c.meter, c.prices = true, prices }
}

// relayOption shapes the relay newRelay builds.
type relayOption func(*relayConfig)

func withMaxBody(n int64) relayOption         { return func(c *relayConfig) { c.maxBody = n } }
func withTimeout(d time.Duration) relayOption { return func(c *relayConfig) { c.timeout = d } }
func withBackoff(d time.Duration) relayOption { return func(c *relayConfig) { c.backoff = d } }
func withBodyMemory(n int64) relayOption      { return func(c *relayConfig) { c.bodyMemory = n } }
func withMaxJSONDepth(n int) relayOption      { return func(c *relayConfig) { c.maxJSONDepth = n } }
func withQuietLogs() relayOption              { return func(c *relayConfig) { c.quiet = true } }
func withFrontDoor() relayOption              { return func(c *relayConfig) { c.frontDoor = true } }

// withBodyReadTimeout sets Options.BodyReadTimeout.
func withBodyReadTimeout(d time.Duration) relayOption {
	return func(c *relayConfig) { c.bodyReadTimeout = d }
}

// withRoutes adds routes to the default claude-sonnet and gpt-4o.
func withRoutes(rs ...workers.RouteSpec) relayOption {
	return func(c *relayConfig) { c.extraRoutes = append(c.extraRoutes, rs...) }
}

// withClaudeFallbacks sets the fallbacks of route claude-sonnet.
func withClaudeFallbacks(models ...string) relayOption {
	return func(c *relayConfig) { c.claudeFallbacks = models }
}

// withUpstreams configures both simulated upstreams.
func withUpstreams(o simupstream.Options) relayOption {
	return func(c *relayConfig) { c.upstreams = o }
}

// withActors gives the default routes' providers ("anthropic-a",
// "openai-b") admission control; the Actors are in relay.Actors.
func withActors(m map[string]actor.Options) relayOption { return func(c *relayConfig) { c.actors = m } }

// withKeys replaces the default client keys (team-a and limited).
func withKeys(keys ...gateway.Key) relayOption { return func(c *relayConfig) { c.keys = keys } }

// withNATS runs lanes and jobs on s instead of a new in-process server.
func withNATS(s *embeddednats.Server) relayOption { return func(c *relayConfig) { c.nats = s } }

// withLanes parks requests on a lanes.Set with lanes interactive (of
// max_depth interactiveDepth) and batch, which the router kicks.
func withLanes(interactiveDepth int) relayOption {
	return func(c *relayConfig) {
		c.lanes = []lanes.Spec{
			{Name: "interactive", MaxDepth: interactiveDepth, MaxWait: 30 * time.Second},
			{Name: "batch", MaxDepth: 1000, MaxWait: time.Hour, MinShare: 0.1},
		}
	}
}

// withJobs serves /v1/jobs and batches from a jobs service opened with o
// (Registry is the relay's; Signer defaults to testSigner; MaxJSONDepth
// to withMaxJSONDepth's) and running the real job runner through
// relay.Runner.
func withJobs(o jobs.Options) relayOption { return func(c *relayConfig) { c.jobs = &o } }

// withJobRunner makes the jobs service run jobs with r, through
// relay.Runner, instead of the real job runner.
func withJobRunner(r jobs.Runner) relayOption { return func(c *relayConfig) { c.jobRunner = r } }

// withHeldJobs starts relay.Runner held: each run waits for its release.
func withHeldJobs() relayOption { return func(c *relayConfig) { c.heldJobs = true } }

// withQuotas enforces the keys' limits and budgets with q, on
// synchronous requests and jobs alike, pricing with prices.
func withQuotas(q *gateway.Quotas, prices *pricing.Table) relayOption {
	return func(c *relayConfig) { c.quotas, c.prices = q, prices }
}

// withJobsIdle leaves the jobs service idle until relay.runJobs.
func withJobsIdle() relayOption { return func(c *relayConfig) { c.jobsIdle = true } }

// Client keys the tests pick from with withKeys.
var (
	// teamA may use every lane and route; its default lane is interactive.
	teamA = key("team-a", canaryKey, "interactive", []string{"interactive", "batch"}, "*")
	// limitedBatch may use lane batch only, and route gpt-4o only.
	limitedBatch = key("limited", limitedKey, "batch", []string{"batch"}, "gpt-4o")
	// limitedInteractive may use lane interactive only, and route gpt-4o only.
	limitedInteractive = key("limited", limitedKey, "interactive", []string{"interactive"}, "gpt-4o")
	// nightly may use lane batch only, and every route.
	nightly = key("nightly", batchOnlyKey, "batch", []string{"batch"}, "*")
)

// key is a client key of the gateway's configuration.
func key(name, secret, defaultLane string, laneNames []string, routes ...string) gateway.Key {
	return gateway.Key{Name: name, SHA256: sha256.Sum256([]byte(secret)), DefaultLane: defaultLane,
		Lanes: laneNames, Routes: routes}
}

// newRelayB is newRelay for benchmarks, with logging off.
func newRelayB(b *testing.B, opts ...relayOption) *relay {
	return newRelay(b, append([]relayOption{withQuietLogs()}, opts...)...)
}

// newRelay builds a relay shaped by opts; everything it starts stops when
// the test ends.
func newRelay(t testing.TB, opts ...relayOption) *relay {
	t.Helper()
	c := relayConfig{timeout: 10 * time.Second, keys: []gateway.Key{teamA, limitedBatch}}
	for _, o := range opts {
		o(&c)
	}
	r := &relay{Registry: prometheus.NewRegistry(), logs: &syncBuffer{}}
	level := slog.LevelDebug
	if c.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: level}))
	r.openLanes(t, &c)
	router := r.newRouter(t, &c, log)
	r.openMeter(t, &c)
	r.openJobs(t, &c, router)
	cfg := gateway.Config{
		Dispatcher:      router,
		MaxBodyBytes:    c.maxBody,
		BodyMemoryBytes: c.bodyMemory,
		MaxJSONDepth:    c.maxJSONDepth,
		Lanes:           []gateway.Lane{{Name: "interactive", MaxWait: 30 * time.Second}, {Name: "batch", MaxWait: time.Hour}},
		Keys:            c.keys,
		Prices:          c.prices,
	}
	deps := gateway.Deps{Logger: log, Registry: r.Registry, Meter: r.Meter, Quotas: c.quotas}
	if r.Lanes != nil {
		deps.Lanes = r.Lanes
	}
	if r.Jobs != nil {
		deps.Jobs = r.Jobs
	}
	r.Gateway = gateway.New(cfg, gateway.Options{BodyReadTimeout: c.bodyReadTimeout}, deps)
	if c.frontDoor {
		r.URL = serveFrontDoor(t, r.Gateway)
		return r
	}
	srv := httptest.NewUnstartedServer(r.Gateway.Handler())
	srv.Config.ReadHeaderTimeout = 5 * time.Second
	srv.Start()
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// jetStream returns the relay's JetStream, connecting to c.nats (started
// now when nil) the first time.
func (r *relay) jetStream(t testing.TB, c *relayConfig) jetstream.JetStream {
	t.Helper()
	if r.JS == nil {
		if c.nats == nil {
			c.nats = natstest.Start(t)
		}
		r.JS = natstest.JetStream(t, c.nats)
	}
	return r.JS
}

// openMeter opens the usage store and starts the Meter of withMeter, if
// any; it stops when the test ends.
func (r *relay) openMeter(t testing.TB, c *relayConfig) {
	t.Helper()
	if !c.meter {
		return
	}
	js := r.jetStream(t, c)
	store, err := metering.OpenStore(t.Context(), js, assets.New(js, assets.Options{}),
		metering.StoreOptions{Retention: time.Hour})
	if err != nil {
		t.Fatalf("metering.OpenStore: %v", err)
	}
	r.Meter = metering.New(metering.Options{Registry: r.Registry, Store: store, FlushInterval: 50 * time.Millisecond})
	r.Meter.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		r.Meter.Stop(ctx)
	})
}

// openLanes opens the lanes.Set of withLanes, if any.
func (r *relay) openLanes(t testing.TB, c *relayConfig) {
	t.Helper()
	if c.lanes == nil {
		return
	}
	set, err := lanes.Open(t.Context(), lanes.Options{Lanes: c.lanes, JetStream: r.jetStream(t, c), Registry: r.Registry})
	if err != nil {
		t.Fatalf("lanes.Open: %v", err)
	}
	t.Cleanup(func() { _ = set.Close() })
	r.Lanes = set
}

// newRouter starts the simulated upstreams and returns the router of the
// default routes (claude-sonnet on "anthropic-a", gpt-4o on "openai-b")
// and c's extra routes.
func (r *relay) newRouter(t testing.TB, c *relayConfig, log *slog.Logger) *workers.Router {
	t.Helper()
	var urlA, urlO string
	r.Anthropic, urlA = startSim(t, c.upstreams)
	r.OpenAI, urlO = startSim(t, c.upstreams)
	provA := mustProvider(t, workers.ProviderOptions{Name: "anthropic-a", Format: workers.FormatAnthropic,
		BaseURL: urlA, APIKey: providerKeyA, Timeout: c.timeout})
	provO := mustProvider(t, workers.ProviderOptions{Name: "openai-b", Format: workers.FormatOpenAI,
		BaseURL: urlO + "/v1", APIKey: providerKeyOA, Timeout: c.timeout})
	r.Actors = make(map[string]*actor.Actor, len(c.actors))
	for name, ao := range c.actors {
		if ao.Name == "" {
			ao.Name = name
		}
		r.Actors[name] = workerstest.Actor(ao)
	}
	routes := []workers.RouteSpec{
		{Model: "claude-sonnet", Fallbacks: c.claudeFallbacks, Targets: []workers.Target{{Provider: provA, ProviderName: "anthropic-a",
			Format: workers.FormatAnthropic, Model: "claude-sonnet-4-5", Weight: 1, Timeout: c.timeout, Actor: r.Actors["anthropic-a"]}}},
		{Model: "gpt-4o", Targets: []workers.Target{{Provider: provO, ProviderName: "openai-b",
			Format: workers.FormatOpenAI, Model: "gpt-4o-2024", Weight: 1, Timeout: c.timeout, Actor: r.Actors["openai-b"]}}},
	}
	ro := workers.RouterOptions{Routes: append(routes, c.extraRoutes...), Metrics: workers.NewMetrics(r.Registry),
		Logger: log, Backoff: c.backoff, MaxJSONDepth: c.maxJSONDepth}
	if r.Lanes != nil {
		ro.OnRelease = r.Lanes.Kick
	}
	router, err := workerstest.Router(ro)
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	return router
}

// startSim serves a simulated upstream (recording at least its last 32
// requests) on loopback until the test ends.
func startSim(t testing.TB, o simupstream.Options) (*simupstream.Server, string) {
	t.Helper()
	if o.Record == 0 {
		o.Record = 32
	}
	sim := simupstream.New(o)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(func() {
		_ = sim.Close()
		srv.Close()
	})
	return sim, srv.URL
}

// newCallbackSender sends callbacks as cmd/relay does (a
// callbacks.Deliverer behind jobs.CallbackSender), signed by signer and
// retried after 10 ms.
func newCallbackSender(signer *callbacks.Signer, allowPrivate bool) jobs.CallbackSender {
	return callbackSender{callbacks.NewDeliverer(callbacks.DelivererOptions{Signer: signer, BaseBackoff: 10 * time.Millisecond,
		Client: callbacks.NewClient(callbacks.ClientOptions{AllowPrivate: allowPrivate})})}
}

// callbackSender is cmd/relay's adapter of a callbacks.Deliverer.
type callbackSender struct{ *callbacks.Deliverer }

func (c callbackSender) Attempt(ctx context.Context, a jobs.CallbackAttempt) jobs.CallbackResult {
	return jobs.CallbackResult(c.Deliverer.Attempt(ctx, callbacks.Callback(a)))
}

// openJobs opens and runs the jobs service of withJobs, if any; it stops
// when the test ends.
func (r *relay) openJobs(t testing.TB, c *relayConfig, router *workers.Router) {
	t.Helper()
	if c.jobs == nil {
		return
	}
	inner := c.jobRunner
	if inner == nil {
		inner = &gateway.JobRunner{Router: func() gateway.JobDispatcher { return router }, Lanes: r.Lanes,
			MaxJSONDepth: c.maxJSONDepth, Meter: r.Meter, Quotas: c.quotas}
	}
	r.Runner = &holdRunner{inner: inner, started: make(chan string, 16), release: make(chan struct{})}
	r.Runner.held.Store(c.heldJobs)
	o := *c.jobs
	o.Registry = r.Registry
	if o.ResultTTL == 0 {
		o.ResultTTL = 72 * time.Hour
	}
	if o.Lanes == nil {
		o.Lanes = map[string]time.Duration{"interactive": 30 * time.Second, "batch": time.Hour}
	}
	if o.Callbacks == nil {
		o.Callbacks, o.CallbackURLs = newCallbackSender(testSigner(t), true), callbacks.Checker{AllowPrivate: true}
	}
	if o.CallbackSchedule == nil { // 10 attempts, 10 ms apart
		o.CallbackSchedule = slices.Repeat([]time.Duration{10 * time.Millisecond}, 9)
	}
	o.CallbackTimeout = callbacks.DefaultTimeout
	svc, err := jobs.Open(t.Context(), r.jetStream(t, c), r.Runner, o)
	if err != nil {
		t.Fatalf("jobs.Open: %v", err)
	}
	r.Jobs = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var once sync.Once
	r.runJobs = func() {
		once.Do(func() {
			go func() {
				defer close(done)
				if err := svc.Run(ctx); err != nil {
					t.Errorf("jobs Run: %v", err)
				}
			}()
		})
	}
	t.Cleanup(func() {
		r.Runner.held.Store(false)
		cancel()
		once.Do(func() { close(done) }) // never run
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("jobs Run did not return")
		}
	})
	if !c.jobsIdle {
		r.runJobs()
	}
}

// holdRunner wraps a job runner; while held, each run waits for release
// before going on.
type holdRunner struct {
	inner   jobs.Runner
	held    atomic.Bool
	started chan string
	release chan struct{}
	runs    atomic.Int32
}

// Run starts j, then runs it with the inner runner, after its release
// while held (so a held job shows running).
func (h *holdRunner) Run(ctx context.Context, j jobs.Job, body []byte, start func() bool) jobs.Outcome {
	if !start() {
		return jobs.Outcome{Err: jobs.ErrNotStarted}
	}
	h.runs.Add(1)
	if h.held.Load() {
		select {
		case h.started <- j.ID:
		default:
		}
		select {
		case <-h.release:
		case <-ctx.Done():
			return jobs.Outcome{Err: ctx.Err(), Retryable: true}
		}
	}
	return h.inner.Run(ctx, j, body, func() bool { return true })
}

// serveFrontDoor serves gw on a new loopback listener with
// gateway.Server.Serve, as cmd/relay does, and returns its base URL. The
// server is shut down when the test ends.
func serveFrontDoor(t testing.TB, gw *gateway.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			t.Errorf("front door shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("front door: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// mustProvider is workers.NewProvider with the configuration's default
// timeouts where o sets none.
func mustProvider(t testing.TB, o workers.ProviderOptions) *workers.HTTPProvider {
	t.Helper()
	p, err := workerstest.Provider(o)
	if err != nil {
		t.Fatalf("NewProvider(%s): %v", o.Name, err)
	}
	t.Cleanup(p.Close) // its model list fetch too
	return p
}

// do sends a raw request to the relay and returns status, headers and body.
func (r *relay) do(t *testing.T, method, path string, hdr map[string]string, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, r.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, resp.Header, b
}

// metricsText scrapes /metrics.
func (r *relay) metricsText(t *testing.T) string {
	t.Helper()
	_, _, b := r.do(t, http.MethodGet, "/metrics", nil, "")
	return string(b)
}

// deadAddr returns a loopback address that refuses connections.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func anthropicHeaders(key string) map[string]string {
	return map[string]string{"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
}

func openaiHeaders(key string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + key, "content-type": "application/json"}
}

// testSigner returns a signer with a fixed secret, for services whose test
// does not check signatures (callbacks are always signed).
func testSigner(t testing.TB) *callbacks.Signer {
	t.Helper()
	sg, err := callbacks.NewSigner("whsec_" + base64.StdEncoding.EncodeToString([]byte("relay-gateway-test-secret")))
	if err != nil {
		t.Fatal(err)
	}
	return sg
}
