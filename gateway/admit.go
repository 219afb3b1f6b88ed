// This file owns the seam between the lanes and the router: how a request
// parked on a lane (a synchronous one, or a job's) takes capacity, and
// what the lanes learn of a route's providers to answer at once a request
// nothing can serve before its wait ends (lanes.Waiter.Hold, FailFast),
// counted in relay_fast_rejections_total.

package gateway

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
)

var _ lanes.Grant = (*workers.Grant)(nil)

// admitFunc adapts a's admission of req to the lanes' AdmitFunc: the
// grant (a *workers.Grant), or the earliest time a refusing provider
// named.
func admitFunc(a workers.Admitter, req *workers.Request) lanes.AdmitFunc {
	return func() (lanes.Grant, time.Time, bool) {
		g, retryAt, ok := workers.TryAdmit(a, req)
		if !ok {
			return nil, retryAt, false
		}
		return g, retryAt, true
	}
}

// holder says until when no target of a request's route can serve it
// (*workers.Router: open breakers, cool-downs, key back-offs).
type holder interface {
	Hold(req *workers.Request) (time.Time, actor.Reason)
}

var _ holder = (*workers.Router)(nil)

// holdFunc adapts d's Hold of req to lanes.Waiter.Hold; nil when d cannot
// tell (the lanes then never answer early on a hold).
func holdFunc(d any, req *workers.Request) func() (time.Time, string) {
	h, ok := d.(holder)
	if !ok {
		return nil
	}
	return func() (time.Time, string) {
		until, why := h.Hold(req)
		return until, string(why)
	}
}

// fastReasons are the reasons of relay_fast_rejections_total.
var fastReasons = []string{string(actor.ReasonBreakerOpen), string(actor.ReasonCoolingDown),
	string(actor.ReasonProviderAuth), lanes.ReasonLaneWait}

// fastMetrics counts the requests answered at once, or early, because
// nothing could serve them before their wait ended.
type fastMetrics struct {
	rejections *prometheus.CounterVec
}

func newFastMetrics(reg prometheus.Registerer) *fastMetrics {
	m := &fastMetrics{rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_fast_rejections_total",
		Help: "Requests answered 529/503 at once, or before their wait ended, because no target of their route could serve them in time, by route and reason (breaker_open, cooling_down, provider_auth, lane_wait).",
	}, []string{"route", "reason"})}
	reg.MustRegister(m.rejections)
	return m
}

// seed makes the series of every route d serves exist at zero (pattern
// routes by their pattern).
func (m *fastMetrics) seed(d Dispatcher) {
	rl, ok := d.(routeLister)
	if !ok {
		return
	}
	for route := range rl.RouteProviders() {
		for _, reason := range fastReasons {
			m.rejections.WithLabelValues(route, reason)
		}
	}
}

// count records err when it is an early answer of route.
func (m *fastMetrics) count(route string, err error) {
	var early *lanes.EarlyError
	if errors.As(err, &early) {
		m.rejections.WithLabelValues(route, early.Reason).Inc()
	}
}

// earlyReasons say, in an answer's message, why nothing can serve in time.
var earlyReasons = map[string]string{
	string(actor.ReasonBreakerOpen):  "the circuit breakers of its providers are open",
	string(actor.ReasonCoolingDown):  "its providers asked the relay to wait (retry-after)",
	string(actor.ReasonProviderAuth): "its providers are set aside (their keys were refused)",
	lanes.ReasonLaneWait:             "the requests parked ahead of it on its lane take longer",
}

// earlyMsg is the message of an early answer.
func earlyMsg(err error, a *about) string {
	why := "no provider can take it"
	var early *lanes.EarlyError
	if errors.As(err, &early) {
		if s, ok := earlyReasons[early.Reason]; ok {
			why = s
		}
	}
	return "no upstream capacity for this model is expected within this request's wait (" + a.lane.MaxWait.String() +
		"): " + why + "; retry after the time given"
}

// earlyRetry sets retry-after, and x-relay-estimated-wait-ms, to when
// capacity is expected.
func earlyRetry(e *apiError, err error, _ *about) {
	var early *lanes.EarlyError
	if errors.As(err, &early) {
		e.retryAfter, e.estimatedWait = early.Wait, max(early.Wait, time.Millisecond)
	}
	if e.retryAfter <= 0 {
		e.retryAfter = time.Second
	}
}
