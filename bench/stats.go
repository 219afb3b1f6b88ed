package main

import (
	"math"
	"slices"
	"strconv"
	"time"
)

// sample is the outcome of one request.
type sample struct {
	At      time.Duration // when it was sent, since the start of its run
	Latency time.Duration // until the whole body was read
	Code    int           // HTTP status; 0 when the request failed before one
	OK      bool
	Err     string // why it failed, when it did
	// Queue is the relay's x-relay-queue-ms (time parked on a lane), when
	// HasQueue: the relay sets it on every request it admitted.
	Queue    time.Duration
	HasQueue bool
}

// latencySummary holds the figures reported for a set of samples.
type latencySummary struct {
	Requests     int            `json:"requests"`
	OK           int            `json:"ok"`
	SuccessRatio float64        `json:"success_ratio"`
	ErrorRatio   float64        `json:"error_ratio"`
	P50          time.Duration  `json:"p50_ns"`
	P90          time.Duration  `json:"p90_ns"`
	P95          time.Duration  `json:"p95_ns"`
	P99          time.Duration  `json:"p99_ns"`
	Max          time.Duration  `json:"max_ns"`
	Mean         time.Duration  `json:"mean_ns"`
	Codes        map[string]int `json:"codes"`
	// Errors holds up to maxErrors distinct failure reasons.
	Errors []string `json:"errors,omitempty"`
}

// maxErrors bounds the distinct failure reasons kept in a summary.
const maxErrors = 5

// percentile returns the nearest-rank q-quantile (0 < q <= 1) of sorted
// durations, or 0 for none.
func percentile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n))) - 1
	i = max(0, min(i, n-1))
	return sorted[i]
}

// summarize computes the latency percentiles of all samples (failed ones
// included: a fast error is not hidden, a slow one not dropped), the
// success ratio and the count of each status code ("0" for transport errors).
func summarize(samples []sample) latencySummary {
	s := latencySummary{Requests: len(samples), Codes: map[string]int{}}
	if len(samples) == 0 {
		return s
	}
	lat := make([]time.Duration, 0, len(samples))
	var sum time.Duration
	for _, x := range samples {
		lat = append(lat, x.Latency)
		sum += x.Latency
		if x.OK {
			s.OK++
		} else if x.Err != "" && len(s.Errors) < maxErrors && !slices.Contains(s.Errors, x.Err) {
			s.Errors = append(s.Errors, x.Err)
		}
		s.Codes[codeKey(x.Code)]++
	}
	slices.Sort(lat)
	s.SuccessRatio = float64(s.OK) / float64(len(samples))
	s.ErrorRatio = 1 - s.SuccessRatio
	s.P50 = percentile(lat, 0.50)
	s.P90 = percentile(lat, 0.90)
	s.P95 = percentile(lat, 0.95)
	s.P99 = percentile(lat, 0.99)
	s.Max = lat[len(lat)-1]
	s.Mean = sum / time.Duration(len(lat))
	return s
}

func codeKey(code int) string {
	if code == 0 {
		return "error"
	}
	return strconv.Itoa(code)
}

// between returns the samples sent in [from, to).
func between(samples []sample, from, to time.Duration) []sample {
	var out []sample
	for _, s := range samples {
		if s.At >= from && s.At < to {
			out = append(out, s)
		}
	}
	return out
}

// ratio returns a/b, or nil when b is not positive (a ratio to a zero or
// negative baseline means nothing, and JSON has no NaN).
func ratio(a, b float64) *float64 {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return nil
	}
	r := a / b
	return &r
}

// slope returns the least-squares slope of y over x, or 0 for fewer than two
// distinct x.
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if len(x) < 2 || len(x) != len(y) {
		return 0
	}
	var sx, sy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
	}
	mx, my := sx/n, sy/n
	var num, den float64
	for i := range x {
		num += (x[i] - mx) * (y[i] - my)
		den += (x[i] - mx) * (x[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}
