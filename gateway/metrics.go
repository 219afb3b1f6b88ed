package gateway

// This file owns the proxied requests' Prometheus metrics.

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus metrics.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_requests_total",
			Help: "Requests answered, by route, provider, lane, mode (direct or queued) and HTTP status (499: the client went away).",
		}, []string{"route", "provider", "lane", "mode", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its answer, streams included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"route", "mode"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_inflight_requests",
			Help: "Proxied requests being served now.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inflight)
	return m
}

func (m *metrics) observe(route, provider, lane, mode, code string, d time.Duration) {
	m.requests.WithLabelValues(route, provider, lane, mode, code).Inc()
	m.duration.WithLabelValues(route, mode).Observe(d.Seconds())
}
