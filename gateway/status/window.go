package status

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The metric names a Window reads (SPEC §5 and the jobs service).
const (
	metricLaneWait      = "relay_lane_wait_seconds"
	metricRequests      = "relay_requests_total"
	metricDeadLetters   = "relay_jobs_dead_letters_total"
	metricCallbacks     = "relay_callbacks_total"
	windowSpan          = time.Minute
	defaultSamplePeriod = 5 * time.Second
)

// Window keeps samples of the relay's Prometheus registry for a minute, so
// that the status page can show figures over the last minute (lane wait
// quantiles, route error rates) from the counters and histograms the
// relay exports anyway. Run samples until its context ends.
type Window struct {
	g      prometheus.Gatherer
	period time.Duration
	now    func() time.Time

	mu      sync.Mutex
	samples []sample // oldest first, at most a minute and a period apart
}

// sample is what a Window keeps of one gathering.
type sample struct {
	at       time.Time
	waits    map[string]hist // by lane
	requests map[string]routeCount
	dead     uint64 // jobs dead-lettered
	cbFailed uint64 // callbacks given up
}

// hist is a cumulative histogram.
type hist struct {
	bounds []float64 // upper bounds, +Inf last
	counts []uint64  // cumulative
}

// routeCount counts a route's answers.
type routeCount struct{ total, errors uint64 }

// NewWindow returns a Window over g, sampling every period (5 s when 0).
func NewWindow(g prometheus.Gatherer, period time.Duration) *Window {
	if period <= 0 {
		period = defaultSamplePeriod
	}
	return &Window{g: g, period: period, now: time.Now}
}

// Run samples until ctx ends.
func (w *Window) Run(ctx context.Context) {
	t := time.NewTicker(w.period)
	defer t.Stop()
	for {
		if s, err := w.take(); err == nil {
			w.keep(s)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// keep appends s and drops samples no longer needed as a baseline: the
// newest sample at least a minute old is kept, older ones go.
func (w *Window) keep(s sample) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, s)
	cut := s.at.Add(-windowSpan)
	drop := 0
	for drop+1 < len(w.samples) && !w.samples[drop+1].at.After(cut) {
		drop++
	}
	w.samples = append(w.samples[:0], w.samples[drop:]...)
}

// baseline returns the newest sample at least a minute older than now, or
// the zero sample (counters start at zero with the process) when the
// relay is younger than that.
func (w *Window) baseline(now time.Time) (sample, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cut := now.Add(-windowSpan)
	for i := len(w.samples) - 1; i >= 0; i-- {
		if !w.samples[i].at.After(cut) {
			return w.samples[i], true
		}
	}
	return sample{}, false
}

// take gathers the registry once.
func (w *Window) take() (sample, error) {
	mfs, err := w.g.Gather()
	if err != nil && len(mfs) == 0 {
		return sample{}, fmt.Errorf("status: gather metrics: %w", err)
	}
	s := sample{at: w.now(), waits: map[string]hist{}, requests: map[string]routeCount{}}
	for _, mf := range mfs {
		switch mf.GetName() {
		case metricLaneWait:
			for _, m := range mf.GetMetric() {
				s.waits[label(m, "lane")] = toHist(m.GetHistogram())
			}
		case metricRequests:
			for _, m := range mf.GetMetric() {
				rc := s.requests[label(m, "route")]
				n := uint64(m.GetCounter().GetValue())
				rc.total += n
				if isError(label(m, "code")) {
					rc.errors += n
				}
				s.requests[label(m, "route")] = rc
			}
		case metricDeadLetters:
			s.dead = sum(mf, nil)
		case metricCallbacks:
			s.cbFailed = sum(mf, func(m *dto.Metric) bool {
				o := label(m, "outcome")
				return o == "failed" || o == "dead_letter"
			})
		}
	}
	return s, nil
}

// Figures are a Window's figures over the last minute.
type Figures struct {
	// Span is the time covered: a minute, or the relay's age.
	Span     time.Duration
	waits    map[string]hist
	requests map[string]routeCount
	// JobsGivenUp (relay_jobs_dead_letters_total) and CallbacksGivenUp
	// (relay_callbacks_total's dead letters) count since the relay
	// started.
	JobsGivenUp      uint64
	CallbacksGivenUp uint64
}

// Figures gathers the registry now and returns the differences from the
// baseline a minute ago. started is when the relay started (the span of
// a younger relay).
func (w *Window) Figures(started time.Time) (Figures, error) {
	cur, err := w.take()
	if err != nil {
		return Figures{}, err
	}
	base, ok := w.baseline(cur.at)
	span := windowSpan
	if ok {
		span = cur.at.Sub(base.at)
	} else if age := cur.at.Sub(started); age < span {
		span = age
	}
	f := Figures{Span: span, waits: map[string]hist{}, requests: map[string]routeCount{},
		JobsGivenUp: cur.dead, CallbacksGivenUp: cur.cbFailed}
	for lane, h := range cur.waits {
		f.waits[lane] = h.minus(base.waits[lane])
	}
	for route, rc := range cur.requests {
		b := base.requests[route]
		f.requests[route] = routeCount{total: sat(rc.total, b.total), errors: sat(rc.errors, b.errors)}
	}
	return f, nil
}

// LaneWait returns the quantiles q of lane's waits in the window, in
// seconds, and how many requests were dispatched; ok is false when none
// was.
func (f Figures) LaneWait(lane string, qs ...float64) (vals []float64, n uint64, ok bool) {
	h, found := f.waits[lane]
	if !found || len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return nil, 0, false
	}
	for _, q := range qs {
		vals = append(vals, h.quantile(q))
	}
	return vals, h.counts[len(h.counts)-1], true
}

