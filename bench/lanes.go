package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Lane names of the relay configurations the burst and priority scenarios
// write, highest priority first.
const (
	laneInteractive = "interactive"
	laneStandard    = "standard"
	laneBatch       = "batch"
)

// withLane returns r sending x-relay-lane: lane.
func withLane(r request, lane string) request {
	r.Header = r.Header.Clone()
	r.Header.Set("X-Relay-Lane", lane)
	return r
}

// waitSummary is the distribution of x-relay-queue-ms over the responses
// that carried it (the relay sets it on every request it admitted).
type waitSummary struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
	Mean  time.Duration `json:"mean_ns"`
	// Queued counts responses that waited at least 1 ms on a lane.
	Queued int `json:"queued"`
}

// summarizeWait computes the queue-wait distribution of samples (nearest
// rank, millisecond resolution as the header gives it).
func summarizeWait(samples []sample) waitSummary {
	var w []time.Duration
	var sum time.Duration
	var s waitSummary
	for _, x := range samples {
		if !x.HasQueue {
			continue
		}
		w = append(w, x.Queue)
		sum += x.Queue
		if x.Queue > 0 {
			s.Queued++
		}
	}
	s.Count = len(w)
	if len(w) == 0 {
		return s
	}
	slices.Sort(w)
	s.P50, s.P90, s.P99 = percentile(w, 0.5), percentile(w, 0.9), percentile(w, 0.99)
	s.Max = w[len(w)-1]
	s.Mean = sum / time.Duration(len(w))
	return s
}

// promValues returns the values of the samples of metric in a Prometheus
// text exposition, keyed by the value of label ("" when the sample has no
// such label). Samples of other metrics, including metric_suffix ones, are
// skipped.
func promValues(text []byte, metric, label string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, metric)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		var labels string
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[labelValue(labels, label)] += v
	}
	return out
}

// labelValue returns the value of name in a Prometheus label list
// (a="x",b="y"), or "".
func labelValue(labels, name string) string {
	for labels != "" {
		k, rest, ok := strings.Cut(labels, "=")
		if !ok || len(rest) == 0 || rest[0] != '"' {
			return ""
		}
		// Find the closing quote, skipping escaped characters.
		i := 1
		for i < len(rest) && rest[i] != '"' {
			if rest[i] == '\\' {
				i++
			}
			i++
		}
		if i >= len(rest) {
			return ""
		}
		v := rest[1:i]
		if strings.TrimSpace(k) == name {
			if u, err := strconv.Unquote(`"` + v + `"`); err == nil {
				return u
			}
			return v
		}
		labels = strings.TrimPrefix(rest[i+1:], ",")
	}
	return ""
}

// lanePoint is the relay's lane metrics at one instant.
type lanePoint struct {
	At time.Duration `json:"at_ns"` // since the epoch of the run
	// Depth is relay_lane_depth by lane; Dispatched relay_lane_dispatched_total.
	Depth      map[string]float64 `json:"depth"`
	Dispatched map[string]float64 `json:"dispatched"`
}

// laneWatch scrapes the relay's /metrics every interval until ctx ends.
// Its fields are read by the owner only after run returned.
type laneWatch struct {
	client   *http.Client
	url      string // the relay's /metrics
	interval time.Duration
	points   []lanePoint
	err      error
}

// run scrapes until ctx ends, At counting from epoch.
func (w *laneWatch) run(ctx context.Context, epoch time.Time) {
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for {
		at := time.Since(epoch)
		body, err := control(ctx, w.client, http.MethodGet, w.url)
		if err != nil {
			if ctx.Err() == nil {
				w.err = err
			}
			return
		}
		w.points = append(w.points, lanePoint{
			At:         at,
			Depth:      promValues(body, "relay_lane_depth", "lane"),
			Dispatched: promValues(body, "relay_lane_dispatched_total", "lane"),
		})
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// peakDepth returns the highest depth of lane over points and when it was
// seen.
func peakDepth(points []lanePoint, lane string) (float64, time.Duration) {
	var peak float64
	var at time.Duration
	for _, p := range points {
		if d := p.Depth[lane]; d > peak {
			peak, at = d, p.At
		}
	}
	return peak, at
}

// dispatchedAt returns the dispatched_total of each lane at t, linearly
// interpolated between the points around it (the first or last point
// outside their span).
func dispatchedAt(points []lanePoint, t time.Duration) map[string]float64 {
	if len(points) == 0 {
		return nil
	}
	i := 0
	for i < len(points) && points[i].At <= t {
		i++
	}
	if i == 0 {
		return points[0].Dispatched
	}
	if i == len(points) {
		return points[i-1].Dispatched
	}
	a, b := points[i-1], points[i]
	f := float64(t-a.At) / float64(b.At-a.At)
	out := map[string]float64{}
	for k, v := range a.Dispatched {
		out[k] = v
	}
	for k, v := range b.Dispatched {
		out[k] = a.Dispatched[k] + f*(v-a.Dispatched[k])
	}
	return out
}

// depthTable prints the depth of lanes over time in at most rows rows, each
// the highest depth seen in its slice of time, so no peak is lost.
func depthTable(points []lanePoint, lanes []string, rows int) *table {
	head := []string{"t s"}
	for _, l := range lanes {
		head = append(head, l+" depth")
	}
	t := newTable(head...)
	if len(points) == 0 || rows <= 0 {
		return t
	}
	per := (len(points) + rows - 1) / rows
	for i := 0; i < len(points); i += per {
		chunk := points[i:min(i+per, len(points))]
		cells := []string{strconv.FormatFloat(chunk[0].At.Seconds(), 'f', 1, 64)}
		for _, l := range lanes {
			var m float64
			for _, p := range chunk {
				m = max(m, p.Depth[l])
			}
			cells = append(cells, strconv.FormatFloat(m, 'f', 0, 64))
		}
		t.add(cells...)
	}
	return t
}

// upstreamStats reads a simulated upstream's counters.
func upstreamStats(ctx context.Context, client *http.Client, base string) (simStats, error) {
	body, err := control(ctx, client, http.MethodGet, base+"/_sim/stats")
	if err != nil {
		return simStats{}, err
	}
	var st simStats
	if err := json.Unmarshal(body, &st); err != nil {
		return simStats{}, fmt.Errorf("decode stats of %s: %w", base, err)
	}
	return st, nil
}

// simStats is the part of simupstream.Stats the bench reads.
type simStats struct {
	Requests    int64 `json:"requests"`
	RateLimited int64 `json:"rate_limited"`
	MaxInFlight int64 `json:"max_in_flight"`
}

// sub returns the counters s - o.
func (s simStats) sub(o simStats) simStats {
	return simStats{Requests: s.Requests - o.Requests, RateLimited: s.RateLimited - o.RateLimited, MaxInFlight: s.MaxInFlight}
}
