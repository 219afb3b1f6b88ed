package metering

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/workers/logctx"
	"github.com/relaygw/relay/workers/pricing"
)

// Options configure a Meter.
type Options struct {
	// Registry registers the metering metrics; nil registers them nowhere.
	Registry prometheus.Registerer
	// Logger logs publish failures and unpriced models; nil discards.
	Logger *slog.Logger
	// Store receives events and counters; nil keeps metrics only.
	Store *Store
	// QueueSize bounds the events waiting to be published (default
	// 10000); past it events are dropped and counted.
	QueueSize int
	// FlushInterval is how often counters are added to the store
	// (default 1s).
	FlushInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Meter records finished calls. It is safe for concurrent use. Start
// starts its publisher and counter flusher (when it has a Store); Stop
// ends them after publishing what is queued and flushing the counters.
type Meter struct {
	log     *slog.Logger
	store   *Store
	now     func() time.Time
	metrics *meterMetrics
	prices  atomic.Pointer[pricing.Table]
	pub     *publisher
	counts  *counters
	every   time.Duration

	mu       sync.Mutex
	unpriced map[string]bool // models warned about, bounded
	stop     context.CancelFunc
	done     chan struct{}
}

// maxWarned bounds the unpriced models remembered for warnings.
const maxWarned = 256

// New returns a Meter; call Start to begin publishing and flushing.
func New(o Options) *Meter {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Meter{log: o.Logger, store: o.Store, now: o.Now, metrics: newMeterMetrics(o.Registry),
		every: o.FlushInterval, unpriced: map[string]bool{}}
	if o.Store != nil {
		m.pub = newPublisher(o.Store, o.QueueSize, m.metrics, o.Logger)
		m.counts = newCounters(o.Store, m.metrics, o.Logger)
	}
	return m
}

// SetPrices replaces the prices table (nil prices nothing, and warns of
// nothing); calls recorded from then on use it.
func (m *Meter) SetPrices(t *pricing.Table) { m.prices.Store(t) }

// KeyRoutes is one key's name and the routes it may use, with each
// route's providers: their series are created at zero.
type KeyRoutes struct {
	Key    string
	Routes map[string][]string // route -> providers
}

// Seed creates at zero the series of every configured key on every route
// it may use (and the route's providers). Series of keys that left the
// configuration stay; keys made at run time appear when first used.
func (m *Meter) Seed(keys []KeyRoutes) {
	for _, k := range keys {
		for route, providers := range k.Routes {
			m.metrics.cost.WithLabelValues(k.Key, route)
			for _, p := range providers {
				for _, d := range directions {
					m.metrics.tokens.WithLabelValues(k.Key, route, p, d)
				}
			}
			m.metrics.unpriced.WithLabelValues(route)
		}
	}
}

// Record records one finished call: metrics at once, the event and the
// counters asynchronously. It never blocks on NATS and never fails.
func (m *Meter) Record(c Call) {
	if c.Time.IsZero() {
		c.Time = m.now()
	}
	ev := Event{
		ID: newEventID(), Time: c.Time.UTC(), Mode: c.Mode, RequestID: c.RequestID, JobID: c.JobID, BatchID: c.BatchID,
		Key: c.Key, Route: c.Route, Provider: c.Provider, Model: c.Model,
		Tokens: TokensOf(c.Usage), UsageKnown: c.Usage.Known,
	}
	if c.Usage.Known {
		table := m.prices.Load()
		ev.CostUSD, ev.Priced = table.Cost(c.Model, pricing.Of(c.Usage), c.Mode == ModeBatch)
		if !ev.Priced {
			m.noPrice(ev.Route, ev.Model, table != nil)
		}
	}
	m.metrics.observe(&ev)
	if m.store == nil {
		return
	}
	m.counts.add(&ev)
	m.pub.enqueue(&ev)
}

// noPrice counts a call of an unpriced model and, when there is a prices
// table, warns once per model.
func (m *Meter) noPrice(route, model string, haveTable bool) {
	m.metrics.unpriced.WithLabelValues(route).Inc()
	if !haveTable {
		return
	}
	m.mu.Lock()
	warn := !m.unpriced[model] && len(m.unpriced) < maxWarned
	if warn {
		m.unpriced[model] = true
	}
	m.mu.Unlock()
	if warn {
		m.log.Warn("usage of a model the prices table does not price: it costs 0", "model", logctx.Model(model), "route", route)
	}
}

// Start starts the publisher and the counter flusher; without a Store it
// does nothing. Stop ends them.
func (m *Meter) Start() {
	if m.store == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.stop, m.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); m.pub.run(ctx) }()
	go func() { defer wg.Done(); m.counts.run(ctx, m.every) }()
	go func() { wg.Wait(); close(m.done) }()
}

// Stop publishes the queued events and flushes the counters, until ctx
// ends (what is left then is counted as dropped), and stops.
func (m *Meter) Stop(ctx context.Context) {
	m.mu.Lock()
	stop, done := m.stop, m.done
	m.mu.Unlock()
	if stop == nil {
		return
	}
	m.pub.closeQueue()
	stop()
	<-done
	m.pub.drain(ctx)
	if err := m.counts.flush(ctx); err != nil {
		m.log.Warn("usage counters not flushed at stop", "error", err)
	}
}

// Flush adds the counters aggregated so far to the store now (tests,
// and callers that need their last calls counted before reading).
func (m *Meter) Flush(ctx context.Context) error {
	if m.store == nil {
		return nil
	}
	return m.counts.flush(ctx)
}
