package budgets

import (
	"crypto/rand"
	"encoding/hex"
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

// refusalReasons are the reasons of relay_key_budget_refusals_total.
var refusalReasons = []string{"exhausted", "unreachable"}

// metrics are the budget metrics; a nil *metrics records nothing.
type metrics struct {
	remaining  *prometheus.GaugeVec
	refusals   *prometheus.CounterVec
	failClosed *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_key_budget_remaining",
			Help: "What is left of a key's budget for the current period, in the budget's unit (USD or tokens), as this relay last read the shared state: limit minus what every relay has written as spent, minus this relay's unwritten spending and reservations.",
		}, []string{"key"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_key_budget_refusals_total",
			Help: "Requests refused by a key's budget, by key and reason (exhausted: the budget does not cover the request's worst case; unreachable: the budget state cannot be reached and the chunk held is spent).",
		}, []string{"key", "reason"}),
		failClosed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_key_budget_fail_closed",
			Help: "1 while this relay cannot reach a key's budget state and spends only the chunk of the budget it holds (then refuses), else 0.",
		}, []string{"key"}),
	}
	reg.MustRegister(m.remaining, m.refusals, m.failClosed)
	return m
}

// seed makes key's series exist.
func (m *metrics) seed(key string) {
	if m == nil {
		return
	}
	m.remaining.WithLabelValues(key)
	m.failClosed.WithLabelValues(key)
	for _, r := range refusalReasons {
		m.refusals.WithLabelValues(key, r)
	}
}

func (m *metrics) refused(key, reason string) {
	if m != nil {
		m.refusals.WithLabelValues(key, reason).Inc()
	}
}

// state records key's remaining budget (NaN: unknown, left as it was)
// and whether it fails closed.
func (m *metrics) state(key string, remaining float64, failing bool) {
	if m == nil {
		return
	}
	if !math.IsNaN(remaining) {
		m.remaining.WithLabelValues(key).Set(remaining)
	}
	v := 0.0
	if failing {
		v = 1
	}
	m.failClosed.WithLabelValues(key).Set(v)
}

// randomID is a random relay id for the chunks' records.
func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "r" + hex.EncodeToString(b)
}
