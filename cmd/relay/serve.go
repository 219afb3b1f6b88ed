package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/gateway/keystore"
	"github.com/relaygw/relay/gateway/metering"
	"github.com/relaygw/relay/gateway/status"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/callbacks"
	"github.com/relaygw/relay/workers/keylimits"
	"github.com/relaygw/relay/workers/logctx"
	"github.com/relaygw/relay/workers/simupstream"
)

// serve runs the gateway until ctx is cancelled, then shuts down in the
// reverse order of start: stop accepting HTTP and finish in-flight
// requests within shutdown_grace, then close NATS, then the simulator.
func serve(ctx context.Context, path string, stderr io.Writer) error {
	// SIGHUP is subscribed before anything else and until serve returns:
	// its default action ends the process, so a reload asked for while
	// starting or while draining in-flight requests must not kill it.
	hup, stopHup := hupSignals()
	defer stopHup()
	cfg, err := configs.Load(path)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log.Level)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	wm := workers.NewMetrics(reg)

	var cleanups []func(context.Context)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i](sctx)
		}
	}()
	stopTracing, err := setupTracing(ctx, cfg.Tracing, log)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func(c context.Context) {
		if err := stopTracing(c); err != nil {
			log.Warn("tracing shutdown", "error", err)
		}
	})

	if cfg.Simulator != nil {
		sim, err := simupstream.Start(ctx, cfg.Simulator.Listen, simupstream.Options{
			Latency:       cfg.Simulator.Latency.Std(),
			TokenInterval: cfg.Simulator.TokenInterval.Std(),
			OutputTokens:  24,
			Echo:          cfg.Simulator.Echo,
		})
		if err != nil {
			return fmt.Errorf("start simulator: %w", err)
		}
		log.Info("simulated upstream started", "url", sim.URL())
		cleanups = append(cleanups, func(context.Context) { _ = sim.Close() })
	}

	nconn, err := startNATS(ctx, cfg, log)
	if err != nil {
		return err
	}
	nc, natsChecks := nconn.nc, nconn.checks
	cleanups = append(cleanups, nconn.close)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	decl := assets.New(js, assets.Options{Replicas: cfg.NATS.ReplicaCount(), Logger: log, Registry: reg})
	var set *lanes.Set
	if err := assets.UntilPlaced(ctx, log, "open lanes", func(ctx context.Context) (err error) {
		set, err = lanes.Open(ctx, lanes.Options{Lanes: laneSpecs(cfg), JetStream: js, Registry: reg, Logger: log, Assets: decl})
		return err
	}); err != nil {
		return err
	}
	cleanups = append(cleanups, func(context.Context) { _ = set.Close() })

	meter, err := openMeter(ctx, js, decl, cfg, log, reg)
	if err != nil {
		return err
	}
	// The meter stops after the jobs and the gateway (cleanups run in
	// reverse): it publishes what they recorded and flushes its counters
	// before NATS closes.
	cleanups = append(cleanups, meter.Stop)

	b := &builder{log: log, metrics: wm, onRelease: set.Kick}
	built, err := b.build(cfg)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func(context.Context) { b.closeIdle() })
	reg.MustRegister(workers.NewActorCollector(b.Actors))

	var svc *jobs.Service
	runner := &gateway.JobRunner{Router: b.Router, Lanes: set, MaxJSONDepth: cfg.MaxJSONDepth, Meter: meter}
	if err := assets.UntilPlaced(ctx, log, "open jobs", func(ctx context.Context) (err error) {
		svc, err = openJobs(ctx, js, decl, cfg, runner, log, reg)
		return err
	}); err != nil {
		return err
	}
	// The keys' limits are held for the cluster by leases with the
	// providers'; their budgets by RELAY_BUDGETS (quotas.go).
	quotas := &gateway.Quotas{Limits: keylimits.New(keylimits.Options{})}
	// Jobs carry only their key's name: keys made at run time are found
	// in the gateway's table, once there is a gateway.
	var front atomic.Pointer[gateway.Server]
	quotas.Lookup = func(name string) (gateway.Key, bool) {
		if gw := front.Load(); gw != nil {
			return gw.RuntimeKey(name)
		}
		return gateway.Key{}, false
	}
	// Leases start once the jobs' assets are placed (their bucket adds no
	// load to a cluster still placing those), before jobs run and the API listens, and
	// stop before NATS closes (cleanups run in reverse).
	leased, stopLeases := startLeases(cfg, js, decl, b, set, quotas, log, reg)
	cleanups = append(cleanups, func(context.Context) { stopLeases() })
	// The budgets' bucket is declared last, before jobs run and the API
	// listens.
	if err := assets.UntilPlaced(ctx, log, "open budgets", func(ctx context.Context) (err error) {
		var stop func()
		quotas.Budgets, stop, err = openBudgets(ctx, decl, reg, log)
		if err == nil {
			cleanups = append(cleanups, func(context.Context) { stop() })
		}
		return err
	}); err != nil {
		return err
	}
	runner.Quotas = quotas
	jobsCtx, stopJobs := context.WithCancel(context.Background())
	jobsDone := make(chan struct{})
	go func() {
		defer close(jobsDone)
		if err := svc.Run(jobsCtx); err != nil {
			log.Error("jobs stopped", "error", err)
		}
	}()
	// Jobs stop before NATS closes: running ones go back to their queue.
	cleanups = append(cleanups, func(context.Context) { stopJobs(); <-jobsDone })
	storeReady, stopHealth := watchStore(natsChecks, svc, set, log, reg)
	cleanups = append(cleanups, func(context.Context) { stopHealth() })
	ready := func() error {
		if err := storeReady(); err != nil {
			return err
		}
		return leased.Check()
	}

	gw := gateway.New(built.gateway, gateway.Options{}, gateway.Deps{Logger: log, Registry: reg, Ready: ready, Lanes: set, Jobs: svc, Meter: meter, Quotas: quotas, Budgets: quotas})
	front.Store(gw)

	keys := newRuntimeKeys(log, reg, gw, nconn.srv, cfg, built.tenants, built.users)
	keys.onKeys = leased.setRuntimeKeys
	store, stopKeys, err := startKeys(ctx, js, decl, keys)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func(context.Context) { stopKeys() })
	adminAuth := status.NewAuth(b.AdminToken)
	keysAdmin := keystore.NewAdmin(keystore.AdminOptions{Store: store, Auth: adminAuth, Config: b.Config, Logger: log, Registry: reg})

	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_config_reloads_total",
		Help: "Configuration reloads by result (success or failure).",
	}, []string{"result"})
	reloads.WithLabelValues("success")
	reloads.WithLabelValues("failure")
	reg.MustRegister(reloads)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	var wg sync.WaitGroup
	serveErr := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveErr <- gw.Serve(ln)
	}()
	log.Info("relay listening", "addr", ln.Addr().String(), "config", path, "version", version)

	var admin *http.Server
	if cfg.AdminListen != "" {
		aln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			_ = gw.Shutdown(context.Background())
			wg.Wait()
			return fmt.Errorf("listen admin %s: %w", cfg.AdminListen, err)
		}
		mux := adminMux()
		stopStatus := startStatus(statusDeps{b: b, lanes: set, jobs: svc, js: js, reg: reg, ready: ready, log: log, meter: meter, auth: adminAuth, shares: leased}, mux)
		keysAdmin.Register(mux)
		cleanups = append(cleanups, func(context.Context) { stopStatus() })
		admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := admin.Serve(aln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("serve admin: %w", err)
			}
		}()
		log.Info("admin listening", "addr", aln.Addr().String())
	}

	rl := &reloader{path: path, hup: hup, log: log, builder: b, gateway: gw, lanes: set, jobs: svc, keys: keys, counter: reloads, leases: leased}
	rctx, stopReload := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rl.run(rctx)
	}()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "grace_s", cfg.ShutdownGrace.Std().Seconds())
	case runErr = <-serveErr:
		log.Error("server failed", "error", runErr)
	}
	stopReload()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace.Std())
	defer cancel()
	if err := gw.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests cut at the end of the grace period", "error", err)
	}
	if admin != nil {
		_ = admin.Shutdown(sctx)
	}
	wg.Wait()
	log.Info("stopped")
	return runErr
}

