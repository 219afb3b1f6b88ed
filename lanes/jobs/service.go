package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/relaygw/relay/workers/callbacks"
)

// Service ties the parts of the package together: its Options, Open (which
// checks them and declares the store) and Run (which starts the executor's
// and the callback deliveries' worker pools).

// Defaults for Options.
const (
	// DefaultResultTTL is jobs.result_ttl's default.
	DefaultResultTTL = 72 * time.Hour
	// DefaultWorkers bounds the jobs run at once.
	DefaultWorkers = 64
	// DefaultCallbackWorkers bounds the callback deliveries at once.
	DefaultCallbackWorkers = 16
	// DefaultAckWait is the executor's ack wait: how long a job whose
	// run was lost (a crash) waits before it runs again. Running jobs
	// send in-progress heartbeats every third of it.
	DefaultAckWait = 10 * time.Second
	// DefaultMaxInterrupted is the lost runs before a dead letter.
	DefaultMaxInterrupted = 5
	// DefaultLaneMaxWait is the retry patience of a lane not in Options.Lanes.
	DefaultLaneMaxWait = 24 * time.Hour
	// DefaultRetryBase is the first retry backoff ceiling.
	DefaultRetryBase = time.Second
	// DefaultRetryMax caps the retry backoff.
	DefaultRetryMax = 5 * time.Minute
)

// Options configure a Service. Zero fields take the defaults.
type Options struct {
	// ResultTTL is how long job records, idempotency keys and results are
	// kept (jobs.result_ttl); default DefaultResultTTL.
	ResultTTL time.Duration
	// Lanes maps lane names to their max_wait: how long after creation a
	// job keeps being retried when no provider can serve it. Lanes not
	// named get DefaultLaneMaxWait.
	Lanes map[string]time.Duration
	// Workers bounds the jobs run at once (default 64).
	Workers int
	// CallbackWorkers bounds the callback deliveries at once (default 16).
	CallbackWorkers int
	// CallbackMaxAttempts is callbacks.max_attempts (default 10).
	CallbackMaxAttempts int
	// CallbackBaseBackoff is the callback backoff base (default 1s).
	CallbackBaseBackoff time.Duration
	// CallbackMaxBackoff caps the callback backoff (default 10m).
	CallbackMaxBackoff time.Duration
	// Signer signs callbacks. It is required: callbacks are always signed.
	Signer *callbacks.Signer
	// AllowPrivate is callbacks.allow_private_networks: callback URLs may
	// reach loopback and private addresses.
	AllowPrivate bool
	// CallbackClient, if set, replaces the callback HTTP client (tests
	// with a TLS receiver); nil is callbacks.NewClient with AllowPrivate.
	CallbackClient *http.Client
	// Resolver resolves callback hosts for CheckCallbackURL; nil is the
	// system resolver.
	Resolver callbacks.Resolver
	// AckWait is the executor's ack wait; in-progress heartbeats go every
	// third of it while a job runs (default 10s).
	AckWait time.Duration
	// MaxInterrupted is how many runs of a job may be lost to crashes or
	// hangs before it is dead-lettered as failed (default 5).
	MaxInterrupted int
	// RetryBase and RetryMax shape the full-jitter backoff between tries
	// of a job no provider could serve (defaults 1s and 5m).
	RetryBase, RetryMax time.Duration
	// ShutdownGrace is how long running jobs may go on after Run's ctx
	// ends before their upstream calls are cancelled (and the jobs left
	// queued for the next start). Default 0: cancel at once.
	ShutdownGrace time.Duration
	// Logger logs problems; nil discards.
	Logger *slog.Logger
	// Registry registers the metrics; nil registers none.
	Registry prometheus.Registerer
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// BatchWindow is how long a message batch may process before its
	// unfinished items expire (default DefaultBatchWindow, 24h).
	BatchWindow time.Duration
	// MaxBatchRequests bounds the requests of one message batch (default
	// DefaultMaxBatchRequests, 100,000).
	MaxBatchRequests int
	// MaxJSONDepth bounds the nesting of batch items' params
	// (max_json_depth; 0 means wire.FallbackMaxDepth).
	MaxJSONDepth int
}

// Service stores, runs and reports asynchronous jobs. It is safe for
// concurrent use. Submit, Get and Cancel work as soon as Open returns; Run
// executes jobs and delivers callbacks until its ctx ends.
type Service struct {
	js      jetstream.JetStream
	state   jetstream.KeyValue
	idem    jetstream.KeyValue
	batches jetstream.KeyValue // message batches (batch.go)
	bcache  *batchCache
	runner  Runner
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	checker callbacks.Checker
	deliver *callbacks.Deliverer
	metrics *metrics

	runMu   sync.Mutex
	running bool

	trouble chan struct{} // one slot: a store error happened (StoreErrors)
	active  sync.Map      // ids of the jobs the executor handles now
}

