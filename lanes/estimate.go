// This file owns the answers that do not make callers wait for nothing:
// the drain-rate estimate of a parked request's wait, and the early end
// of a wait that cannot be served in time (EarlyError).

package lanes

import (
	"errors"
	"fmt"
	"time"

	"github.com/relaygw/relay/lanes/recent"
)

// ErrCannotServeInTime means no capacity is expected before the request's
// wait ends: parking it would only make its caller wait for nothing. An
// *EarlyError wraps it.
var ErrCannotServeInTime = errors.New("no capacity is expected before the wait ends")

// ReasonLaneWait is the EarlyError reason of a request whose lane's
// estimated wait is longer than its own.
const ReasonLaneWait = "lane_wait"

// EarlyError is the error of a request refused at Park, or ended while
// parked, because nothing can serve it before its wait ends.
type EarlyError struct {
	// Reason is ReasonLaneWait, or the reason a Waiter's Hold gave
	// (breaker_open, cooling_down, provider_auth).
	Reason string
	// Wait is how long from the refusal until capacity is expected: the
	// end of the hold, or the lane's estimated wait.
	Wait time.Duration
}

// Error implements error.
func (e *EarlyError) Error() string {
	return fmt.Sprintf("%s (%s, expected in %s)", ErrCannotServeInTime, e.Reason, e.Wait)
}

// Unwrap returns ErrCannotServeInTime.
func (e *EarlyError) Unwrap() error { return ErrCannotServeInTime }

// The drain estimate: how fast a lane serves one route's parked requests.
const (
	// drainWindow is how far back a dispatch counts.
	drainWindow = 30 * time.Second
	// drainMinSamples is how many dispatches within drainWindow make the
	// estimate trusted; with fewer (a cold lane, or one whose route has
	// not been backlogged lately) nothing is refused on an estimate.
	drainMinSamples = 8
	// drainPrune is the number of routes per lane above which routes with
	// no dispatch within drainWindow are forgotten.
	drainPrune = 256
)

// drain is the recent dispatches of one route's parked requests from
// one lane.
type drain = recent.Ring

// observeDrain records a dispatch of route's request from l; s.mu is held.
func (l *lane) observeDrain(route string, now time.Time) {
	if l.drains == nil {
		l.drains = map[string]*drain{}
	}
	d := l.drains[route]
	if d == nil {
		if len(l.drains) >= drainPrune {
			for r, x := range l.drains {
				if now.Sub(x.Newest()) > drainWindow {
					delete(l.drains, r)
				}
			}
		}
		d = &drain{}
		l.drains[route] = d
	}
	d.Observe(now)
}

// ahead counts the requests of rq that the dispatcher takes before a new
// one of key: the key's own, and from every other key (keys take turns)
// as many as the key's own plus one, or all it has.
func (rq *routeQ) ahead(key string) int {
	own := 0
	if kq := rq.byKey[key]; kq != nil {
		own = kq.queue.Len()
	}
	n := own
	for _, kq := range rq.keys {
		if kq.key != key {
			n += min(kq.queue.Len(), own+1)
		}
	}
	return n
}

// estimate returns how long a new request of key for route would wait on
// l: the requests ahead of it over the route's recent drain rate from l.
// trusted is false when nothing is ahead, or the drain rate has too few
// samples to go by; s.mu is held.
func (l *lane) estimate(now time.Time, route, key string) (wait time.Duration, ahead int, trusted bool) {
	rq := l.byRoute[route]
	if rq == nil {
		return 0, 0, false
	}
	ahead = rq.ahead(key)
	d := l.drains[route]
	if ahead == 0 || d == nil {
		return 0, ahead, false
	}
	rate, ok := d.Rate(now, drainWindow, drainMinSamples)
	if !ok {
		return 0, ahead, false
	}
	return time.Duration(float64(ahead) / rate * float64(time.Second)), ahead, true
}

// Estimate returns how long a new request of key for route would wait
// parked on lane, how many requests are ahead of it, and whether the
// estimate is trusted (see Waiter.FailFast). It takes the Set's lock once.
func (s *Set) Estimate(lane, route, key string) (wait time.Duration, ahead int, trusted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.byName[lane]
	if !ok {
		return 0, 0, false
	}
	return l.estimate(s.now(), route, key)
}

// refuseEarly returns the EarlyError of w, about to park on l with its
// wait ending at deadline, or nil: FailFast waiters whose Hold lasts to
// the deadline, or whose trusted estimated wait ends after it; s.mu is
// held.
func (s *Set) refuseEarly(l *lane, w *Waiter, now, deadline time.Time) *EarlyError {
	if !w.FailFast {
		return nil
	}
	if w.Hold != nil {
		if until, why := w.Hold(); !until.IsZero() && !until.Before(deadline) {
			return &EarlyError{Reason: why, Wait: until.Sub(now)}
		}
	}
	if wait, _, ok := l.estimate(now, w.Route, w.Key); ok && now.Add(wait).After(deadline) {
		return &EarlyError{Reason: ReasonLaneWait, Wait: wait}
	}
	return nil
}

// endHeld ends early the waits of the FailFast requests parked for the
// route of t (refused just now) whose deadline comes before its Hold
// ends, on every lane. It looks again only when the hold changes, so a
// long-held route costs one Hold call per pass; s.mu is held.
func (s *Set) endHeld(t *Ticket, now time.Time) {
	if t.w.Hold == nil {
		return
	}
	until, why := t.w.Hold()
	route := t.w.Route
	if until.IsZero() || s.swept[route].Equal(until) {
		return
	}
	s.swept[route] = until
	var early []*Ticket
	for _, l := range s.lanes {
		rq := l.byRoute[route]
		if rq == nil {
			continue
		}
		for _, kq := range rq.keys {
			for e := kq.queue.Front(); e != nil; e = e.Next() {
				if x := e.Value.(*Ticket); x.w.FailFast && !until.Before(x.deadline) {
					early = append(early, x)
				}
			}
		}
	}
	for _, x := range early {
		s.settle(x, nil, &EarlyError{Reason: why, Wait: until.Sub(now)})
		s.metrics.rejected(x.lane.Name, "early")
	}
}
