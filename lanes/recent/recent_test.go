package recent

import (
	"math"
	"testing"
	"time"
)

func TestRate(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	every := func(n int, gap time.Duration) *Ring {
		var r Ring
		for i := range n {
			r.Observe(t0.Add(time.Duration(i) * gap))
		}
		return &r
	}
	tests := []struct {
		name   string
		r      *Ring
		now    time.Time
		window time.Duration
		least  int
		want   float64
		ok     bool
	}{
		{"empty", &Ring{}, t0, time.Minute, 1, 0, false},
		{"one is no rate", every(1, time.Second), t0, time.Minute, 1, 0, false},
		{"too few", every(3, time.Second), t0.Add(2 * time.Second), time.Minute, 4, 0, false},
		{"steady 10/s", every(20, 100*time.Millisecond), t0.Add(1900 * time.Millisecond), time.Minute, 8, 10, true},
		{"ring keeps the last 64", every(200, 10*time.Millisecond), t0.Add(1990 * time.Millisecond), time.Minute, 8, 100, true},
		{"stopped flow slows", every(11, 100*time.Millisecond), t0.Add(2 * time.Second), time.Minute, 8, 5, true},
		{"out of window", every(10, 100*time.Millisecond), t0.Add(time.Hour), time.Minute, 1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.r.Rate(tt.now, tt.window, tt.least)
			if ok != tt.ok || math.Abs(got-tt.want) > 1e-9 {
				t.Fatalf("Rate = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if r := every(3, time.Second); !r.Newest().Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("Newest = %v", r.Newest())
	}
}