// openMeter declares the usage stream and counters bucket and starts the
// meter that records every request's, job's and batch item's usage.
func openMeter(ctx context.Context, js jetstream.JetStream, decl *assets.Declarer, cfg *configs.Config,
	log *slog.Logger, reg prometheus.Registerer) (*metering.Meter, error) {
	var store *metering.Store
	if err := assets.UntilPlaced(ctx, log, "open usage store", func(ctx context.Context) (err error) {
		store, err = metering.OpenStore(ctx, js, decl, metering.StoreOptions{
			Retention: cfg.Usage.Retention.Std(), CounterRetention: cfg.Usage.CounterRetention.Std()})
		return err
	}); err != nil {
		return nil, err
	}
	m := metering.New(metering.Options{Registry: reg, Logger: log, Store: store})
	m.Start()
	return m, nil
}

// openJobs opens the asynchronous jobs service over JetStream, with
// callbacks signed and sent by workers/callbacks.
func openJobs(ctx context.Context, js jetstream.JetStream, decl *assets.Declarer, cfg *configs.Config, r jobs.Runner,
	log *slog.Logger, reg prometheus.Registerer) (*jobs.Service, error) {
	signer, err := callbackSigner(ctx, decl, cfg.Callbacks, log)
	if err != nil {
		return nil, err
	}
	allowPrivate := cfg.Callbacks.AllowPrivateNetworks
	schedule := cfg.Callbacks.Schedule()
	deliverer := callbacks.NewDeliverer(callbacks.DelivererOptions{
		Client:      callbacks.NewClient(callbacks.ClientOptions{AllowPrivate: allowPrivate}),
		Signer:      signer,
		MaxAttempts: len(schedule) + 1, // the jobs service follows the schedule
	})
	o := jobs.Options{
		ResultTTL:        cfg.Jobs.ResultTTL.Std(),
		Workers:          cfg.Jobs.Workers,
		Lanes:            laneWaits(laneSpecs(cfg)),
		Callbacks:        callbackSender{deliverer},
		CallbackTimeout:  callbacks.DefaultTimeout,
		CallbackSchedule: schedule,
		CallbackURLs:     callbacks.Checker{AllowPrivate: allowPrivate},
		ShutdownGrace:    cfg.ShutdownGrace.Std(),
		Logger:           log,
		Registry:         reg,
		Assets:           decl,
	}
	if cfg.NATS.URL != "" || cfg.NATS.Cluster != nil {
		// Other relays may share the queue: leave jobs this relay has no
		// capacity for to them.
		o.MaxWaiting, o.HandBack = sharedMaxWaiting, sharedHandBack
	}
	svc, err := jobs.Open(ctx, js, r, o)
	if err != nil {
		return nil, fmt.Errorf("open jobs: %w", err)
	}
	return svc, nil
}

