// This file owns turning a validated configuration into what the relay
// serves: providers, their actors' limits, the router, the gateway's
// configuration, the lane specs and the embedded NATS server's access.
// Everything is built aside first (prepare); only a fully built state is
// put in place (commit), so a reload that fails at any step changes
// nothing.

package main

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
)

// builder turns a validated configuration into what the gateway serves.
// It keeps providers whose settings did not change across reloads, so
// their connection pools survive a reload, and one actor per provider
// name, so admission state survives too. One goroutine at a time prepares
// and commits (serve at start, then the reloader), so a state is always
// committed over the one it was prepared from.
type builder struct {
	log       *slog.Logger
	metrics   *workers.Metrics
	onRelease func() // capacity may have freed: kick the lanes

	mu        sync.Mutex
	providers map[string]builtProvider
	actors    map[string]*actor.Actor
	router    atomic.Pointer[workers.Router] // the latest committed
	admin     atomic.Pointer[string]         // admin.token of the latest committed
}

// Router returns the router of the latest configuration committed.
func (b *builder) Router() gateway.JobDispatcher { return b.router.Load() }

type builtProvider struct {
	opts workers.ProviderOptions
	p    *workers.HTTPProvider
}

// state is a configuration built aside. Nothing in it is live until
// commit: the actors it names that already serve keep their old limits
// until then (limits holds the new ones).
type state struct {
	providers map[string]builtProvider
	actors    map[string]*actor.Actor
	limits    map[string]actor.Options
	router    *workers.Router
	gateway   gateway.Config
	lanes     []lanes.Spec
	tenants   []embeddednats.Tenant
	users     []embeddednats.User
	admin     string // admin.token
}

// build prepares cfg and commits it: the start of serve, and tests.
func (b *builder) build(cfg *configs.Config) (*state, error) {
	st, err := b.prepare(cfg)
	if err != nil {
		return nil, err
	}
	b.commit(st)
	return st, nil
}

// prepare builds cfg aside and checks every part of it. It changes
// nothing that serves: a refused configuration leaves no trace.
func (b *builder) prepare(cfg *configs.Config) (*state, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	providers, err := b.buildProviders(cfg)
	if err != nil {
		return nil, err
	}
	st := &state{providers: providers, lanes: laneSpecs(cfg), admin: cfg.Admin.Token}
	st.actors, st.limits = b.buildActors(cfg)
	if st.router, err = b.buildRouter(cfg, st); err != nil {
		return nil, err
	}
	if st.gateway, err = gatewayConfig(cfg, st.router); err != nil {
		return nil, err
	}
	if err := lanes.CheckSpecs(st.lanes); err != nil {
		return nil, err
	}
	if st.tenants, st.users, err = natsAccess(cfg); err != nil {
		return nil, err
	}
	return st, nil
}

// buildProviders returns cfg's providers: the current one where its
// settings did not change, else a new one (no connection opened yet).
func (b *builder) buildProviders(cfg *configs.Config) (map[string]builtProvider, error) {
	next := make(map[string]builtProvider, len(cfg.Providers))
	for _, pc := range cfg.Providers {
		format, ok := workers.ParseFormat(pc.Type)
		if !ok {
			return nil, fmt.Errorf("provider %s: unknown type %q", pc.Name, pc.Type)
		}
		opts := workers.ProviderOptions{
			Name:             pc.Name,
			Format:           format,
			BaseURL:          pc.BaseURL,
			APIKey:           pc.APIKey,
			Timeout:          pc.Timeout.Std(),
			FirstByteTimeout: pc.FirstByteTimeout.Std(),
			MaxIdleConns:     pc.MaxIdleConns,
		}
		if old, ok := b.providers[pc.Name]; ok && old.opts == opts {
			next[pc.Name] = old
			continue
		}
		p, err := workers.NewProvider(opts)
		if err != nil {
			return nil, fmt.Errorf("provider %s: %w", pc.Name, err)
		}
		next[pc.Name] = builtProvider{opts: opts, p: p}
	}
	return next, nil
}

// buildActors returns one actor per provider: the current one, whose new
// limits are returned aside for commit (in-flight permits, breaker state
// and cool-downs survive a reload), or a new one.
func (b *builder) buildActors(cfg *configs.Config) (map[string]*actor.Actor, map[string]actor.Options) {
	actors := make(map[string]*actor.Actor, len(cfg.Providers))
	limits := make(map[string]actor.Options, len(cfg.Providers))
	for _, pc := range cfg.Providers {
		ao := actorOptions(pc)
		if a, ok := b.actors[pc.Name]; ok {
			actors[pc.Name] = a
			limits[pc.Name] = ao
		} else {
			actors[pc.Name] = actor.New(ao)
		}
	}
	return actors, limits
}

