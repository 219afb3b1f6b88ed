package status

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHistQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name string
		h    hist
		q    float64
		want float64
	}{
		{"all in first bucket", hist{[]float64{1, 2, inf}, []uint64{10, 10, 10}}, 0.5, 0.5},
		{"middle of second bucket", hist{[]float64{1, 2, inf}, []uint64{0, 10, 10}}, 0.5, 1.5},
		{"p99 past last bound", hist{[]float64{1, 2, inf}, []uint64{0, 0, 10}}, 0.99, 2},
		{"split", hist{[]float64{1, 2, inf}, []uint64{5, 10, 10}}, 0.99, 1.98},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.h.quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("quantile(%g) = %g, want %g", tc.q, got, tc.want)
			}
		})
	}
}

// TestWindowFigures: the figures are the differences from the newest
// sample at least a minute old.
func TestWindowFigures(t *testing.T) {
	reg := prometheus.NewRegistry()
	wait := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metricLaneWait, Buckets: []float64{1, 10}}, []string{"lane"})
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricRequests}, []string{"route", "code"})
	reg.MustRegister(wait, reqs)
	now := time.Unix(1_000_000, 0)
	w := NewWindow(reg, time.Second)
	w.now = func() time.Time { return now }

	wait.WithLabelValues("interactive").Observe(20) // before the window
	reqs.WithLabelValues("m", "500").Add(7)
	s, err := w.take()
	if err != nil {
		t.Fatal(err)
	}
	w.keep(s)
	now = now.Add(61 * time.Second)
	for range 4 {
		wait.WithLabelValues("interactive").Observe(0.5)
	}
	reqs.WithLabelValues("m", "200").Add(3)
	reqs.WithLabelValues("m", "529").Inc()
	reqs.WithLabelValues("m", "404").Inc()

	f, err := w.Figures(now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if f.Span != 61*time.Second {
		t.Errorf("span %v, want 61s", f.Span)
	}
	qs, n, ok := f.LaneWait("interactive", 0.5, 0.99)
	if !ok || n != 4 || qs[1] > 1 {
		t.Errorf("lane wait = %v, n %d, ok %v; want 4 waits under 1s", qs, n, ok)
	}
	if total, errs := f.RouteErrors("m"); total != 5 || errs != 1 {
		t.Errorf("route m: %d answers, %d errors; want 5 and 1 (404 is not an error)", total, errs)
	}
	if _, _, ok := f.LaneWait("batch"); ok {
		t.Error("a lane without samples has figures")
	}
}

// TestWindowRunStops: Run samples until its context ends, then returns.
func TestWindowRunStops(t *testing.T) {
	w := NewWindow(prometheus.NewRegistry(), time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	w.mu.Lock()
	n := len(w.samples)
	w.mu.Unlock()
	if n == 0 {
		t.Error("no sample kept")
	}
}
