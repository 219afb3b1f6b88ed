// This file wires the capacity leases (workers/lease) that hold each
// provider's limits for a whole cluster of relays: one lease manager per
// relay when it shares NATS with others, none for a relay alone.

package main

import (
	"context"
	"log/slog"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/assets"
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
}

// startLeases registers the leases' metrics and, when clustered, starts
// the manager over js; stop ends it (before NATS closes).
func startLeases(cfg *configs.Config, js jetstream.JetStream, decl *assets.Declarer, b *builder, set *lanes.Set,
	log *slog.Logger, reg prometheus.Registerer) (l *leases, stop func()) {
	l = &leases{metrics: lease.NewMetrics(reg), b: b, set: set, kick: set.Kick}
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
	log.Info("cluster-wide provider limits: leases on", "relay", l.m.Relay(), "lease_period", cfg.NATS.LeasePeriod.Std().String())
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

// apply puts cfg's providers under leases (or, alone, shows their whole
// limits); the builder has committed cfg.
func (l *leases) apply(cfg *configs.Config) {
	if l.m == nil {
		var names []string
		for _, pc := range cfg.Providers {
			l.metrics.Whole(pc.Name)
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
	l.m.Set(rs)
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
	calls := r.RouteProviders()
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
