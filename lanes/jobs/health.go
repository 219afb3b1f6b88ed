package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The job store heals itself: a Health loop checks, in order, what storing
// jobs needs (the NATS connection, JetStream taking writes, the streams,
// buckets and consumers), repairs what it can, and tells readiness why
// jobs cannot be stored meanwhile.

// DefaultHealthInterval is how often a Health loop checks the store when
// nothing goes wrong.
const DefaultHealthInterval = 2 * time.Second

// healthMinGap bounds how often store errors may start a check.
const healthMinGap = 250 * time.Millisecond

// checkTimeout bounds one check or repair.
const checkTimeout = 5 * time.Second

// storeTrouble notes a store error for StoreErrors; it never blocks.
func (s *Service) storeTrouble() {
	select {
	case s.trouble <- struct{}{}:
	default:
	}
}

// StoreErrors receives a value (at most one waits) after a store error in
// Submit or in running jobs: a Health loop checks the store at once
// instead of at its next interval.
func (s *Service) StoreErrors() <-chan struct{} { return s.trouble }

// CheckStore reports the first stream, bucket or consumer the service
// needs that is missing ("stream RELAY_JOBS missing"), or why JetStream
// could not tell. It changes nothing.
func (s *Service) CheckStore(ctx context.Context) error {
	have := map[string]bool{}
	l := s.js.StreamNames(ctx)
	for n := range l.Name() {
		have[n] = true
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("list streams: %w", err)
	}
	for _, n := range []string{JobsStream, ResultsStream, CallbacksStream} {
		if !have[n] {
			return fmt.Errorf("stream %s missing", n)
		}
	}
	for _, b := range []string{StateBucket, IdemBucket, BatchesBucket, ExecutorsBucket} {
		if !have["KV_"+b] {
			return fmt.Errorf("bucket %s missing", b)
		}
	}
	for _, c := range [][2]string{{JobsStream, ExecutorConsumer}, {CallbacksStream, CallbackConsumer}} {
		if _, err := s.js.Consumer(ctx, c[0], c[1]); errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("consumer %s on %s missing", c[1], c[0])
		} else if err != nil {
			return fmt.Errorf("consumer %s on %s: %w", c[1], c[0], err)
		}
	}
	return nil
}

// RepairStore creates what CheckStore finds missing, with the
// configuration Open used (it declares everything again; what exists is
// left as it is). The executor's pulls pick up recreated consumers by
// themselves. Jobs in a deleted RELAY_JOBS are lost with it; records in a
// deleted RELAY_JOB_STATE are made again, queued, when their job runs.
func (s *Service) RepairStore(ctx context.Context) error {
	if _, _, err := s.declare(ctx); err != nil {
		return err
	}
	if _, err := s.declareBatches(ctx); err != nil {
		return err
	}
	if _, err := s.declareExecutors(ctx); err != nil {
		return err
	}
	return nil
}

// HealthCheck is one condition storing jobs needs.
type HealthCheck struct {
	// Name names the check in logs and labels
	// relay_job_store_repairs_total{what}.
	Name string
	// Check returns nil when the condition holds, else the reason it does
	// not ("stream RELAY_JOBS missing").
	Check func(ctx context.Context) error
	// Repair tries to make the condition hold again; nil means only
	// waiting helps (a lost connection reconnects by itself).
	Repair func(ctx context.Context) error
	// Advisory marks a condition that storing jobs does not need (the
	// lanes' mirror of parked requests): it is checked and repaired like
	// the others, but while it fails the store stays up, the checks after
	// it still run, and the reason is logged when it changes.
	Advisory bool
}

// HealthOptions configure a Health loop.
type HealthOptions struct {
	// Checks run in order at each pass; the first that fails and cannot be
	// repaired (and is not Advisory) is the reason the store is down, and
	// later checks wait.
	Checks []HealthCheck
	// Interval is the time between passes (default
	// DefaultHealthInterval).
	Interval time.Duration
	// Trigger starts a pass at once (at most every 250 ms); typically
	// Service.StoreErrors.
	Trigger <-chan struct{}
	// Registry registers relay_job_store_up and
	// relay_job_store_repairs_total; nil registers none.
	Registry prometheus.Registerer
	// Logger logs the store going down, repairs and recovery.
	Logger *slog.Logger
}

// Health checks and repairs the job store in a loop (Run) and reports its
// state (Err). It starts up: whoever builds it has just opened the store.
type Health struct {
	o       HealthOptions
	repairs *prometheus.CounterVec
	up      prometheus.GaugeFunc

	mu   sync.Mutex
	err  error
	pass sync.Mutex // one pass at a time

	advice map[string]string // advisory check -> why it fails; under pass
}

