package workers

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/workers/wire"
)

// Metrics records upstream calls. A nil *Metrics records nothing.
type Metrics struct {
	upstream *prometheus.HistogramVec
	attempts *prometheus.CounterVec
	tokenCnt *prometheus.CounterVec
	refused  *prometheus.CounterVec
	noBudget prometheus.Counter
}

// NewMetrics registers the upstream metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_upstream_duration_seconds",
			Help:    "Time from sending an upstream call to its answer's end (streams: the last event).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"provider"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_upstream_attempts_total",
			Help: "Upstream calls by provider and outcome (an HTTP status, timeout, unreachable, garbage or provider_auth).",
		}, []string{"provider", "outcome"}),
		tokenCnt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_tokens_total",
			Help: "Tokens reported by upstreams, by provider and direction (input or output).",
		}, []string{"provider", "direction"}),
	}
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_admission_refusals_total",
		Help: "Calls a provider refused for lack of capacity, by reason (breaker_open, cooling_down, concurrency, rpm, input_tpm, output_tpm, provider_auth).",
	}, []string{"provider", "reason"})
	m.noBudget = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "relay_retry_budget_exhausted_total",
		Help: "Retries not made because the shared retry budget was spent.",
	})
	reg.MustRegister(m.upstream, m.attempts, m.tokenCnt, m.refused, m.noBudget)
	return m
}

// attempt counts one upstream call and, when d >= 0, records its duration
// (streams record theirs when they end).
func (m *Metrics) attempt(provider, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.attempts.WithLabelValues(provider, outcome).Inc()
	if d >= 0 {
		m.upstream.WithLabelValues(provider).Observe(d.Seconds())
	}
}

// upstreamDone records the end of a streamed answer.
func (m *Metrics) upstreamDone(provider string, d time.Duration) {
	if m == nil {
		return
	}
	m.upstream.WithLabelValues(provider).Observe(d.Seconds())
}

func (m *Metrics) tokens(provider string, u wire.Usage) {
	if m == nil || !u.Known {
		return
	}
	m.tokenCnt.WithLabelValues(provider, "input").Add(float64(u.Input))
	m.tokenCnt.WithLabelValues(provider, "output").Add(float64(u.Output))
}

func (m *Metrics) refusal(provider, reason string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(provider, reason).Inc()
}

func (m *Metrics) budgetExhausted() {
	if m == nil {
		return
	}
	m.noBudget.Inc()
}