// buildRouter returns the router of cfg's routes over st's providers and
// actors.
func (b *builder) buildRouter(cfg *configs.Config, st *state) (*workers.Router, error) {
	inputLimited := make(map[string]bool, len(cfg.Providers))
	for _, pc := range cfg.Providers {
		inputLimited[pc.Name] = pc.InputTPM > 0
	}
	specs := make([]workers.RouteSpec, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		spec := workers.RouteSpec{Model: rc.Model, Fallbacks: rc.Fallbacks}
		for _, tc := range rc.Targets {
			bp, ok := st.providers[tc.Provider]
			if !ok {
				return nil, fmt.Errorf("route %s: unknown provider %q", rc.Model, tc.Provider)
			}
			spec.Targets = append(spec.Targets, workers.Target{
				Provider:      bp.p,
				ProviderName:  tc.Provider,
				Format:        bp.opts.Format,
				Model:         tc.Model,
				Weight:        tc.Weight,
				Timeout:       bp.opts.Timeout,
				Actor:         st.actors[tc.Provider],
				EstimateInput: inputLimited[tc.Provider],
			})
		}
		specs = append(specs, spec)
	}
	router, err := workers.NewRouter(workers.RouterOptions{
		Routes:       specs,
		Metrics:      b.metrics,
		Logger:       b.log,
		MaxAttempts:  cfg.Retry.MaxAttempts,
		RetryRatio:   cfg.Retry.BudgetRatio,
		RetryFloor:   cfg.Retry.BudgetFloor,
		OnRelease:    b.onRelease,
		MaxJSONDepth: cfg.MaxJSONDepth,
	})
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	return router, nil
}

// gatewayConfig maps cfg onto the gateway's configuration, served by
// router.
func gatewayConfig(cfg *configs.Config, router *workers.Router) (gateway.Config, error) {
	gc := gateway.Config{Dispatcher: router, MaxBodyBytes: cfg.MaxBodyBytes, BodyMemoryBytes: cfg.BodyMemoryBytes,
		MaxJSONDepth: cfg.MaxJSONDepth}
	for _, l := range cfg.Lanes {
		gc.Lanes = append(gc.Lanes, gateway.Lane{Name: l.Name, MaxWait: l.MaxWait.Std()})
	}
	for i, kc := range cfg.Keys {
		sum, err := kc.SecretSHA256()
		if err != nil {
			return gateway.Config{}, fmt.Errorf("keys[%d]: %w", i, err)
		}
		gc.Keys = append(gc.Keys, gateway.Key{
			Name:        kc.Name,
			SHA256:      sum,
			DefaultLane: kc.DefaultLane,
			Lanes:       kc.Lanes,
			Routes:      kc.Routes,
			Limits:      kc.KeyLimits,
			Budget:      kc.Budget,
		})
	}
	return gc, nil
}

// commit puts the builder's part of st in place: the actors take their
// new limits, the router becomes the jobs' router, and providers dropped
// by st close their idle connections (they keep serving the requests in
// flight). It cannot fail.
func (b *builder) commit(st *state) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for name, ao := range st.limits {
		st.actors[name].Update(ao)
	}
	for name, old := range b.providers {
		if cur, ok := st.providers[name]; !ok || cur.p != old.p {
			old.p.Close() // stops its model list fetch; calls in flight go on
		}
	}
	b.providers = st.providers
	b.actors = st.actors
	b.router.Store(st.router)
	b.admin.Store(&st.admin)
}

// actorOptions maps a provider's limits onto its actor's options.
func actorOptions(pc configs.Provider) actor.Options {
	return actor.Options{
		Name:           pc.Name,
		MaxConcurrency: pc.MaxConcurrency,
		RPM:            pc.RPM,
		InputTPM:       pc.InputTPM,
		OutputTPM:      pc.OutputTPM,
		Breaker: actor.BreakerOptions{
			FailureRatio: pc.Breaker.FailureRatio,
			MinRequests:  pc.Breaker.MinRequests,
			Window:       pc.Breaker.Window.Std(),
			OpenFor:      pc.Breaker.OpenFor.Std(),
		},
	}
}

// Actors returns the current providers' actors, for metrics.
func (b *builder) Actors() []*actor.Actor {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*actor.Actor, 0, len(b.actors))
	for _, a := range b.actors {
		out = append(out, a)
	}
	return out
}

// closeIdle closes every provider's idle connections and stops their
// model list fetches.
func (b *builder) closeIdle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bp := range b.providers {
		bp.p.Close()
	}
}

// actorMap returns the current providers' actors by name.
func (b *builder) actorMap() map[string]*actor.Actor {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]*actor.Actor, len(b.actors))
	for n, a := range b.actors {
		out[n] = a
	}
	return out
}
