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

// depthCollector reports relay_lane_depth{lane}, the age of the oldest
// request parked on each lane relay_lane_oldest_wait_seconds{lane}, and
// the lanes' limits relay_lane_max_depth{lane} and
// relay_lane_max_wait_seconds{lane} (for alerts and dashboards to compare
// with), from the Set at scrape time.
type depthCollector struct {
	s        *Set
	desc     *prometheus.Desc
	oldest   *prometheus.Desc
	maxDepth *prometheus.Desc
	maxWait  *prometheus.Desc
}

func newDepthCollector(s *Set) depthCollector {
	return depthCollector{s: s,
		desc: prometheus.NewDesc("relay_lane_depth", "Requests parked on a lane now.", []string{"lane"}, nil),
		oldest: prometheus.NewDesc("relay_lane_oldest_wait_seconds",
			"How long the oldest request parked on a lane now has waited (0 when none is parked).", []string{"lane"}, nil),
		maxDepth: prometheus.NewDesc("relay_lane_max_depth",
			"The lane's max_depth: parked requests past it are refused with 429.", []string{"lane"}, nil),
		maxWait: prometheus.NewDesc("relay_lane_max_wait_seconds",
			"The lane's max_wait: the longest a synchronous request waits parked.", []string{"lane"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c depthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.oldest
	ch <- c.maxDepth
	ch <- c.maxWait
}

// Collect implements prometheus.Collector.
func (c depthCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	type depth struct {
		Spec
		n      int
		oldest time.Duration
	}
	now := c.s.now()
	ds := make([]depth, 0, len(c.s.lanes))
	for _, l := range c.s.lanes {
		ds = append(ds, depth{l.Spec, l.depth, l.oldestWait(now)})
	}
	c.s.mu.Unlock()
	for _, d := range ds {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(d.n), d.Name)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, d.oldest.Seconds(), d.Name)
		ch <- prometheus.MustNewConstMetric(c.maxDepth, prometheus.GaugeValue, float64(d.MaxDepth), d.Name)
		ch <- prometheus.MustNewConstMetric(c.maxWait, prometheus.GaugeValue, d.MaxWait.Seconds(), d.Name)
	}
}

// oldestWait returns how long the oldest request parked on l has waited
// at now, 0 when none is; the Set's lock is held. Each key's queue is in
// park order, so only its front is looked at: O(routes × keys parked).
func (l *lane) oldestWait(now time.Time) time.Duration {
	var oldest time.Time
	for _, rq := range l.routes {
		for _, kq := range rq.keys {
			if e := kq.queue.Front(); e != nil {
				if at := e.Value.(*Ticket).parkedAt; oldest.IsZero() || at.Before(oldest) {
					oldest = at
				}
			}
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return max(now.Sub(oldest), 0)
}

// waitBuckets are relay_lane_wait_seconds' buckets: sub-millisecond
// waits up to a day, the longest max_wait a lane has by default (batch),
// so that a quantile near any lane's max_wait can be told from one
// beyond it. 22 buckets per lane.
var waitBuckets = []float64{.0001, .0005, .001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600,
	7200, 21600, 43200, 86400}

func newMetrics(reg prometheus.Registerer, s *Set) *metrics {
	m := &metrics{
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_lane_wait_seconds",
			Help:    "Time requests spent parked on a lane before a provider took them.",
			Buckets: waitBuckets,
		}, []string{"lane"}),
		dispatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_lane_dispatched_total",
			Help: "Parked requests handed to a provider, by lane.",
		}, []string{"lane"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_lane_rejected_total",
			Help: "Requests that left a lane without being served, by lane and reason (full, expired, early, canceled, closed).",
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

// rejectReasons are every reason relay_lane_rejected_total counts (full
// and early in park, early in endHeld, expired in the dispatcher,
// canceled when the caller leaves, closed on Close).
var rejectReasons = []string{"full", "expired", "early", "canceled", "closed"}

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
