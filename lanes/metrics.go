package lanes

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the lane metrics. A nil *metrics records nothing.
type metrics struct {
	wait       *prometheus.HistogramVec
	dispatches *prometheus.CounterVec
	rejections *prometheus.CounterVec
}

// depthCollector reports relay_lane_depth{lane} from the Set at scrape time.
type depthCollector struct {
	s    *Set
	desc *prometheus.Desc
}

func (c depthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c depthCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	type depth struct {
		name string
		n    int
	}
	ds := make([]depth, 0, len(c.s.lanes))
	for _, l := range c.s.lanes {
		ds = append(ds, depth{l.Name, l.depth})
	}
	c.s.mu.Unlock()
	for _, d := range ds {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(d.n), d.name)
	}
}

func newMetrics(reg prometheus.Registerer, s *Set) *metrics {
	m := &metrics{
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_lane_wait_seconds",
			Help:    "Time requests spent parked on a lane before a provider took them.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600},
		}, []string{"lane"}),
		dispatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_lane_dispatched_total",
			Help: "Parked requests handed to a provider, by lane.",
		}, []string{"lane"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_lane_rejected_total",
			Help: "Requests that left a lane without being served, by lane and reason (full, expired, canceled, closed).",
		}, []string{"lane", "reason"}),
	}
	reg.MustRegister(m.wait, m.dispatches, m.rejections, depthCollector{s: s,
		desc: prometheus.NewDesc("relay_lane_depth", "Requests parked on a lane now.", []string{"lane"}, nil)})
	if mir := s.mirror; mir != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "relay_lane_mirror_dropped_total",
			Help: "Park and unpark records not written to the RELAY_LANES stream because its writer was behind (the requests themselves are unaffected).",
		}, func() float64 { return float64(mir.dropped.Load()) }))
	}
	return m
}

func (m *metrics) dispatched(lane string, waited time.Duration) {
	if m == nil {
		return
	}
	m.dispatches.WithLabelValues(lane).Inc()
	m.wait.WithLabelValues(lane).Observe(waited.Seconds())
}

func (m *metrics) rejected(lane, reason string) {
	if m == nil {
		return
	}
	m.rejections.WithLabelValues(lane, reason).Inc()
}
