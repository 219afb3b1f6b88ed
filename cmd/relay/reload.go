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
// it validates the new file, builds it, and swaps it in atomically. An
// invalid file leaves the running configuration in place; it is logged
// and counted.
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

// reload loads, validates, builds and swaps in the configuration.
func (r *reloader) reload(why string) {
	cfg, err := configs.Load(r.path)
	if err == nil {
		var gc gateway.Config
		if gc, err = r.builder.build(cfg); err == nil {
			r.gateway.SetConfig(gc)
			if err := errors.Join(r.lanes.Update(laneSpecs(cfg)), r.jobs.SetLaneWaits(laneWaits(cfg))); err != nil {
				r.log.Warn("lanes update", "error", err)
			}
			r.updateNATSAccess(cfg)
			r.counter.WithLabelValues("success").Inc()
			r.log.Info("configuration reloaded", "trigger", why, "path", r.path)
			return
		}
	}
	r.counter.WithLabelValues("failure").Inc()
	r.log.Error("configuration reload refused; the running configuration stays", "trigger", why, "path", r.path, "error", err)
}

// updateNATSAccess gives the embedded server's client port the reloaded
// keys and nats.users: removed or changed ones can no longer connect, and
// their open connections are closed. nats.listen itself needs a restart.
func (r *reloader) updateNATSAccess(cfg *configs.Config) {
	if r.nats == nil {
		return
	}
	tenants, users, err := natsAccess(cfg)
	if err == nil {
		err = r.nats.SetAccess(tenants, users)
	}
	if err != nil {
		r.log.Error("NATS client access not updated", "error", err)
	}
}
