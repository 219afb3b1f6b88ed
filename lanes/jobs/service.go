package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/lanes/assets"
)

// Service ties the parts of the package together: its Options, Open (which
// checks them and declares the store) and Run (which starts the executor's
// and the callback deliveries' worker pools).

// Defaults of the Options that are not settings of the relay's
// configuration (those, such as Workers and ResultTTL, have no default
// here: configs owns their defaults and the caller passes them).
const (
	// DefaultCallbackWorkers bounds the callback deliveries at once.
	DefaultCallbackWorkers = 16
	// DefaultAckWait is the executor's ack wait: how long after the last
	// heartbeat a job whose run was lost (a crash) is delivered again.
	// Running jobs send in-progress heartbeats every third of it; a
	// redelivery runs the job again only once its owner's liveness key
	// has expired (owners.go, 3 s after its last beat), so a dead
	// relay's jobs start elsewhere about 3 s after it died (see the
	// package doc, Heartbeats).
	DefaultAckWait = 3 * time.Second
	// DefaultMaxInterrupted is the lost runs before a dead letter.
	DefaultMaxInterrupted = 5
	// DefaultRetryBase is the first retry backoff ceiling.
	DefaultRetryBase = time.Second
	// DefaultRetryMax caps the retry backoff.
	DefaultRetryMax = 5 * time.Minute
)

// Options configure a Service. The fields marked required have no
// default (Open refuses zero); the other zero fields take the defaults.
type Options struct {
	// ResultTTL is how long job records, idempotency keys and results are
	// kept (jobs.result_ttl). Required.
	ResultTTL time.Duration
	// Lanes maps lane names to their max_wait: how long after creation a
	// job keeps being retried when no provider can serve it. A job on a
	// lane not named is not retried. SetLaneWaits replaces it.
	Lanes map[string]time.Duration
	// Workers bounds the jobs run at once (jobs.workers). Required.
	Workers int
	// CallbackWorkers bounds the callback deliveries at once (default
	// DefaultCallbackWorkers).
	CallbackWorkers int
	// Callbacks delivers (and signs) callbacks. Required.
	Callbacks CallbackSender
	// CallbackTimeout bounds one delivery attempt by Callbacks; the
	// callback consumer's ack wait is 20 s more. Required.
	CallbackTimeout time.Duration
	// CallbackURLs checks callback URLs for CheckCallbackURL. Required.
	CallbackURLs URLChecker
	// CallbackSchedule holds the delays between a callback's attempts
	// (callbacks.retry_schedule), each jittered by ±CallbackJitter: a
	// callback is attempted at most len+1 times, then is a dead letter.
	// Empty: one attempt. Delays must be positive.
	CallbackSchedule []time.Duration
	// CallbackRecheck, when positive, bounds the real time a waiting
	// callback sleeps before its due time is checked against Now again
	// (for tests with an injected clock). 0: it sleeps until due.
	CallbackRecheck time.Duration
	// AckWait is the executor's ack wait; in-progress heartbeats go every
	// third of it while a job runs (default DefaultAckWait).
	AckWait time.Duration
	// MaxInterrupted is how many runs of a job may be lost to crashes or
	// hangs before it is dead-lettered as failed (default
	// DefaultMaxInterrupted).
	MaxInterrupted int
	// RetryBase and RetryMax shape the full-jitter backoff between tries
	// of a job no provider could serve (defaults DefaultRetryBase and
	// DefaultRetryMax).
	RetryBase, RetryMax time.Duration
	// ShutdownGrace is how long running jobs may go on after Run's ctx
	// ends before their upstream calls are cancelled (and the jobs left
	// queued for the next start). 0: cancel at once.
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
	// Assets declares the streams, buckets and consumers (their replicas
	// and the convergence rule shared by relays); nil declares them R1.
	Assets *assets.Declarer
	// MaxWaiting bounds the jobs pulled that wait for capacity (not yet
	// started): the executor pulls no more while that many wait, so a
	// saturated relay leaves queued jobs to relays with capacity. 0: only
	// Workers bounds them.
	MaxWaiting int
	// HandBack gives a pulled job back to the queue (no attempt counted,
	// still queued) when it has not started within it, so that another
	// relay with capacity takes it. 0: a job waits for capacity where it
	// was pulled.
	HandBack time.Duration
}

