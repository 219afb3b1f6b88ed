// This file wires the operator's status page (gateway/status) on
// admin_listen: its sources are the builder's actors and router, the
// lanes, the jobs service, JetStream and the metrics registry.

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/gateway/metering"
	"github.com/relaygw/relay/gateway/status"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
)

// ProviderStates snapshots the current providers' actors.
func (b *builder) ProviderStates() []actor.State {
	as := b.Actors()
	out := make([]actor.State, 0, len(as))
	for _, a := range as {
		out = append(out, a.State())
	}
	return out
}

// RouteInfos describes the routes of the latest configuration committed.
func (b *builder) RouteInfos() []workers.RouteInfo {
	if r := b.router.Load(); r != nil {
		return r.RouteInfos()
	}
	return nil
}

// AdminToken is the admin.token of the latest configuration committed.
func (b *builder) AdminToken() string {
	if t := b.admin.Load(); t != nil {
		return *t
	}
	return ""
}

// statusDeps are what the status page reads.
type statusDeps struct {
	b     *builder
	lanes *lanes.Set
	jobs  *jobs.Service
	js    jetstream.JetStream
	reg   prometheus.Gatherer
	ready func() error
	log   *slog.Logger
	meter *metering.Meter // serves GET /admin/usage
	auth  *status.Auth    // the admin token check, shared with the admin API
	// shares reports the granted share of each provider when clustered
	// (nil: none).
	shares *leases
}

// startStatus starts the status page's metric sampler and returns the
// page's handler on mux, and the sampler's stop.
func startStatus(d statusDeps, mux *http.ServeMux) (stop func()) {
	win := status.NewWindow(d.reg, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		win.Run(ctx)
	}()
	src := status.Sources{
		Lanes: d.lanes, Providers: d.b, Routes: d.b, Jobs: d.jobs,
		Streams: status.NewStreamSource(d.js), Window: win, Ready: d.ready, Version: version,
	}
	if d.shares != nil && d.shares.m != nil {
		src.Shares = d.shares
	}
	if d.meter != nil {
		src.Spend = meterSpend{d.meter}
	}
	col := status.NewCollector(src)
	status.NewHandler(col, d.auth, d.log).Register(mux)
	if d.meter != nil {
		mux.Handle("/admin/usage", metering.AdminHandler(d.meter, d.auth.AllowAdminAPI))
	}
	return func() { cancel(); <-done }
}

// meterSpend reads the keys' usage of a day for the status page from the
// metering counters, as GET /admin/usage does: every relay's calls,
// flushed to the counters bucket about every second.
type meterSpend struct{ m *metering.Meter }

var _ status.SpendSource = meterSpend{}

// KeySpend reads every key's usage on day.
func (s meterSpend) KeySpend(ctx context.Context, day time.Time) ([]status.KeySpend, error) {
	rep, err := s.m.Usage(ctx, day, day)
	switch {
	case errors.Is(err, metering.ErrNoStore):
		return nil, fmt.Errorf("%w: %w", status.ErrNoMetering, err)
	case err != nil:
		return nil, fmt.Errorf("read usage counters: %w", err)
	}
	out := make([]status.KeySpend, 0, len(rep.Keys))
	for _, ku := range rep.Keys {
		t := ku.Total
		out = append(out, status.KeySpend{Key: ku.Key, Requests: nonNeg(t.Requests), InputTokens: nonNeg(t.InputTokens),
			CacheReadTokens: nonNeg(t.CacheReadTokens), CacheWriteTokens: nonNeg(t.CacheWriteTokens),
			OutputTokens: nonNeg(t.OutputTokens), SpendUSD: t.CostUSD})
	}
	return out, nil
}

// nonNeg converts a count to unsigned (a negative count is 0).
func nonNeg(n int64) uint64 { return uint64(max(n, 0)) }
