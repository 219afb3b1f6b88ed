package workers

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/workers/actor"
)

// actorCollector exports the admission state of the current providers'
// actors at scrape time, so no gauge is ever kept in step by hand.
type actorCollector struct {
	actors   func() []*actor.Actor
	breaker  *prometheus.Desc
	inflight *prometheus.Desc
	cooling  *prometheus.Desc
	tokens   *prometheus.Desc
}

// NewActorCollector returns a collector of the actors that actors returns
// at each scrape (providers come and go with reloads):
// relay_breaker_state{provider} (0 closed, 1 half-open, 2 open),
// relay_provider_inflight{provider}, relay_provider_cooling_down{provider}
// and relay_provider_capacity{provider,bucket} (what each limited bucket
// could admit now).
func NewActorCollector(actors func() []*actor.Actor) prometheus.Collector {
	return &actorCollector{
		actors: actors,
		breaker: prometheus.NewDesc("relay_breaker_state",
			"Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.", []string{"provider"}, nil),
		inflight: prometheus.NewDesc("relay_provider_inflight",
			"Upstream calls in flight per provider.", []string{"provider"}, nil),
		cooling: prometheus.NewDesc("relay_provider_cooling_down",
			"1 while a provider waits out an upstream retry-after, else 0.", []string{"provider"}, nil),
		tokens: prometheus.NewDesc("relay_provider_capacity",
			"What a provider's limited bucket could admit now: requests, input_tokens or output_tokens.", []string{"provider", "bucket"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *actorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.breaker
	ch <- c.inflight
	ch <- c.cooling
	ch <- c.tokens
}

// Collect implements prometheus.Collector.
func (c *actorCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, a := range c.actors() {
		st := a.State()
		ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, breakerValue(st.Breaker), st.Name)
		ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(st.InFlight), st.Name)
		cooling := 0.0
		if st.CoolingUntil.After(now) {
			cooling = 1
		}
		ch <- prometheus.MustNewConstMetric(c.cooling, prometheus.GaugeValue, cooling, st.Name)
		for _, b := range []struct {
			name string
			st   actor.BucketState
		}{{"requests", st.Requests}, {"input_tokens", st.InputTokens}, {"output_tokens", st.OutputTokens}} {
			if math.IsInf(b.st.Available, 0) {
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.tokens, prometheus.GaugeValue, b.st.Available, st.Name, b.name)
		}
	}
}

func breakerValue(s actor.BreakerState) float64 {
	switch s.String() {
	case "half_open":
		return 1
	case "open":
		return 2
	}
	return 0
}
