// This file wires the capacity leases (workers/lease) that hold each
// provider's limits for a whole cluster of relays: one lease manager per
// relay when it shares NATS with others, none for a relay alone.

package main

import (
	"context"
	"log/slog"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/workers/keylimits"
	"github.com/relaygw/relay/workers/lease"
)

// clustered reports whether other relays may share this relay's NATS and
// so its providers' limits: nats.url, nats.cluster or nats.listen. A relay
// alone (embedded NATS, none of them) holds its limits in full with no
// lease at all.
func clustered(c configs.NATS) bool {
	return c.URL != "" || c.Cluster != nil || c.Listen != ""
}

// leases is the relay's side of the cluster-wide limits: the manager
// (nil for a relay alone) and the metrics, which exist either way.
type leases struct {
	m       *lease.Manager
	metrics *lease.Metrics
	b       *builder
	set     *lanes.Set
	kick    func()
	known   []string // providers with metric series (a relay alone)
	// quotas holds the keys' limiters: limited keys are leased too.
	quotas *gateway.Quotas

	applyMu sync.Mutex      // guards cfg and runtime; one apply at a time
	cfg     *configs.Config // the configuration last applied
	runtime []gateway.Key   // the keys made at run time, last seen
}

// startLeases registers the leases' metrics and, when clustered, starts
// the manager over js; stop ends it (before NATS closes).
func startLeases(cfg *configs.Config, js jetstream.JetStream, decl *assets.Declarer, b *builder, set *lanes.Set,
	quotas *gateway.Quotas, log *slog.Logger, reg prometheus.Registerer) (l *leases, stop func()) {
	l = &leases{metrics: lease.NewMetrics(reg), b: b, set: set, kick: set.Kick, quotas: quotas}
	if !clustered(cfg.NATS) {
		l.apply(cfg)
		return l, func() {}
	}
	expected := 1
	if cl := cfg.NATS.Cluster; cl != nil {
		expected = max(len(cl.Routes), 1)
	}
	l.m = lease.New(lease.Options{
		JetStream: js,
		KV: func(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
			return decl.KeyValue(ctx, c, false)
		},
		Period:         cfg.NATS.LeasePeriod.Std(),
		Policy:         leasePolicy(cfg),
		ExpectedRelays: expected,
		Logger:         log,
		Metrics:        l.metrics,
	})
	l.apply(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.m.Run(ctx)
	}()
	log.Info("cluster-wide provider limits: leases on", "relay", l.m.Relay(), "lease_period_s", cfg.NATS.LeasePeriod.Std().Seconds())
	return l, func() { cancel(); <-done }
}

// leasePolicy is the division policy of cfg: the default reserve and
// floor, the lanes' min_share.
func leasePolicy(cfg *configs.Config) lease.Policy {
	p := lease.Policy{Reserve: lease.DefaultReserve, Floor: lease.DefaultFloor}
	for _, ln := range cfg.Lanes {
		p.MinShare = append(p.MinShare, ln.MinShare)
	}
	return p
}

// setRuntimeKeys leases the limits of the keys made at run time, like
// the file's: without it each relay would hold their limits in full.
func (l *leases) setRuntimeKeys(keys []gateway.Key) {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	l.runtime = slices.Clone(keys)
	if l.m != nil && l.cfg != nil {
		l.applyLocked()
	}
}

// apply puts cfg's providers and limited keys (and the keys made at run
// time) under leases, or, alone, shows the providers' whole limits; the
// builder has committed cfg.
func (l *leases) apply(cfg *configs.Config) {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	l.cfg = cfg
	l.applyLocked()
}

// applyLocked applies l.cfg and l.runtime; l.applyMu is held.
func (l *leases) applyLocked() {
	cfg, runtime := l.cfg, l.runtime
	if l.m == nil {
		var names []string
		for _, pc := range cfg.Providers {
			l.metrics.Whole(pc.Name, providerLimits(pc))
			names = append(names, pc.Name)
		}
		for _, old := range l.known {
			if !slices.Contains(names, old) {
				l.metrics.Forget(old)
			}
		}
		l.known = names
		return
	}
	l.m.SetPolicy(leasePolicy(cfg))
	actors := l.b.actorMap()
	rs := make([]lease.Resource, 0, len(cfg.Providers))
	for _, pc := range cfg.Providers {
		a, ok := actors[pc.Name]
		if !ok {
			continue
		}
		name := pc.Name
		rs = append(rs, lease.Resource{Kind: "provider", Name: name, Limits: providerLimits(pc),
			Holder: lease.ActorHolder{Actor: a, Backlog: func() []int { return l.backlog(name) }, OnApply: l.kick}})
	}
	l.m.Set(append(rs, l.keyResources(cfg, runtime)...))
}

// keyResources are the leases of the keys with limits of their own: the
// file's, and those made at run time (a name in the file wins).
func (l *leases) keyResources(cfg *configs.Config, runtime []gateway.Key) []lease.Resource {
	if l.quotas == nil || l.quotas.Limits == nil {
		return nil
	}
	var rs []lease.Resource
	seen := make(map[string]bool)
	add := func(name string, kl configs.KeyLimits) {
		if seen[name] || !keylimits.Limited(kl) {
			return
		}
		seen[name] = true
		rs = append(rs, lease.Resource{Kind: "key", Name: name,
			Limits: lease.Limits{RPM: kl.RPM, InputTPM: kl.InputTPM, OutputTPM: kl.OutputTPM, MaxConcurrency: kl.MaxConcurrency},
			Holder: lease.ActorHolder{Actor: l.quotas.Limits.Actor(name, kl),
				Backlog: func() []int { return l.set.KeyParkedByLane(name) }, OnApply: l.kick}})
	}
	for _, kc := range cfg.Keys {
		add(kc.Name, kc.KeyLimits)
	}
	for _, k := range runtime {
		add(k.Name, k.Limits)
	}
	return rs
}

// providerLimits are a provider's configured limits.
func providerLimits(pc configs.Provider) lease.Limits {
	return lease.Limits{RPM: pc.RPM, InputTPM: pc.InputTPM, OutputTPM: pc.OutputTPM, MaxConcurrency: pc.MaxConcurrency}
}

// backlog counts the requests parked per lane on routes whose targets
// call provider.
func (l *leases) backlog(provider string) []int {
	r := l.b.router.Load()
	if r == nil {
		return nil
	}
	calls := r.RouteOwnProviders()
	parked := l.set.ParkedByRoute()
	out := make([]int, len(parked))
	for i, routes := range parked {
		for route, n := range routes {
			if slices.Contains(calls[route], provider) {
				out[i] += n
			}
		}
	}
	return out
}

// Check fails while the relay runs on a safe share cut off from its
// cluster (part of /readyz).
func (l *leases) Check() error {
	if l == nil || l.m == nil {
		return nil
	}
	return l.m.Check()
}

// GrantedShares reports per provider the share of its limits this relay
// holds (for the status page); nil for a relay alone.
func (l *leases) GrantedShares() map[string]float64 {
	if l == nil || l.m == nil {
		return nil
	}
	out := map[string]float64{}
	for _, st := range l.m.Statuses() {
		if st.Resource.Kind == "provider" {
			out[st.Resource.Name] = st.Fraction
		}
	}
	return out
}
