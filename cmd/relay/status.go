// This file wires the operator's status page (gateway/status) on
// admin_listen: its sources are the builder's actors and router, the
// lanes, the jobs service, JetStream and the metrics registry.

package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

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
	col := status.NewCollector(src)
	status.NewHandler(col, status.NewAuth(d.b.AdminToken), d.log).Register(mux)
	return func() { cancel(); <-done }
}