// NewHealth returns a Health loop, not running.
func NewHealth(o HealthOptions) *Health {
	if o.Interval <= 0 {
		o.Interval = DefaultHealthInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Health{o: o, repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relay_job_store_repairs_total",
		Help: "Repairs of the job store by the health loop, by what was repaired (jetstream: restarted after a write error; jobs, lanes: streams, buckets or consumers recreated)."},
		[]string{"what"})}
	h.up = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_job_store_up",
		Help: "1 when the job store takes jobs, 0 while it does not (see /readyz for why)."}, func() float64 {
		if h.Err() != nil {
			return 0
		}
		return 1
	})
	for _, c := range o.Checks {
		if c.Repair != nil {
			h.repairs.WithLabelValues(c.Name)
		}
	}
	if o.Registry != nil {
		o.Registry.MustRegister(h.repairs, h.up)
	}
	return h
}

// Err returns why jobs cannot be stored, as of the last pass, or nil.
func (h *Health) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Run checks the store every Interval, and at once on a Trigger, until
// ctx ends.
func (h *Health) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.o.Trigger:
			if gap := time.Since(last); gap < healthMinGap {
				t.Reset(healthMinGap - gap)
				continue
			}
		}
		h.Check(ctx)
		last = time.Now()
		t.Reset(h.o.Interval)
	}
}

// Check runs one pass now: each check in order, repairing what fails,
// and returns the new state (Err).
func (h *Health) Check(ctx context.Context) error {
	h.pass.Lock()
	defer h.pass.Unlock()
	var down error
	for _, c := range h.o.Checks {
		err := h.run(ctx, c)
		if c.Advisory {
			h.advise(c.Name, err)
			continue
		}
		if down = err; down != nil {
			break
		}
	}
	h.set(down)
	return down
}

// advise records the outcome of advisory check name, logging changes.
func (h *Health) advise(name string, err error) {
	prev, failed := h.advice[name]
	switch {
	case err != nil && (!failed || prev != err.Error()):
		if h.advice == nil {
			h.advice = map[string]string{}
		}
		h.advice[name] = err.Error()
		h.o.Logger.Warn("job store: an optional part is unavailable; jobs are still stored", "what", name, "reason", err.Error())
	case err == nil && failed:
		delete(h.advice, name)
		h.o.Logger.Info("job store: an optional part is available again", "what", name)
	}
}

// run runs one check, and its repair when it fails; it returns the reason
// it still fails.
func (h *Health) run(ctx context.Context, c HealthCheck) error {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	err := c.Check(cctx)
	if err == nil || c.Repair == nil || ctx.Err() != nil {
		return err
	}
	if h.Err() == nil && !c.Advisory {
		h.set(err) // down while it is repaired
	}
	if rerr := c.Repair(cctx); rerr != nil {
		return fmt.Errorf("%w (repair failed: %w)", err, rerr)
	}
	if err2 := c.Check(cctx); err2 != nil {
		return fmt.Errorf("%w (still, after a repair)", err2)
	}
	h.repairs.WithLabelValues(c.Name).Inc()
	h.o.Logger.Warn("job store repaired", "what", c.Name, "problem", err.Error())
	return nil
}

// set records the state, logging changes.
func (h *Health) set(err error) {
	h.mu.Lock()
	prev := h.err
	h.err = err
	h.mu.Unlock()
	switch {
	case err != nil && (prev == nil || prev.Error() != err.Error()):
		h.o.Logger.Error("job store unavailable", "reason", err.Error())
	case err == nil && prev != nil:
		h.o.Logger.Info("job store available again")
	}
}

// quorumStreams are the streams a submission writes to.
var quorumStreams = []string{JobsStream, "KV_" + StateBucket, "KV_" + IdemBucket}

// CheckQuorum reports a stream that submissions write to and that has no
// leader now (in a cluster: fewer than a majority of its replicas
// reachable), or why JetStream could not tell. It changes nothing.
func (s *Service) CheckQuorum(ctx context.Context) error {
	for _, name := range quorumStreams {
		st, err := s.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // CheckStore reports (and repairs) it
		}
		if err != nil {
			return fmt.Errorf("stream %s unreachable (no leader or no quorum?): %w", name, err)
		}
		if c := st.CachedInfo().Cluster; c != nil && c.Leader == "" {
			return fmt.Errorf("stream %s has no leader (no quorum of its replicas)", name)
		}
	}
	return nil
}
