// This file owns hot reload: watching the configuration file and SIGHUP,
// and swapping in a configuration only once the builder has built all
// of it (see build.go).

package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
)

// reloadDebounce gathers the several events an editor or a Kubernetes
// ConfigMap update makes into one reload.
const reloadDebounce = 250 * time.Millisecond

// reloader reloads the configuration when its file changes or on SIGHUP:
// it validates the new file, builds it aside, and swaps it in. An invalid
// file, or one that fails to build, leaves the running configuration in
// place; it is logged and counted.
type reloader struct {
	path    string
	hup     <-chan os.Signal // SIGHUP, subscribed for the whole of serve
	log     *slog.Logger
	builder *builder
	gateway *gateway.Server
	lanes   *lanes.Set
	jobs    *jobs.Service
	nats    *embeddednats.Server // nil with nats.url
	counter *prometheus.CounterVec
	leases  *leases // nil in tests that build no leases
}

// run watches until ctx is done. It watches the file's directory, not the
// file, because editors and Kubernetes replace files rather than write
// them in place.
func (r *reloader) run(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.log.Warn("config watch unavailable; reload with SIGHUP", "error", err)
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(r.path)); err != nil {
			r.log.Warn("config watch unavailable; reload with SIGHUP", "error", err)
		}
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	target, _ := filepath.Abs(r.path)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.hup:
			r.reload("sighup")
		case ev := <-events:
			if abs, _ := filepath.Abs(ev.Name); abs == target || filepath.Base(ev.Name) == "..data" {
				timer.Reset(reloadDebounce)
			}
		case err := <-errs:
			r.log.Warn("config watch error", "error", err)
		case <-timer.C:
			r.reload("file change")
		}
	}
}

// reload loads and validates the configuration, builds all of it aside,
// and only then swaps it in. A failure at any step before the swap
// changes nothing.
func (r *reloader) reload(why string) {
	cfg, err := configs.Load(r.path)
	var st *state
	if err == nil {
		st, err = r.builder.prepare(cfg)
	}
	if err != nil {
		r.counter.WithLabelValues("failure").Inc()
		r.log.Error("configuration reload refused; the running configuration stays", "trigger", why, "path", r.path, "error", err)
		return
	}
	r.swap(st)
	if r.leases != nil {
		r.leases.apply(cfg)
	}
	r.counter.WithLabelValues("success").Inc()
	r.log.Info("configuration reloaded", "trigger", why, "path", r.path)
}

// swap puts a built state in place: actors' limits and the router, the
// gateway's configuration, the lanes (and the jobs' view of their
// max_wait), and the embedded NATS server's
// client access. The lanes and NATS steps were checked when st was built;
// what can still fail there (resizing the lanes' mirror stream, listing
// NATS connections) is logged.
func (r *reloader) swap(st *state) {
	r.builder.commit(st)
	r.gateway.SetConfig(st.gateway)
	if err := errors.Join(r.lanes.Update(st.lanes), r.jobs.SetLaneWaits(laneWaits(st.lanes))); err != nil {
		r.log.Warn("lanes update", "error", err)
	}
	if r.nats != nil {
		if err := r.nats.SetAccess(st.tenants, st.users); err != nil {
			r.log.Error("NATS client access not updated", "error", err)
		}
	}
}
