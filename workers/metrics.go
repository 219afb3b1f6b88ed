package workers

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics records upstream calls. A nil *Metrics records nothing.
type Metrics struct {
	upstream *prometheus.HistogramVec
	attempts *prometheus.CounterVec
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
	}
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_admission_refusals_total",
		Help: "Calls a provider refused for lack of capacity, by reason (breaker_open, cooling_down, concurrency, rpm, input_tpm, output_tpm, provider_auth).",
	}, []string{"provider", "reason"})
	m.noBudget = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "relay_retry_budget_exhausted_total",
		Help: "Retries not made because the shared retry budget was spent.",
	})
	reg.MustRegister(m.upstream, m.attempts, m.refused, m.noBudget)
	return m
}

// refusalReasons are every reason relay_admission_refusals_total counts.
var refusalReasons = []string{"breaker_open", "cooling_down", "concurrency", "rpm", "input_tpm", "output_tpm", "provider_auth"}

// knownOutcomes are the relay_upstream_attempts_total outcomes created at
// zero for every provider: success, the statuses alerts watch, and every
// outcome that is not a status. Other statuses appear when first seen.
var knownOutcomes = []string{"200", "429", "500", "502", "503", "504", "529",
	"timeout", "unreachable", "garbage", "provider_auth", "canceled"}

// known creates the series of providers at zero, so that every configured
// provider's series exist from start-up (and from the reload that adds
// it): rate() and alerts see them before the first event.
func (m *Metrics) known(providers []string) {
	if m == nil {
		return
	}
	for _, p := range providers {
		m.upstream.WithLabelValues(p)
		for _, o := range knownOutcomes {
			m.attempts.WithLabelValues(p, o)
		}
		for _, r := range refusalReasons {
			m.refused.WithLabelValues(p, r)
		}
	}
}

// RouteProviders returns each route's label (its model, or its pattern for
// a pattern route) and the names of the providers that may serve it: its
// own targets' first, then its fallbacks' (breadth first, as they are
// tried). A fallback's answer is counted under the route the client asked
// for with the provider that served it, so these are the route's series
// to create before the first request.
func (r *Router) RouteProviders() map[string][]string {
	return r.routeProviders(true)
}

// RouteOwnProviders is RouteProviders without the fallbacks' providers:
// the providers a route's own targets call.
func (r *Router) RouteOwnProviders() map[string][]string {
	return r.routeProviders(false)
}

func (r *Router) routeProviders(fallbacks bool) map[string][]string {
	out := make(map[string][]string, len(r.routes.byName))
	for _, rt := range r.routes.byName {
		if _, done := out[rt.model]; done {
			continue
		}
		chain := rt.chain
		if !fallbacks || len(chain) == 0 {
			chain = []*route{rt}
		}
		var names []string
		for _, c := range chain {
			for _, t := range c.targets {
				if !slices.Contains(names, t.ProviderName) {
					names = append(names, t.ProviderName)
				}
			}
		}
		out[rt.model] = names
	}
	return out
}

// providerNames returns the names of the providers r's routes call.
func (r *Router) providerNames() []string {
	var names []string
	for _, ps := range r.RouteProviders() {
		for _, p := range ps {
			if !slices.Contains(names, p) {
				names = append(names, p)
			}
		}
	}
	return names
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