// Open creates the streams and buckets idempotently and returns a Service
// that runs jobs with r.
func Open(ctx context.Context, js jetstream.JetStream, r Runner, o Options) (*Service, error) {
	if js == nil || r == nil {
		return nil, errors.New("jobs: JetStream and Runner are required")
	}
	if o.Signer == nil {
		return nil, fmt.Errorf("jobs: %w", callbacks.ErrUnsigned)
	}
	if o.ResultTTL <= 0 {
		o.ResultTTL = DefaultResultTTL
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.CallbackWorkers <= 0 {
		o.CallbackWorkers = DefaultCallbackWorkers
	}
	if o.CallbackMaxAttempts <= 0 {
		o.CallbackMaxAttempts = callbacks.DefaultMaxAttempts
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxInterrupted <= 0 {
		o.MaxInterrupted = DefaultMaxInterrupted
	}
	if o.RetryBase <= 0 {
		o.RetryBase = DefaultRetryBase
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.BatchWindow <= 0 {
		o.BatchWindow = DefaultBatchWindow
	}
	if o.MaxBatchRequests <= 0 {
		o.MaxBatchRequests = DefaultMaxBatchRequests
	}
	client := o.CallbackClient
	if client == nil {
		client = callbacks.NewClient(callbacks.ClientOptions{AllowPrivate: o.AllowPrivate})
	}
	s := &Service{
		js:      js,
		runner:  r,
		opts:    o,
		log:     o.Logger,
		now:     o.Now,
		checker: callbacks.Checker{Resolver: o.Resolver, AllowPrivate: o.AllowPrivate},
		trouble: make(chan struct{}, 1),
		deliver: callbacks.NewDeliverer(callbacks.DelivererOptions{
			Client:      client,
			Signer:      o.Signer,
			MaxAttempts: o.CallbackMaxAttempts,
			BaseBackoff: o.CallbackBaseBackoff,
			MaxBackoff:  o.CallbackMaxBackoff,
			Now:         o.Now,
		}),
	}
	var err error
	if s.state, s.idem, err = s.declare(ctx); err != nil {
		return nil, err
	}
	if s.batches, err = s.declareBatches(ctx); err != nil {
		return nil, err
	}
	s.bcache = &batchCache{entries: map[string]*cacheEntry{}}
	if o.Registry != nil {
		s.metrics = newMetrics(o.Registry, s)
	} else {
		s.metrics = newMetrics(nil, s)
	}
	return s, nil
}

// Run executes queued jobs with Options.Workers workers and delivers
// callbacks with Options.CallbackWorkers, until ctx ends. It then stops
// pulling, lets running jobs go on for Options.ShutdownGrace, cancels
// what is left (those jobs go back to queued, for the next start) and
// returns once every worker has exited. Run may be called once.
func (s *Service) Run(ctx context.Context) error {
	s.runMu.Lock()
	if s.running {
		s.runMu.Unlock()
		return errors.New("jobs: Run called twice")
	}
	s.running = true
	s.runMu.Unlock()

	jobs, err := s.js.Consumer(ctx, JobsStream, ExecutorConsumer)
	if err != nil {
		return fmt.Errorf("jobs: executor consumer: %w", err)
	}
	cbs, err := s.js.Consumer(ctx, CallbacksStream, CallbackConsumer)
	if err != nil {
		return fmt.Errorf("jobs: callback consumer: %w", err)
	}
	// Running work outlives ctx by the grace period.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopGrace := context.AfterFunc(ctx, func() {
		if s.opts.ShutdownGrace <= 0 {
			cancelWork()
			return
		}
		t := time.AfterFunc(s.opts.ShutdownGrace, cancelWork)
		context.AfterFunc(workCtx, func() { t.Stop() })
	})
	defer stopGrace()

	var wg sync.WaitGroup
	wg.Go(func() { s.pullLoop(ctx, workCtx, jobs, s.opts.Workers, s.execute) })
	wg.Go(func() { s.pullLoop(ctx, workCtx, cbs, s.opts.CallbackWorkers, s.deliverOne) })
	wg.Wait()
	s.deliver.CloseIdleConnections()
	return nil
}

// pullWait bounds one pull request; a pull also ends at once when Run's
// ctx ends.
const pullWait = 5 * time.Second

// pullLoop pulls messages from c, one at a time and only when one of its
// workers is free (so no message waits unacknowledged in a buffer), and
// handles each with work in a goroutine of its own, at most workers at
// once, until ctx ends; then it waits for them. One long-poll pull per
// consumer keeps an idle relay idle.
func (s *Service) pullLoop(ctx, workCtx context.Context, c jetstream.Consumer, workers int, handle func(context.Context, jetstream.Msg)) {
	free := make(chan struct{}, workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case free <- struct{}{}:
		case <-ctx.Done():
			return
		}
		msg, err := s.pull(ctx, c)
		if err != nil {
			<-free
			if ctx.Err() != nil {
				return
			}
			continue
		}
		wg.Go(func() {
			defer func() { <-free }()
			handle(workCtx, msg)
		})
	}
}

// pull waits up to pullWait for one message.
func (s *Service) pull(ctx context.Context, c jetstream.Consumer) (jetstream.Msg, error) {
	pctx, cancel := context.WithTimeout(ctx, pullWait)
	msg, err := c.Next(jetstream.FetchContext(pctx))
	cancel()
	if err == nil || ctx.Err() != nil {
		return msg, err
	}
	// An idle pull ends with nats.ErrTimeout (the server expires the
	// request just before pctx's deadline): not a problem.
	if !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
		s.log.Warn("pull job message", "error", err)
		s.storeTrouble()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil, err
}

// laneMaxWait returns how long a job on lane keeps being retried.
func (s *Service) laneMaxWait(lane string) time.Duration {
	if d, ok := s.opts.Lanes[lane]; ok && d > 0 {
		return d
	}
	return DefaultLaneMaxWait
}
