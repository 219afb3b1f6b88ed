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

// depthCollector reports relay_lane_depth{lane}, and the lanes' limits
// relay_lane_max_depth{lane} and relay_lane_max_wait_seconds{lane} (for
// alerts and dashboards to compare with), from the Set at scrape time.
type depthCollector struct {
	s        *Set
	desc     *prometheus.Desc
	maxDepth *prometheus.Desc
	maxWait  *prometheus.Desc
}

func newDepthCollector(s *Set) depthCollector {
	return depthCollector{s: s,
		desc: prometheus.NewDesc("relay_lane_depth", "Requests parked on a lane now.", []string{"lane"}, nil),
		maxDepth: prometheus.NewDesc("relay_lane_max_depth",
			"The lane's max_depth: parked requests past it are refused with 429.", []string{"lane"}, nil),
		maxWait: prometheus.NewDesc("relay_lane_max_wait_seconds",
			"The lane's max_wait: the longest a synchronous request waits parked.", []string{"lane"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c depthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.maxDepth
	ch <- c.maxWait
}

// Collect implements prometheus.Collector.
func (c depthCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	type depth struct {
		Spec
		n int
	}
	ds := make([]depth, 0, len(c.s.lanes))
	for _, l := range c.s.lanes {
		ds = append(ds, depth{l.Spec, l.depth})
	}
	c.s.mu.Unlock()
	for _, d := range ds {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(d.n), d.Name)
		ch <- prometheus.MustNewConstMetric(c.maxDepth, prometheus.GaugeValue, float64(d.MaxDepth), d.Name)
		ch <- prometheus.MustNewConstMetric(c.maxWait, prometheus.GaugeValue, d.MaxWait.Seconds(), d.Name)
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
	m.known(s.laneNames())
	reg.MustRegister(m.wait, m.dispatches, m.rejections, newDepthCollector(s))
	if mir := s.mirror; mir != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "relay_lane_mirror_dropped_total",
			Help: "Park and unpark records not written to the RELAY_LANES stream because its writer was behind (the requests themselves are unaffected).",
		}, func() float64 { return float64(mir.dropped.Load()) }))
	}
	return m
}

// rejectReasons are every reason relay_lane_rejected_total counts.
var rejectReasons = []string{"full", "expired", "canceled", "closed"}

// known creates the series of lanes at zero, so that every configured
// lane's series exist from start-up (and from the reload that adds it):
// rate() and alerts see them before the first event.
func (m *metrics) known(lanes []string) {
	if m == nil {
		return
	}
	for _, l := range lanes {
		m.wait.WithLabelValues(l)
		m.dispatches.WithLabelValues(l)
		for _, r := range rejectReasons {
			m.rejections.WithLabelValues(l, r)
		}
	}
}

// laneNames returns the current lanes' names.
func (s *Set) laneNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.lanes))
	for _, l := range s.lanes {
		names = append(names, l.Name)
	}
	return names
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
