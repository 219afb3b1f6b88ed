package gateway

// This file owns the proxied requests' Prometheus metrics: what is
// counted, the series created at zero for the configured routes and lanes,
// time to first token and the relay's own added latency.

import (
	"bytes"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"

	"github.com/relaygw/relay/workers"
)

// metrics are the gateway's Prometheus metrics.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	ttft     *prometheus.HistogramVec
	added    *prometheus.HistogramVec
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
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_time_to_first_token_seconds",
			Help:    "Streams: time from a request's arrival to the first content event (text, tool call or reasoning) written to the client, queue wait included.",
			Buckets: []float64{.025, .05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120, 300},
		}, []string{"route"}),
		added: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "relay_added_latency_seconds",
			Help: "The relay's own time per request: its duration minus the time parked on a lane and minus the time waiting on upstreams " +
				"(the dispatcher's call with its attempts, retries and backoff; streams: each wait for the next upstream event).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_inflight_requests",
			Help: "Proxied requests being served now.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.ttft, m.added, m.inflight)
	return m
}

// modes are the values of the mode label.
var modes = []string{"direct", "queued"}

// routeLister is a Dispatcher that can name its routes and the providers
// each calls (*workers.Router), so their series exist before the first
// request.
type routeLister interface {
	RouteProviders() map[string][]string
}

// known creates at zero the series of cfg's routes: the histograms per
// route (and mode), and relay_requests_total with code 200 for each of
// the route's providers on each lane and mode, the denominator an error
// ratio needs from the first scrape. Other codes appear when first
// answered. Called on start-up and on every reload; series of names that
// left the configuration stay (Prometheus sees them as flat).
func (m *metrics) known(cfg Config) {
	rl, ok := cfg.Dispatcher.(routeLister)
	if !ok {
		return
	}
	for route, providers := range rl.RouteProviders() {
		m.ttft.WithLabelValues(route)
		m.added.WithLabelValues(route)
		for _, mode := range modes {
			m.duration.WithLabelValues(route, mode)
			for _, p := range providers {
				for _, l := range cfg.Lanes {
					m.requests.WithLabelValues(route, p, l.Name, mode, "200")
				}
			}
		}
	}
}

// observe records a finished request: d is its whole duration, queued its
// time parked on lanes, upstream its time waiting on upstreams, and ttft
// its time to first token (0: none, not a stream or no content sent).
func (m *metrics) observe(x *exchange, code string, d time.Duration) {
	m.requests.WithLabelValues(x.route, x.provider, x.lane.Name, x.mode, code).Inc()
	m.duration.WithLabelValues(x.route, x.mode).Observe(d.Seconds())
	added := max(d-x.queued-x.upstream, 0)
	m.added.WithLabelValues(x.route).Observe(added.Seconds())
	if x.ttft > 0 {
		m.ttft.WithLabelValues(x.route).Observe(x.ttft.Seconds())
	}
}

// firstToken notes the time to first token when ev, an event in the
// client's format just written, is the stream's first content event.
func (x *exchange) firstToken(ev []byte) {
	if x.ttft == 0 && contentEvent(x.format, ev) {
		x.ttft = max(time.Since(x.start), time.Nanosecond)
	}
}

// contentEvent reports whether ev, one server-sent event in format f,
// carries generated content: Anthropic's content_block_delta (text, tool
// input or thinking), or an OpenAI chunk whose delta has content, a
// refusal, reasoning or tool calls. Role-only and usage-only chunks,
// message starts and pings are not content.
func contentEvent(f workers.Format, ev []byte) bool {
	data := sseData(ev)
	if len(data) == 0 {
		return false
	}
	if f == workers.FormatAnthropic {
		return gjson.GetBytes(data, "type").Str == "content_block_delta"
	}
	d := gjson.GetBytes(data, "choices.0.delta")
	for _, k := range []string{"content", "refusal", "reasoning_content", "reasoning"} {
		if d.Get(k).Str != "" {
			return true
		}
	}
	return len(d.Get("tool_calls").Array()) > 0
}

// sseData returns the first data field of a server-sent event.
func sseData(ev []byte) []byte {
	for len(ev) > 0 {
		line := ev
		if i := bytes.IndexByte(ev, '\n'); i >= 0 {
			line, ev = ev[:i], ev[i+1:]
		} else {
			ev = nil
		}
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}
