package gateway_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/bench/simupstream"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/workerstest"
)

// Keys used by the tests. canaryKey must never appear in logs or metrics.
const (
	canaryKey     = "relay-canary-key-7f3a9c"
	limitedKey    = "relay-limited-key-5b2e"
	providerKeyA  = "sk-ant-provider-secret-A"
	providerKeyOA = "sk-openai-provider-secret-B"
)

// relay is a gateway wired the way cmd/relay wires it, over real loopback
// HTTP, in front of simulated upstreams.
type relay struct {
	URL       string
	Anthropic *simupstream.Server // serves route claude-sonnet (renamed claude-sonnet-4-5)
	OpenAI    *simupstream.Server // serves route gpt-4o
	Gateway   *gateway.Server
	Registry  *prometheus.Registry
	Actors    map[string]*actor.Actor // from relayOptions.actors, by provider name
	logs      *syncBuffer
}

type relayOptions struct {
	maxBody         int64
	timeout         time.Duration
	extraRoutes     []workers.RouteSpec
	anthropicOpts   simupstream.Options
	writeTimeout    time.Duration
	claudeFallbacks []string
	quiet           bool // log at warn only
	// openaiOpts configure the simulated OpenAI upstream.
	openaiOpts simupstream.Options
	// actors gives the default routes' providers ("anthropic-a",
	// "openai-b") admission control; the Actors are in relay.Actors.
	actors map[string]actor.Options
	// backoff is the router's retry backoff base (0: the default).
	backoff time.Duration
	// bodyMemory is Config.BodyMemoryBytes (0: the default).
	bodyMemory int64
	// bodyReadTimeout is Options.BodyReadTimeout (0: the default).
	bodyReadTimeout time.Duration
}

// newRelayB is newRelay for benchmarks, with logging off.
func newRelayB(b *testing.B) *relay {
	return newRelay(b, relayOptions{quiet: true})
}

func newRelay(t testing.TB, o relayOptions) *relay {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 10 * time.Second
	}
	if o.anthropicOpts.Record == 0 {
		o.anthropicOpts.Record = 32
	}
	simA := simupstream.New(o.anthropicOpts)
	if o.openaiOpts.Record == 0 {
		o.openaiOpts.Record = 32
	}
	simO := simupstream.New(o.openaiOpts)
	upA := httptest.NewServer(simA.Handler())
	upO := httptest.NewServer(simO.Handler())
	t.Cleanup(func() {
		_ = simA.Close()
		_ = simO.Close()
		upA.Close()
		upO.Close()
	})
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	level := slog.LevelDebug
	if o.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}))
	provA := mustProvider(t, workers.ProviderOptions{Name: "anthropic-a", Format: workers.FormatAnthropic,
		BaseURL: upA.URL, APIKey: providerKeyA, Timeout: o.timeout})
	provO := mustProvider(t, workers.ProviderOptions{Name: "openai-b", Format: workers.FormatOpenAI,
		BaseURL: upO.URL + "/v1", APIKey: providerKeyOA, Timeout: o.timeout})
	actors := make(map[string]*actor.Actor, len(o.actors))
	for name, ao := range o.actors {
		if ao.Name == "" {
			ao.Name = name
		}
		actors[name] = workerstest.Actor(ao)
	}
	routes := []workers.RouteSpec{
		{Model: "claude-sonnet", Fallbacks: o.claudeFallbacks, Targets: []workers.Target{{Provider: provA, ProviderName: "anthropic-a",
			Format: workers.FormatAnthropic, Model: "claude-sonnet-4-5", Weight: 1, Timeout: o.timeout, Actor: actors["anthropic-a"]}}},
		{Model: "gpt-4o", Targets: []workers.Target{{Provider: provO, ProviderName: "openai-b",
			Format: workers.FormatOpenAI, Model: "gpt-4o-2024", Weight: 1, Timeout: o.timeout, Actor: actors["openai-b"]}}},
	}
	routes = append(routes, o.extraRoutes...)
	router, err := workerstest.Router(workers.RouterOptions{Routes: routes, Metrics: workers.NewMetrics(reg), Logger: log,
		Backoff: o.backoff})
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	cfg := gateway.Config{
		Dispatcher:      router,
		MaxBodyBytes:    o.maxBody,
		BodyMemoryBytes: o.bodyMemory,
		Lanes: []gateway.Lane{
			{Name: "interactive", MaxWait: 30 * time.Second},
			{Name: "batch", MaxWait: time.Hour},
		},
		Keys: []gateway.Key{
			{Name: "team-a", SHA256: sha256.Sum256([]byte(canaryKey)), DefaultLane: "interactive",
				Lanes: []string{"interactive", "batch"}, Routes: []string{"*"}},
			{Name: "limited", SHA256: sha256.Sum256([]byte(limitedKey)), DefaultLane: "batch",
				Lanes: []string{"batch"}, Routes: []string{"gpt-4o"}},
		},
	}
	gw := gateway.New(cfg, gateway.Options{WriteTimeout: o.writeTimeout, BodyReadTimeout: o.bodyReadTimeout}, gateway.Deps{Logger: log, Registry: reg})
	srv := httptest.NewUnstartedServer(gw.Handler())
	srv.Config.ReadHeaderTimeout = 5 * time.Second
	srv.Start()
	t.Cleanup(srv.Close)
	return &relay{URL: srv.URL, Anthropic: simA, OpenAI: simO, Gateway: gw, Registry: reg, Actors: actors, logs: logs}
}

// mustProvider is workers.NewProvider with the configuration's default
// timeouts where o sets none.
func mustProvider(t testing.TB, o workers.ProviderOptions) *workers.HTTPProvider {
	t.Helper()
	p, err := workerstest.Provider(o)
	if err != nil {
		t.Fatalf("NewProvider(%s): %v", o.Name, err)
	}
	t.Cleanup(p.CloseIdleConnections)
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
