// This file wires the keys made through the admin API (gateway/keystore)
// into what serves: the store's watcher and every configuration reload
// both rebuild the gateway's runtime keys and the embedded NATS server's
// tenants, so a key works (or stops) on the HTTP API and the NATS client
// port alike, and a reload keeps the store's keys.

package main

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/gateway/keystore"
	"github.com/relaygw/relay/lanes/assets"
)

// keysLoadWait bounds how long serve waits, at start, for the store's
// keys before it listens anyway (they follow when the store answers).
const keysLoadWait = 10 * time.Second

// runtimeKeys holds the latest store records and configuration and puts
// what they make in place.
type runtimeKeys struct {
	log   *slog.Logger
	gw    *gateway.Server
	nats  *embeddednats.Server // nil with nats.url
	gauge *prometheus.GaugeVec

	mu      sync.Mutex
	recs    []keystore.Record
	cfg     *configs.Config
	tenants []embeddednats.Tenant // the file's keys
	users   []embeddednats.User
	loaded  chan struct{} // closed at the store's first table
	once    sync.Once
	// onKeys, when set before the watch starts, is told every new table
	// of keys made at run time (the leases of their limits).
	onKeys func([]gateway.Key)
}

// newRuntimeKeys returns the wiring for gw and nats (nil with nats.url)
// under cfg, whose tenants and users the NATS server already has.
func newRuntimeKeys(log *slog.Logger, reg prometheus.Registerer, gw *gateway.Server, nats *embeddednats.Server,
	cfg *configs.Config, tenants []embeddednats.Tenant, users []embeddednats.User) *runtimeKeys {
	k := &runtimeKeys{log: log, gw: gw, nats: nats, cfg: cfg, tenants: tenants, users: users, loaded: make(chan struct{}),
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_api_keys",
			Help: "Keys made through the admin API, as this relay's watcher last saw them, by state (active or revoked).",
		}, []string{"state"})}
	k.gauge.WithLabelValues("active")
	k.gauge.WithLabelValues("revoked")
	reg.MustRegister(k.gauge)
	return k
}

// setRecords takes the store's table (from the watcher).
func (k *runtimeKeys) setRecords(recs []keystore.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.recs = slices.Clone(recs)
	k.apply()
	k.once.Do(func() { close(k.loaded) })
}

// setConfig takes a reloaded configuration, the file's tenants and the
// NATS users.
func (k *runtimeKeys) setConfig(cfg *configs.Config, tenants []embeddednats.Tenant, users []embeddednats.User) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cfg, k.tenants, k.users = cfg, tenants, users
	k.apply()
}

// apply puts the current records and configuration in place.
func (k *runtimeKeys) apply() {
	keys := keystore.GatewayKeys(k.recs, k.cfg, time.Now())
	k.gw.SetRuntimeKeys(keys)
	if k.onKeys != nil {
		k.onKeys(keys)
	}
	k.gauge.WithLabelValues("active").Set(float64(len(keys)))
	revoked := 0
	for _, r := range k.recs {
		if r.Revoked {
			revoked++
		}
	}
	k.gauge.WithLabelValues("revoked").Set(float64(revoked))
	if k.nats == nil {
		return
	}
	tenants := slices.Clone(k.tenants)
	for _, gk := range keys {
		tenants = append(tenants, embeddednats.Tenant{Name: gk.Name, SHA256: gk.SHA256})
		if gk.Grace != nil {
			tenants = append(tenants, embeddednats.Tenant{Name: gk.Name, SHA256: gk.Grace.SHA256})
		}
	}
	if err := k.nats.SetAccess(tenants, k.users); err != nil {
		k.log.Error("NATS client access not updated with the admin API's keys", "error", err)
	}
}

// watch runs the store's watcher until ctx ends, starting it again a
// second after it fails.
func (k *runtimeKeys) watch(ctx context.Context, store *keystore.Store) {
	for {
		err := store.Watch(ctx, k.setRecords, func(name string, err error) {
			k.log.Error("key record unreadable; skipped", "key", name, "error", err)
		})
		if ctx.Err() != nil {
			return
		}
		k.log.Warn("key store watch stopped; restarting", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// startKeys opens the key store, starts its watcher (stopped by the
// returned stop) and waits, up to keysLoadWait, for its first table.
func startKeys(ctx context.Context, js jetstream.JetStream, decl *assets.Declarer, k *runtimeKeys) (*keystore.Store, func(), error) {
	var store *keystore.Store
	if err := assets.UntilPlaced(ctx, k.log, "open keys", func(ctx context.Context) (err error) {
		store, err = keystore.Open(ctx, decl)
		return err
	}); err != nil {
		return nil, nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.watch(wctx, store)
	}()
	select {
	case <-k.loaded:
	case <-ctx.Done():
	case <-time.After(keysLoadWait):
		k.log.Warn("keys made through the admin API not loaded yet; serving the file's keys meanwhile")
	}
	return store, func() { cancel(); <-done }, nil
}