// RouteErrors returns a route's answers and error answers in the window.
func (f Figures) RouteErrors(route string) (total, errors uint64) {
	rc := f.requests[route]
	return rc.total, rc.errors
}

// quantile interpolates linearly within the bucket holding rank q, as
// PromQL's histogram_quantile does; past the last finite bound it returns
// that bound.
func (h hist) quantile(q float64) float64 {
	total := h.counts[len(h.counts)-1]
	rank := q * float64(total)
	lower, below := 0.0, uint64(0)
	for i, c := range h.counts {
		if float64(c) >= rank && c > below {
			if math.IsInf(h.bounds[i], 1) {
				return lower
			}
			return lower + (h.bounds[i]-lower)*(rank-float64(below))/float64(c-below)
		}
		lower, below = h.bounds[i], c
	}
	return lower
}

// minus returns h less the older b (same buckets; a b with other buckets,
// after a restart of the metric, counts as zero).
func (h hist) minus(b hist) hist {
	out := hist{bounds: h.bounds, counts: make([]uint64, len(h.counts))}
	same := len(b.counts) == len(h.counts)
	for i, c := range h.counts {
		if same {
			c = sat(c, b.counts[i])
		}
		out.counts[i] = c
	}
	return out
}

// toHist converts a Prometheus histogram, adding the +Inf bucket.
func toHist(p *dto.Histogram) hist {
	var h hist
	for _, b := range p.GetBucket() {
		if math.IsInf(b.GetUpperBound(), 1) {
			continue
		}
		h.bounds = append(h.bounds, b.GetUpperBound())
		h.counts = append(h.counts, b.GetCumulativeCount())
	}
	h.bounds = append(h.bounds, math.Inf(1))
	h.counts = append(h.counts, p.GetSampleCount())
	return h
}

// isError reports whether an HTTP status code counts as an error on the
// status page: 5xx (the relay or its upstreams failed) and 429 (shed).
func isError(code string) bool {
	n, err := strconv.Atoi(code)
	return err == nil && (n >= 500 || n == 429)
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sum adds the counters of mf that keep accepts (all when nil).
func sum(mf *dto.MetricFamily, keep func(*dto.Metric) bool) uint64 {
	var n float64
	for _, m := range mf.GetMetric() {
		if keep == nil || keep(m) {
			n += m.GetCounter().GetValue()
		}
	}
	return uint64(n)
}

// sat is a - b, or 0 when b is larger (a counter that restarted).
func sat(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// sortBy sorts xs by key.
func sortBy[T any](xs []T, key func(T) string) {
	sort.Slice(xs, func(i, j int) bool { return key(xs[i]) < key(xs[j]) })
}
