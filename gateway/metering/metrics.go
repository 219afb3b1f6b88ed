package metering

import (
	"github.com/prometheus/client_golang/prometheus"
)

// directions are the values of relay_tokens_total's direction label.
var directions = []string{"input", "output", "cache_read", "cache_write"}

// meterMetrics are the metering metrics.
type meterMetrics struct {
	tokens     *prometheus.CounterVec
	cost       *prometheus.CounterVec
	unpriced   *prometheus.CounterVec
	published  prometheus.Counter
	dropped    prometheus.Counter
	pubFails   prometheus.Counter
	flushFails prometheus.Counter
	queued     prometheus.Gauge
}

func newMeterMetrics(reg prometheus.Registerer) *meterMetrics {
	m := &meterMetrics{
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_tokens_total",
			Help: "Tokens used by finished calls (requests, jobs, batch items), by key name, route, provider and direction: input (no cache), output, cache_read, cache_write.",
		}, []string{"key", "route", "provider", "direction"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_cost_usd_total",
			Help: "Cost of finished calls in USD at the prices table's rates, by key name and route (unpriced models count 0).",
		}, []string{"key", "route"}),
		unpriced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_usage_unpriced_total",
			Help: "Finished calls whose upstream model the prices table does not price (they cost 0), by route.",
		}, []string{"route"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_usage_events_published_total",
			Help: "Usage events stored on the RELAY_USAGE stream.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_usage_events_dropped_total",
			Help: "Usage events never published: the queue was full, or retries ran out (should stay 0).",
		}),
		pubFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_usage_publish_failures_total",
			Help: "Failed attempts to publish a usage event (each is retried).",
		}),
		flushFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_usage_counter_flush_failures_total",
			Help: "Failed attempts to add usage counters to the KV bucket (the deltas are kept and retried).",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_usage_events_queued",
			Help: "Usage events waiting to be published.",
		}),
	}
	reg.MustRegister(m.tokens, m.cost, m.unpriced, m.published, m.dropped, m.pubFails, m.flushFails, m.queued)
	return m
}

// observe counts ev's tokens and cost.
func (m *meterMetrics) observe(ev *Event) {
	t := ev.Tokens
	for i, n := range [4]int64{t.Input, t.Output, t.CacheRead, t.CacheWrite} {
		m.tokens.WithLabelValues(ev.Key, ev.Route, ev.Provider, directions[i]).Add(float64(n))
	}
	m.cost.WithLabelValues(ev.Key, ev.Route).Add(ev.CostUSD)
}
