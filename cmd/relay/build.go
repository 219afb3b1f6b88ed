package main

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/workers"
)

// builder turns a validated configuration into what the gateway serves.
// It keeps providers whose settings did not change across reloads, so
// their connection pools survive a reload.
type builder struct {
	log     *slog.Logger
	metrics *workers.Metrics

	mu        sync.Mutex
	providers map[string]builtProvider
}

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
			Name:         pc.Name,
			Format:       format,
			BaseURL:      pc.BaseURL,
			APIKey:       pc.APIKey,
			Timeout:      pc.Timeout.Std(),
			MaxIdleConns: pc.MaxIdleConns,
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

	specs := make([]workers.RouteSpec, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		spec := workers.RouteSpec{Model: rc.Model, Fallbacks: rc.Fallbacks}
		for _, tc := range rc.Targets {
			bp, ok := next[tc.Provider]
			if !ok {
				return gateway.Config{}, fmt.Errorf("route %s: unknown provider %q", rc.Model, tc.Provider)
			}
			spec.Targets = append(spec.Targets, workers.Target{
				Provider:     bp.p,
				ProviderName: tc.Provider,
				Format:       bp.opts.Format,
				Model:        tc.Model,
				Weight:       tc.Weight,
				Timeout:      bp.opts.Timeout,
			})
		}
		specs = append(specs, spec)
	}
	router, err := workers.NewRouter(workers.RouterOptions{Routes: specs, Metrics: b.metrics, Logger: b.log})
	if err != nil {
		return gateway.Config{}, err
	}

	gc := gateway.Config{Dispatcher: router, MaxBodyBytes: cfg.MaxBodyBytes}
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
	return gc, nil
}

// closeIdle closes every provider's idle connections.
func (b *builder) closeIdle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bp := range b.providers {
		bp.p.CloseIdleConnections()
	}
}
