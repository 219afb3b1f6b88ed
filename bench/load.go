package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Relay credentials and route used by every scenario.
const (
	benchKey   = "bench-key"
	benchModel = "bench-model"
)

// maxOpenLoopWorkers bounds vegeta's workers, so a target that stalls cannot
// open more sockets than the file descriptor limit allows. Below it, vegeta
// starts a worker for every arrival that finds all workers busy, so slow
// responses never delay later arrivals (no coordinated omission).
const maxOpenLoopWorkers = 12000

// request is the one request a load run sends, over and over.
type request struct {
	URL    string
	Header http.Header
	Body   []byte
	Stream bool // success needs a complete body with message_stop
}

// messagesRequest returns the Anthropic Messages request sent to baseURL
// (http://host:port, no path).
func messagesRequest(baseURL string, stream bool) request {
	body := `{"model":"` + benchModel + `","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}`
	if stream {
		body = `{"model":"` + benchModel + `","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
	}
	h := http.Header{}
	h.Set("x-api-key", benchKey)
	h.Set("anthropic-version", "2023-06-01")
	h.Set("content-type", "application/json")
	return request{URL: baseURL + "/v1/messages", Header: h, Body: []byte(body), Stream: stream}
}

// succeeded tells whether a response counts as served: a 2xx status and, for
// a stream, a body that was read to its end and holds message_stop.
func succeeded(code int, body []byte, stream bool) bool {
	if code < 200 || code > 299 {
		return false
	}
	return !stream || bytes.Contains(body, []byte("message_stop"))
}

// shape is how load is offered: open loop at Rate arrivals per second, or,
// with Rate 0, closed loop with Workers clients each sending as soon as its
// previous response is read. Every run stops after Duration or MaxRequests,
// whichever comes first; in-flight requests then finish (bounded by Timeout).
type shape struct {
	Rate        int
	Workers     int
	Duration    time.Duration
	MaxRequests uint64
	Timeout     time.Duration
	// Epoch, when set, is the instant sample.At counts from (default: the
	// start of this run), so concurrent runs share one time axis.
	Epoch time.Time
}

// boundedPacer paces at a constant rate (or as fast as workers allow when
// rate is 0) and stops after max hits.
type boundedPacer struct {
	rate int
	max  uint64
}

var _ vegeta.Pacer = boundedPacer{}

// Pace implements vegeta.Pacer.
func (p boundedPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if hits >= p.max {
		return 0, true
	}
	if p.rate <= 0 {
		return 0, false
	}
	return vegeta.ConstantPacer{Freq: p.rate, Per: time.Second}.Pace(elapsed, hits)
}

// Rate implements vegeta.Pacer.
func (p boundedPacer) Rate(time.Duration) float64 {
	return float64(p.rate)
}

// newTransport returns a client transport for loopback load: no proxy from
// the environment, no compression, enough idle connections for conns.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
}

// attack offers load of shape s with vegeta and returns one sample per request,
// in no particular order. It stops early, with an error, when ctx ends.
func attack(ctx context.Context, name string, r request, s shape) ([]sample, error) {
	if s.MaxRequests == 0 {
		s.MaxRequests = uint64(float64(s.Rate)*s.Duration.Seconds()) + 1
	}
	if s.Timeout == 0 {
		s.Timeout = 15 * time.Second
	}
	opts := []func(*vegeta.Attacker){vegeta.MaxBody(-1)}
	conns := 1024
	if s.Rate <= 0 {
		conns = max(s.Workers, 1)
		opts = append(opts, vegeta.Workers(uint64(conns)), vegeta.MaxWorkers(uint64(conns)))
	} else {
		opts = append(opts, vegeta.MaxWorkers(maxOpenLoopWorkers))
	}
	tr := newTransport(conns)
	defer tr.CloseIdleConnections()
	if s.Rate <= 0 {
		tr.MaxConnsPerHost = conns
	}
	// vegeta.Client must come first: it replaces the whole client.
	opts = append([]func(*vegeta.Attacker){vegeta.Client(&http.Client{Transport: tr, Timeout: s.Timeout})}, opts...)
	atk := vegeta.NewAttacker(opts...)

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			atk.Stop()
		case <-done:
		}
	}()

	tgt := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodPost, URL: r.URL, Body: r.Body, Header: r.Header})
	samples := make([]sample, 0, min(s.MaxRequests, 1<<20))
	start := s.Epoch
	if start.IsZero() {
		start = time.Now()
	}
	for res := range atk.Attack(tgt, boundedPacer{rate: s.Rate, max: s.MaxRequests}, s.Duration, name) {
		x := sample{At: res.Timestamp.Sub(start), Latency: res.Latency, Code: int(res.Code), Err: res.Error}
		if v := res.Headers.Get("X-Relay-Queue-Ms"); v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				x.Queue, x.HasQueue = time.Duration(n)*time.Millisecond, true
			}
		}
		x.OK = res.Error == "" && succeeded(x.Code, res.Body, r.Stream)
		if !x.OK && x.Err == "" {
			x.Err = "incomplete stream: no message_stop"
		}
		samples = append(samples, x)
	}
	close(done)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return samples, fmt.Errorf("load %s interrupted: %w", name, err)
	}
	return samples, nil
}
