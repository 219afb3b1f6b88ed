package main

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
)

// builder turns a validated configuration into what the gateway serves.
// It keeps providers whose settings did not change across reloads, so
// their connection pools survive a reload.
type builder struct {
	log       *slog.Logger
	metrics   *workers.Metrics
	onRelease func() // capacity may have freed: kick the lanes

	mu        sync.Mutex
	providers map[string]builtProvider
	actors    map[string]*actor.Actor
	router    atomic.Pointer[workers.Router] // the latest built
}

// Router returns the router of the latest configuration built.
func (b *builder) Router() gateway.JobDispatcher { return b.router.Load() }

type builtProvider struct {
	opts workers.ProviderOptions
	p    *workers.HTTPProvider
}

// build maps cfg onto a gateway.Config.
func (b *builder) build(cfg *configs.Config) (gateway.Config, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := make(map[string]builtProvider, len(cfg.Providers))
	for _, pc := range cfg.Providers {
		format, ok := workers.ParseFormat(pc.Type)
		if !ok {
			return gateway.Config{}, fmt.Errorf("provider %s: unknown type %q", pc.Name, pc.Type)
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
			return gateway.Config{}, err
		}
		next[pc.Name] = builtProvider{opts: opts, p: p}
	}

	// One actor per provider name holds its admission state; a reload
	// updates its limits in place, so in-flight permits, breaker state and
	// cool-downs survive.
	actors := make(map[string]*actor.Actor, len(cfg.Providers))
	for _, pc := range cfg.Providers {
		ao := actorOptions(pc)
		if a, ok := b.actors[pc.Name]; ok {
			a.Update(ao)
			actors[pc.Name] = a
		} else {
			actors[pc.Name] = actor.New(ao)
		}
	}
	inputLimited := make(map[string]bool, len(cfg.Providers))
	for _, pc := range cfg.Providers {
		inputLimited[pc.Name] = pc.InputTPM > 0
	}

	specs := make([]workers.RouteSpec, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		spec := workers.RouteSpec{Model: rc.Model, Fallbacks: rc.Fallbacks}
		for _, tc := range rc.Targets {
			bp, ok := next[tc.Provider]
			if !ok {
				return gateway.Config{}, fmt.Errorf("route %s: unknown provider %q", rc.Model, tc.Provider)
			}
			spec.Targets = append(spec.Targets, workers.Target{
				Provider:      bp.p,
				ProviderName:  tc.Provider,
				Format:        bp.opts.Format,
				Model:         tc.Model,
				Weight:        tc.Weight,
				Timeout:       bp.opts.Timeout,
				Actor:         actors[tc.Provider],
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
		return gateway.Config{}, err
	}

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
		})
	}
	// Providers dropped by this configuration keep serving requests in
	// flight; their idle connections are closed.
	for name, old := range b.providers {
		if cur, ok := next[name]; !ok || cur.p != old.p {
			old.p.CloseIdleConnections()
		}
	}
	b.providers = next
	b.actors = actors
	b.router.Store(router)
	return gc, nil
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

// closeIdle closes every provider's idle connections.
func (b *builder) closeIdle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bp := range b.providers {
		bp.p.CloseIdleConnections()
	}
}