// With a shared NATS (nats.url or nats.cluster), a relay holds at most
// sharedMaxWaiting queued jobs waiting for its capacity, and gives back
// one not started within sharedHandBack, for relays with capacity.
const (
	sharedMaxWaiting = 4
	sharedHandBack   = 2 * time.Second
)

// callbackSender adapts a callbacks.Deliverer to jobs.CallbackSender (the
// two packages' callback types have the same fields).
type callbackSender struct{ *callbacks.Deliverer }

// Attempt makes one delivery attempt of a.
func (c callbackSender) Attempt(ctx context.Context, a jobs.CallbackAttempt) jobs.CallbackResult {
	return jobs.CallbackResult(c.Deliverer.Attempt(ctx, callbacks.Callback(a)))
}

// laneWaits maps lanes to their max_wait, for jobs.
func laneWaits(specs []lanes.Spec) map[string]time.Duration {
	waits := make(map[string]time.Duration, len(specs))
	for _, l := range specs {
		waits[l.Name] = l.MaxWait
	}
	return waits
}

// watchStore runs the job store's health loop (checks natsChecks, then
// the jobs service's and the lanes' streams, repairing what it can) until
// stop, and returns the readiness check built on it: NATS checks are
// cheap and run at each call; the rest is the loop's last finding.
func watchStore(natsChecks []jobs.HealthCheck, svc *jobs.Service, set *lanes.Set, log *slog.Logger, reg prometheus.Registerer) (ready func() error, stop func()) {
	checks := append(natsChecks,
		jobs.HealthCheck{Name: "quorum", Check: svc.CheckQuorum},
		jobs.HealthCheck{Name: "jobs", Check: svc.CheckStore, Repair: svc.RepairStore},
		// The lanes' mirror is a copy for operators: while it is broken
		// requests are still parked and jobs stored, so it is repaired
		// here but does not make the relay unready.
		jobs.HealthCheck{Name: "lanes", Check: set.CheckMirror, Repair: set.RepairMirror, Advisory: true})
	h := jobs.NewHealth(jobs.HealthOptions{Checks: checks, Trigger: svc.StoreErrors(), Registry: reg, Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	ready = func() error {
		for _, c := range natsChecks {
			if err := c.Check(context.Background()); err != nil {
				return fmt.Errorf("job store unavailable: %w", err)
			}
		}
		if err := h.Err(); err != nil {
			return fmt.Errorf("job store unavailable: %w", err)
		}
		return nil
	}
	return ready, func() { cancel(); <-done }
}

// laneSpecs maps the configured lanes onto lane specs.
func laneSpecs(cfg *configs.Config) []lanes.Spec {
	specs := make([]lanes.Spec, 0, len(cfg.Lanes))
	for _, l := range cfg.Lanes {
		specs = append(specs, lanes.Spec{Name: l.Name, MaxDepth: l.MaxDepth, MaxWait: l.MaxWait.Std(), MinShare: l.MinShare})
	}
	return specs
}

// natsConn is the relay's NATS connection, with the health checks of NATS
// itself (cheap; the embedded server's repairs itself after a write
// error), a closer, and the embedded server (nil with nats.url).
type natsConn struct {
	nc     *nats.Conn
	checks []jobs.HealthCheck
	close  func(context.Context)
	srv    *embeddednats.Server
}

// startNATS starts the embedded server, or connects to nats.url.
func startNATS(ctx context.Context, cfg *configs.Config, log *slog.Logger) (natsConn, error) {
	c := cfg.NATS
	if c.URL != "" {
		opts, err := natsClientOptions(c)
		if err != nil {
			return natsConn{}, err
		}
		// No reconnect buffer: while disconnected, a job publish fails at
		// once (503) instead of being sent after the client gave up on it.
		opts = append(opts, nats.ReconnectBufSize(-1))
		nc, err := embeddednats.Connect(ctx, c.URL, opts...)
		if err != nil {
			return natsConn{}, fmt.Errorf("connect nats: %w", err)
		}
		log.Info("connected to external NATS", "servers", nc.Servers())
		return natsConn{nc: nc, checks: []jobs.HealthCheck{connCheck(nc)}, close: func(context.Context) { _ = nc.Drain(); nc.Close() }}, nil
	}
	tenants, users, err := natsAccess(cfg)
	if err != nil {
		return natsConn{}, err
	}
	opts := embeddednats.Options{
		ServerName: c.ServerName,
		Listen:     c.Listen,
		StoreDir:   c.StoreDir,
		Logger:     natsLogger(log),
		Tenants:    tenants,
		Users:      users,
		MaxPayload: natsMaxPayload(cfg.MaxBodyBytes),
	}
	if cl := c.Cluster; cl != nil {
		opts.Cluster = &embeddednats.ClusterOptions{Name: cl.Name, Listen: cl.Listen, Routes: cl.Routes, Password: cl.Password}
	}
	switch c.Sync {
	case "":
	case "always":
		opts.SyncAlways = true
	default:
		d, err := time.ParseDuration(c.Sync)
		if err != nil {
			return natsConn{}, fmt.Errorf("nats.sync: %w", err)
		}
		opts.SyncInterval = d
	}
	ns, err := embeddednats.Start(ctx, opts)
	if err != nil {
		return natsConn{}, fmt.Errorf("start embedded nats: %w", err)
	}
	if c.Cluster != nil {
		log.Info("embedded NATS joining its JetStream cluster", "cluster", c.Cluster.Name, "server_name", c.ServerName,
			"listen", c.Cluster.Listen, "routes", c.Cluster.Routes)
		if err := ns.WaitJetStream(ctx); err != nil {
			_ = ns.Shutdown(context.Background())
			return natsConn{}, err
		}
		log.Info("JetStream cluster ready", "cluster", c.Cluster.Name)
	}
	nc, err := ns.Connect(nats.Name("relay"))
	if err != nil {
		_ = ns.Shutdown(context.Background())
		return natsConn{}, fmt.Errorf("connect embedded nats: %w", err)
	}
	if url := ns.ClientURL(); url != "" {
		log.Info("embedded NATS listening", "url", url, "store_dir", c.StoreDir, "tenants", len(tenants), "users", len(users))
	}
	checks := []jobs.HealthCheck{
		{Name: "jetstream", Check: func(context.Context) error { return ns.StoreError() },
			Repair: func(context.Context) error { return ns.RecoverJetStream() }},
		connCheck(nc),
		{Name: "cluster", Check: func(context.Context) error { return ns.ClusterError() }},
	}
	closer := func(ctx context.Context) {
		_ = nc.Drain()
		nc.Close()
		if err := ns.Shutdown(ctx); err != nil {
			log.Warn("embedded NATS shutdown", "error", err)
		}
	}
	return natsConn{nc: nc, checks: checks, close: closer, srv: ns}, nil
}

// connCheck fails while nc is not connected (it reconnects by itself).
func connCheck(nc *nats.Conn) jobs.HealthCheck {
	return jobs.HealthCheck{Name: "nats", Check: func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("nats connection lost (%s)", strings.ToLower(nc.Status().String()))
		}
		return nil
	}}
}

// newLogger returns the JSON logger on w at level.
func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(logctx.Handler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})))
}

// adminMux serves pprof; it is mounted on admin_listen only, with the
// status page (status.go).
func adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// hupSignals delivers SIGHUP, which asks for a configuration reload.
func hupSignals() (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch, func() { signal.Stop(ch) }
}