// check refuses Options missing a required field or holding a negative
// one, and fills in the defaults of the others.
func (o *Options) check() error {
	switch {
	case o.ResultTTL <= 0:
		return errors.New("jobs: ResultTTL must be positive")
	case o.Workers <= 0:
		return errors.New("jobs: Workers must be positive")
	case o.Callbacks == nil || o.CallbackURLs == nil:
		return errors.New("jobs: Callbacks and CallbackURLs are required")
	case o.CallbackTimeout <= 0:
		return errors.New("jobs: CallbackTimeout must be positive")
	case slices.ContainsFunc(o.CallbackSchedule, func(d time.Duration) bool { return d <= 0 }):
		return errors.New("jobs: CallbackSchedule's delays must be positive")
	case o.MaxWaiting < 0 || o.HandBack < 0:
		return errors.New("jobs: negative option")
	case o.CallbackWorkers < 0 || o.AckWait < 0 || o.MaxInterrupted < 0 || o.RetryBase < 0 || o.RetryMax < 0 ||
		o.ShutdownGrace < 0 || o.BatchWindow < 0 || o.MaxBatchRequests < 0 || o.CallbackRecheck < 0:
		return errors.New("jobs: negative option")
	}
	if err := checkLaneWaits(o.Lanes); err != nil {
		return err
	}
	o.CallbackSchedule = slices.Clone(o.CallbackSchedule)
	o.CallbackWorkers = cmp.Or(o.CallbackWorkers, DefaultCallbackWorkers)
	o.AckWait = cmp.Or(o.AckWait, DefaultAckWait)
	o.MaxInterrupted = cmp.Or(o.MaxInterrupted, DefaultMaxInterrupted)
	o.RetryBase = cmp.Or(o.RetryBase, DefaultRetryBase)
	o.RetryMax = cmp.Or(o.RetryMax, DefaultRetryMax)
	o.BatchWindow = cmp.Or(o.BatchWindow, DefaultBatchWindow)
	o.MaxBatchRequests = cmp.Or(o.MaxBatchRequests, DefaultMaxBatchRequests)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// checkLaneWaits refuses a lane max_wait that is not positive.
func checkLaneWaits(waits map[string]time.Duration) error {
	for name, d := range waits {
		if d <= 0 {
			return fmt.Errorf("jobs: lane %q: max_wait must be positive", name)
		}
	}
	return nil
}

// Service stores, runs and reports asynchronous jobs. It is safe for
// concurrent use. Submit, Get and Cancel work as soon as Open returns; Run
// executes jobs and delivers callbacks until its ctx ends.
type Service struct {
	js      jetstream.JetStream
	assets  *assets.Declarer
	state   jetstream.KeyValue
	idem    jetstream.KeyValue
	batches jetstream.KeyValue // message batches (batch.go)
	bcache  *batchCache
	runner  Runner
	opts    Options
	waits   atomic.Pointer[map[string]time.Duration] // lanes' max_wait (SetLaneWaits)
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	runMu   sync.Mutex
	running bool

	trouble chan struct{} // one slot: a store error happened (StoreErrors)
	active  sync.Map      // ids of the jobs the executor handles now
	starts  laneStarts    // recent job starts per lane (position.go)

	instance  string             // this executor's id (owners.go)
	executors jetstream.KeyValue // ExecutorsBucket
	waiting   chan struct{}      // slots of jobs pulled and not started (nil: no bound)

	// publish stores a job message (js.PublishMsg; tests lose its
	// answers to reach the settling of unknown outcomes).
	publish func(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Open checks o, creates the streams and buckets idempotently and returns
// a Service that runs jobs with r.
func Open(ctx context.Context, js jetstream.JetStream, r Runner, o Options) (*Service, error) {
	if js == nil || r == nil {
		return nil, errors.New("jobs: JetStream and Runner are required")
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	s := &Service{
		js:       js,
		runner:   r,
		opts:     o,
		log:      o.Logger,
		now:      o.Now,
		trouble:  make(chan struct{}, 1),
		bcache:   &batchCache{entries: map[string]*cacheEntry{}},
		instance: newInstance(),
		publish:  js.PublishMsg,
	}
	if o.MaxWaiting > 0 {
		s.waiting = make(chan struct{}, o.MaxWaiting)
	}
	s.waits.Store(&o.Lanes)
	if s.assets = o.Assets; s.assets == nil {
		s.assets = assets.New(js, assets.Options{Logger: o.Logger})
	}
	var err error
	if s.state, s.idem, err = s.declare(ctx); err != nil {
		return nil, err
	}
	if s.batches, err = s.declareBatches(ctx); err != nil {
		return nil, err
	}
	if s.executors, err = s.declareExecutors(ctx); err != nil {
		return nil, fmt.Errorf("jobs: declare bucket %s: %w", ExecutorsBucket, err)
	}
	s.metrics = newMetrics(o.Registry, s)
	return s, nil
}

// SetLaneWaits replaces the lanes' max_wait (Options.Lanes), as after a
// configuration reload: a queued job's next retry decision follows the
// new value. A max_wait that is not positive is refused, and nothing
// changes. It is safe for concurrent use.
func (s *Service) SetLaneWaits(waits map[string]time.Duration) error {
	if err := checkLaneWaits(waits); err != nil {
		return err
	}
	waits = maps.Clone(waits)
	s.waits.Store(&waits)
	return nil
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

	// The heartbeat lasts as long as running work does: until the pull
	// loops have returned (their work done) or the grace period is over.
	beatCtx, stopBeat := context.WithCancel(workCtx)
	beatDone := make(chan struct{})
	go func() {
		defer close(beatDone)
		s.beat(beatCtx)
	}()
	var wg sync.WaitGroup
	wg.Go(func() { s.pullLoop(ctx, workCtx, jobs, s.opts.Workers, s.waiting, s.execute) })
	wg.Go(func() { s.pullLoop(ctx, workCtx, cbs, s.opts.CallbackWorkers, nil, s.deliverOne) })
	wg.Wait()
	stopBeat()
	<-beatDone
	if c, ok := s.opts.Callbacks.(idleCloser); ok {
		c.CloseIdleConnections()
	}
	return nil
}

// pullWait bounds one pull request; a pull also ends at once when Run's
// ctx ends.
const pullWait = 5 * time.Second

// pullLoop pulls messages from c, one at a time and only when one of its
// workers is free (so no message waits unacknowledged in a buffer) and,
// with waiting set, one of its slots of jobs pulled but not started (so a
// relay without capacity leaves queued jobs to others), and handles each
// with work in a goroutine of its own, at most workers at once, until
// ctx ends; then it waits for them. One long-poll pull per consumer keeps
// an idle relay idle.
func (s *Service) pullLoop(ctx, workCtx context.Context, c jetstream.Consumer, workers int, waiting chan struct{},
	handle func(context.Context, jetstream.Msg)) {
	free := make(chan struct{}, workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case free <- struct{}{}:
		case <-ctx.Done():
			return
		}
		slot, ok := takeSlot(ctx, waiting)
		if !ok {
			<-free
			return
		}
		msg, err := s.pull(ctx, c)
		if err != nil {
			slot.release()
			<-free
			if ctx.Err() != nil {
				return
			}
			continue
		}
		wg.Go(func() {
			defer func() { <-free }()
			defer slot.release()
			handle(context.WithValue(workCtx, slotKey{}, slot), msg)
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

// laneMaxWait returns how long a job on lane keeps being retried: the
// lane's max_wait, 0 for a lane not known (any more).
func (s *Service) laneMaxWait(lane string) time.Duration {
	return (*s.waits.Load())[lane]
}
