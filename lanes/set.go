// This file owns the priority lanes' Set: lane specs (checked here,
// defaulted only by configs), parking, expiry and the dispatcher that
// admits parked requests in priority order.

package lanes

import (
	"container/heap"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/lanes/assets"
)

// Errors returned by Wait.
var (
	// ErrLaneFull means the lane already holds MaxDepth parked requests.
	ErrLaneFull = errors.New("lane is full")
	// ErrWaitExpired means no capacity came within the waiter's MaxWait.
	ErrWaitExpired = errors.New("waited the longest allowed for capacity")
	// ErrUnknownLane means no lane has the waiter's name.
	ErrUnknownLane = errors.New("unknown lane")
	// ErrClosed means the Set was closed while the request waited.
	ErrClosed = errors.New("lanes closed")
)

// Spec configures one lane.
type Spec struct {
	// Name identifies the lane.
	Name string
	// MaxDepth bounds the requests parked on the lane.
	MaxDepth int
	// MaxWait is the longest a request may wait parked.
	MaxWait time.Duration
	// MinShare is the share of dispatches the lane gets while backlogged,
	// whatever the higher lanes hold; 0 means strict priority.
	MinShare float64
}

// Grant is capacity an AdmitFunc took for a request. The lanes hand it to
// the request's caller, or give it back with Release when the caller left
// at the moment it was admitted.
type Grant interface {
	// Release gives the capacity back unused.
	Release()
}

// AdmitFunc tries to take capacity for a parked request. It returns the
// grant when capacity was taken; otherwise ok is false and retryAt is the
// earliest time capacity may exist (zero when only a Kick can tell).
type AdmitFunc func() (grant Grant, retryAt time.Time, ok bool)

// Waiter is a request asking to park.
type Waiter struct {
	// Lane names the lane to wait on.
	Lane string
	// Key names the client, for round-robin fairness within a lane.
	Key string
	// Route names the capacity the request competes for: waiters with the
	// same Route are admitted by the same providers.
	Route string
	// MaxWait bounds the wait; 0 or more than the lane's MaxWait means the
	// lane's.
	MaxWait time.Duration
	// Admit takes capacity for the request.
	Admit AdmitFunc
	// Hold, when set, reports until when no target of the request's route
	// can take it whatever happens meanwhile (every breaker open, every
	// provider cooling down), and why; the zero time when one may sooner.
	// It must be cheap and must not call into the Set.
	Hold func() (until time.Time, reason string)
	// FailFast answers the request early, with an *EarlyError, when it
	// cannot be served before its wait ends: Park refuses it when its
	// Hold lasts until its deadline or its lane's trusted estimated wait
	// (Set.Estimate) ends after it, and the dispatcher ends its wait once
	// parked when a hold that outlasts it begins (seen through the Hold
	// of any request of the same route).
	FailFast bool
}

// Options configure a Set.
type Options struct {
	// Lanes are the lanes, highest priority first.
	Lanes []Spec
	// JetStream, when set, receives the mirror of parked requests in the
	// stream RELAY_LANES.
	JetStream jetstream.JetStream
	// Registry registers the lane metrics; nil registers none.
	Registry prometheus.Registerer
	// Logger logs mirror problems; nil discards.
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
	// Assets declares RELAY_LANES by the rule relays share (package
	// assets); nil: a Declarer of its own.
	Assets *assets.Declarer
}

// Set is a set of priority lanes with one dispatcher. It is safe for
// concurrent use. Close stops it.
type Set struct {
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics
	mirror  *mirror

	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	parked atomic.Int64 // all parked requests, for the lock-free Parked check

	mu      sync.Mutex
	lanes   []*lane
	byName  map[string]*lane
	routes  map[string]int // parked requests per route
	closed  bool
	blocked map[string]bool // scratch: routes refused in the current pass
	// swept holds, per route with parked requests, the end of the last
	// hold whose early answers were given (endHeld).
	swept map[string]time.Time
	seq   uint64
	// deadlines orders the parked requests by the end of their wait, for
	// the dispatcher to expire them: no timer per parked request.
	deadlines deadlineHeap
}

type lane struct {
	Spec
	depth   int
	routes  []*routeQ
	byRoute map[string]*routeQ
	next    int     // route rotation
	share   float64 // decaying count of dispatches
	rate    rateEstimator
	drains  map[string]*drain // recent dispatches by route (estimate.go)
}

type routeQ struct {
	name  string
	keys  []*keyQ
	byKey map[string]*keyQ
	next  int // key rotation
	count int
}

type keyQ struct {
	key   string
	queue list.List // of *Ticket
}

// Ticket is a parked request's place on its lane, from Park until its
// outcome: a grant, or why there is none. It is decided once, under the
// Set's lock, by whoever takes the request out of its queue: the
// dispatcher (a grant, or ErrWaitExpired), the caller's context going away,
// or Close.
type Ticket struct {
	s        *Set
	ctx      context.Context
	w        Waiter
	id       uint64
	lane     *lane
	route    *routeQ
	kq       *keyQ
	elem     *list.Element // nil once out of its queue
	hidx     int           // index in s.deadlines
	parkedAt time.Time
	deadline time.Time
	done     chan struct{} // closed once the outcome below is set
	grant    Grant
	err      error
	waited   time.Duration
}

// deadlineHeap is a min-heap of parked tickets by deadline.
type deadlineHeap []*Ticket

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *deadlineHeap) Push(x any) {
	t := x.(*Ticket)
	t.hidx = len(*h)
	*h = append(*h, t)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.hidx = -1
	return t
}

// Open returns a running Set.
func Open(ctx context.Context, o Options) (*Set, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Set{
		now:     o.Now,
		log:     o.Logger,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		byName:  map[string]*lane{},
		routes:  map[string]int{},
		blocked: map[string]bool{},
		swept:   map[string]time.Time{},
	}
	if err := s.setLanes(o.Lanes); err != nil {
		return nil, err
	}
	if o.JetStream != nil {
		decl := o.Assets
		if decl == nil {
			decl = assets.New(o.JetStream, assets.Options{Logger: o.Logger})
		}
		m, err := openMirror(ctx, o.JetStream, decl, o.Lanes, o.Logger)
		if err != nil {
			return nil, err
		}
		s.mirror = m
	}
	if o.Registry != nil {
		s.metrics = newMetrics(o.Registry, s)
	}
	go s.run()
	return s, nil
}

// CheckSpecs reports what is wrong with specs, or nil: at least one lane,
// each named once, with a positive MaxDepth and MaxWait and a MinShare
// within [0, 1). The Set has no defaults of its own: configs owns them.
func CheckSpecs(specs []Spec) error {
	if len(specs) == 0 {
		return errors.New("lanes: no lanes")
	}
	seen := make(map[string]bool, len(specs))
	for _, sp := range specs {
		switch {
		case sp.Name == "" || seen[sp.Name]:
			return fmt.Errorf("lanes: empty or duplicate lane name %q", sp.Name)
		case sp.MaxDepth <= 0:
			return fmt.Errorf("lanes: lane %s: max depth %d is not positive", sp.Name, sp.MaxDepth)
		case sp.MaxWait <= 0:
			return fmt.Errorf("lanes: lane %s: max wait %s is not positive", sp.Name, sp.MaxWait)
		case sp.MinShare < 0 || sp.MinShare >= 1:
			return fmt.Errorf("lanes: lane %s: min share %g is not within [0, 1)", sp.Name, sp.MinShare)
		}
		seen[sp.Name] = true
	}
	return nil
}

// setLanes checks and installs specs; s.mu is held or s is not yet
// shared. On an error nothing changes.
func (s *Set) setLanes(specs []Spec) error {
	if err := CheckSpecs(specs); err != nil {
		return err
	}
	var lanes []*lane
	seen := map[string]bool{}
	for _, sp := range specs {
		seen[sp.Name] = true
		if l := s.find(sp.Name); l != nil {
			rewait := l.MaxWait != sp.MaxWait
			l.Spec = sp
			if rewait {
				s.rewait(l)
			}
			lanes = append(lanes, l)
			continue
		}
		lanes = append(lanes, &lane{Spec: sp, byRoute: map[string]*routeQ{}})
	}
	// Lanes dropped by a reload keep serving the requests they hold; they
	// go after the configured ones and take no new requests.
	for _, l := range s.lanes {
		if !seen[l.Name] && l.depth > 0 {
			lanes = append(lanes, l)
		}
	}
	s.lanes = lanes
	s.byName = make(map[string]*lane, len(lanes))
	for _, l := range lanes[:len(specs)] {
		s.byName[l.Name] = l
	}
	return nil
}

// rewait gives the requests parked on l the wait its new MaxWait allows,
// within the bound each caller set (Waiter.MaxWait): a reload that
// changes max_wait reaches requests already parked; s.mu is held.
func (s *Set) rewait(l *lane) {
	for _, t := range s.deadlines {
		if t.lane != l {
			continue
		}
		t.deadline = t.parkedAt.Add(waitBound(l.MaxWait, t.w.MaxWait))
	}
	heap.Init(&s.deadlines)
}

// waitBound is how long a request may stay parked on a lane with
// laneWait: the lane's wait, or the caller's when that is shorter.
func waitBound(laneWait, callerWait time.Duration) time.Duration {
	if callerWait > 0 && callerWait < laneWait {
		return callerWait
	}
	return laneWait
}

// find returns the lane named name, configured or dropped by a reload but
// still holding requests; s.mu is held.
func (s *Set) find(name string) *lane {
	for _, l := range s.lanes {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// Update applies new lane specs (a reload): limits change in place,
// parked requests stay where they are and their waits follow a changed
// MaxWait. Invalid specs (see CheckSpecs) change nothing; an error
// resizing the mirror stream is reported after the lanes changed.
func (s *Set) Update(specs []Spec) error {
	s.mu.Lock()
	err := s.setLanes(specs)
	s.mu.Unlock()
	s.Kick()
	if err != nil {
		return err
	}
	s.metrics.known(s.laneNames())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.mirror.resize(ctx, specs)
}

// Close stops the dispatcher and fails every waiter with ErrClosed.
func (s *Set) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	// Take every parked request out here, so that no waiter writes to the
	// mirror once it is closed; each waiter wakes with ErrClosed.
	s.mu.Lock()
	for _, l := range s.lanes {
		for len(l.routes) > 0 {
			kq := l.routes[0].keys[0]
			s.settle(kq.queue.Front().Value.(*Ticket), nil, ErrClosed)
			s.metrics.rejected(l.Name, "closed")
		}
	}
	m := s.mirror
	s.mirror = nil
	s.mu.Unlock()
	m.close()
	return nil
}

// Kick tells the dispatcher that capacity may have freed. It never blocks,
// and costs one atomic load when nothing is parked (a request that parks
// kicks for itself).
func (s *Set) Kick() {
	if s.parked.Load() == 0 {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Parked reports whether requests for route are parked, so that a new
// request for it queues behind them instead of overtaking them.
func (s *Set) Parked(route string) bool {
	if s.parked.Load() == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.routes[route] > 0
}

// Depth returns the number of requests parked on lane.
func (s *Set) Depth(lane string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.byName[lane]; ok {
		return l.depth
	}
	return 0
}

// RetryAfter estimates how long a client refused by lane should wait: the
// time the lane takes to drain what it holds, from its recent dispatch
// rate, between 1 s and the lane's MaxWait.
func (s *Set) RetryAfter(lane string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.byName[lane]
	if !ok {
		return time.Second
	}
	rate := l.rate.perSecond(s.now())
	d := l.MaxWait
	if rate > 0 {
		d = time.Duration(float64(l.depth) / rate * float64(time.Second))
	}
	return max(time.Second, min(d, max(l.MaxWait, time.Second)))
}

// Acquire takes capacity for w: at once when its Admit succeeds and no
// request for the same route is parked ahead of it (waited is then 0),
// else by parking it with Wait.
func (s *Set) Acquire(ctx context.Context, w Waiter) (grant Grant, waited time.Duration, err error) {
	s.mu.Lock()
	_, known := s.byName[w.Lane]
	s.mu.Unlock()
	if !known {
		return nil, 0, fmt.Errorf("%w %q", ErrUnknownLane, w.Lane)
	}
	if !s.Parked(w.Route) {
		if g, _, ok := w.Admit(); ok {
			return g, 0, nil
		}
	}
	return s.Wait(ctx, w)
}

// Wait parks w until its Admit succeeds, returning the grant and how long
// it waited: Park, then the Ticket's Wait.
func (s *Set) Wait(ctx context.Context, w Waiter) (grant Grant, waited time.Duration, err error) {
	t, err := s.Park(ctx, w)
	if err != nil {
		return nil, 0, err
	}
	return t.Wait()
}

// Park queues w on its lane and returns its Ticket; Ticket.Wait blocks
// until the outcome. It fails at once with ErrLaneFull, ErrUnknownLane or
// ErrClosed, and, for a FailFast waiter that cannot be served before its
// wait ends, with an *EarlyError (wrapping ErrCannotServeInTime), which
// may also end its wait once parked. The request leaves its lane with a
// grant when its Admit succeeds, with ErrWaitExpired when MaxWait passes, with ErrClosed when
// the Set closes, and with the context's error when ctx ends while it
// waits: a parked request whose caller left is never admitted.
//
// Nothing runs on a parked request's behalf: the dispatcher expires it,
// and its caller's goroutine blocks in Wait, on a short stack.
func (s *Set) Park(ctx context.Context, w Waiter) (*Ticket, error) {
	t, err := s.park(ctx, &w)
	if err != nil {
		return nil, err
	}
	s.Kick()
	return t, nil
}

// Wait blocks until t's outcome: the grant and how long the request was
// parked, or the error that ended its wait. When the context passed to
// Park ends first, the request leaves its lane and Wait returns the
// context's error; a grant made at that very moment is given back
// (Grant.Release). Call it once.
func (t *Ticket) Wait() (grant Grant, waited time.Duration, err error) {
	select {
	case <-t.done:
	case <-t.ctx.Done():
	}
	return t.outcome()
}

// outcome settles t if its context ended, and returns its outcome. It is
// kept out of Wait so that the frames a parked goroutine sleeps on stay
// small: the runtime then shrinks the goroutine's stack while it waits.
//
//go:noinline
func (t *Ticket) outcome() (Grant, time.Duration, error) {
	if err := t.ctx.Err(); err != nil {
		s := t.s
		s.mu.Lock()
		if t.elem != nil {
			s.settle(t, nil, err)
			s.metrics.rejected(t.lane.Name, "canceled")
		}
		s.mu.Unlock()
		// Settled now, by this or by whoever took t out before.
		if t.err == nil {
			// The dispatcher admitted it as the caller left.
			if t.grant != nil {
				t.grant.Release()
			}
			return nil, t.waited, err
		}
	}
	return t.grant, t.waited, t.err
}

// park queues a ticket for w.
func (s *Set) park(ctx context.Context, w *Waiter) (*Ticket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	l, ok := s.byName[w.Lane]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownLane, w.Lane)
	}
	if l.depth >= l.MaxDepth {
		s.metrics.rejected(l.Name, "full")
		return nil, ErrLaneFull
	}
	now := s.now()
	deadline := now.Add(waitBound(l.MaxWait, w.MaxWait))
	if e := s.refuseEarly(l, w, now, deadline); e != nil {
		s.metrics.rejected(l.Name, "early")
		return nil, e
	}
	rq := l.byRoute[w.Route]
	if rq == nil {
		rq = &routeQ{name: w.Route, byKey: map[string]*keyQ{}}
		l.byRoute[w.Route] = rq
		l.routes = append(l.routes, rq)
	}
	kq := rq.byKey[w.Key]
	if kq == nil {
		kq = &keyQ{key: w.Key}
		rq.byKey[w.Key] = kq
		rq.keys = append(rq.keys, kq)
	}
	s.seq++
	t := &Ticket{s: s, ctx: ctx, w: *w, id: s.seq, lane: l, route: rq, kq: kq,
		parkedAt: now, deadline: deadline, done: make(chan struct{})}
	t.elem = kq.queue.PushBack(t)
	heap.Push(&s.deadlines, t)
	rq.count++
	l.depth++
	s.routes[w.Route]++
	s.parked.Add(1)
	s.mirror.park(t.id, l.Name, w.Key, w.Route)
	return t, nil
}

// settle takes t out of its queues with its outcome and wakes its caller;
// s.mu is held and t is queued.
func (s *Set) settle(t *Ticket, grant Grant, err error) {
	s.remove(t)
	t.grant, t.err, t.waited = grant, err, s.now().Sub(t.parkedAt)
	close(t.done)
}

// remove takes t out of its queues; s.mu is held.
func (s *Set) remove(t *Ticket) {
	t.kq.queue.Remove(t.elem)
	t.elem = nil
	if t.hidx >= 0 {
		heap.Remove(&s.deadlines, t.hidx)
	}
	rq, l := t.route, t.lane
	if t.kq.queue.Len() == 0 {
		delete(rq.byKey, t.kq.key)
		rq.keys = removeKey(rq.keys, t.kq)
	}
	rq.count--
	if rq.count == 0 {
		delete(l.byRoute, rq.name)
		l.routes = removeRoute(l.routes, rq)
	}
	l.depth--
	if s.routes[t.w.Route]--; s.routes[t.w.Route] <= 0 {
		delete(s.routes, t.w.Route)
		delete(s.swept, t.w.Route)
	}
	s.parked.Add(-1)
	s.mirror.unpark(t.id)
}

func removeKey(ks []*keyQ, k *keyQ) []*keyQ {
	for i, x := range ks {
		if x == k {
			return append(ks[:i], ks[i+1:]...)
		}
	}
	return ks
}

func removeRoute(rs []*routeQ, r *routeQ) []*routeQ {
	for i, x := range rs {
		if x == r {
			return append(rs[:i], rs[i+1:]...)
		}
	}
	return rs
}

// run is the dispatcher: a pass on every kick and when the earliest
// retry time named by a refusal comes.
func (s *Set) run() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-timer.C:
		}
		next := s.pass()
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(time.Millisecond, next.Sub(s.now())))
		}
	}
}

// shareDecay ages the dispatch counts min_share is judged on: each
// dispatch weighs (1-shareDecay) of the one before, so shares reflect
// roughly the last 1/shareDecay = 200 dispatches.
const shareDecay = 0.005

// pass expires the parked requests whose wait is over, then dispatches
// every one some provider admits now. It returns when it next has work
// without a kick: the earliest time a refusing provider named or a wait
// ends (zero: none).
func (s *Set) pass() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for len(s.deadlines) > 0 && !s.deadlines[0].deadline.After(now) {
		t := s.deadlines[0]
		s.settle(t, nil, ErrWaitExpired)
		s.metrics.rejected(t.lane.Name, "expired")
	}
	clear(s.blocked)
	var next time.Time
	for {
		l, rq := s.candidate()
		if l == nil {
			break
		}
		kq := rq.keys[rq.next%len(rq.keys)]
		t := kq.queue.Front().Value.(*Ticket)
		if err := t.ctx.Err(); err != nil {
			// Its caller has left and its goroutine has not woken yet:
			// never admit it.
			s.settle(t, nil, err)
			s.metrics.rejected(l.Name, "canceled")
			continue
		}
		g, retryAt, ok := t.w.Admit()
		if !ok {
			s.blocked[rq.name] = true
			if !retryAt.IsZero() && (next.IsZero() || retryAt.Before(next)) {
				next = retryAt
			}
			s.endHeld(t, now)
			continue
		}
		rq.next++
		now := s.now()
		for _, x := range s.lanes {
			x.share *= 1 - shareDecay
		}
		l.share += shareDecay
		l.rate.observe(now)
		l.observeDrain(rq.name, now)
		s.metrics.dispatched(l.Name, now.Sub(t.parkedAt))
		s.settle(t, g, nil)
	}
	if len(s.deadlines) > 0 {
		if d := s.deadlines[0].deadline; next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next
}

// candidate picks the lane and route to serve next, skipping routes
// blocked in this pass: a backlogged lane whose share of recent dispatches,
// this one included, would stay within its min_share first, else the
// highest lane with a route not blocked. Routes within a lane take turns.
// It returns nil when nothing can be served.
func (s *Set) candidate() (*lane, *routeQ) {
	var total float64
	for _, l := range s.lanes {
		total += l.share
	}
	// Judging the share with the next dispatch counted keeps strict
	// priority until a lane is owed a turn: with min_share 0.1, one
	// dispatch in ten from the first, not the very first one.
	after := total*(1-shareDecay) + shareDecay
	for _, l := range s.lanes {
		if l.MinShare > 0 && l.depth > 0 && l.share*(1-shareDecay)+shareDecay <= l.MinShare*after*(1+1e-9) {
			if rq := s.openRoute(l); rq != nil {
				return l, rq
			}
		}
	}
	for _, l := range s.lanes {
		if rq := s.openRoute(l); rq != nil {
			return l, rq
		}
	}
	return nil, nil
}

// openRoute returns the next route of l, in turn, not blocked in this pass.
func (s *Set) openRoute(l *lane) *routeQ {
	n := len(l.routes)
	for i := 0; i < n; i++ {
		rq := l.routes[(l.next+i)%n]
		if !s.blocked[rq.name] {
			l.next = (l.next + i + 1) % max(n, 1)
			return rq
		}
	}
	return nil
}

// rateEstimator is an exponentially weighted dispatch rate.
type rateEstimator struct {
	last time.Time
	rate float64 // per second
}

// rateHalfLife is how fast old dispatches stop counting toward the rate.
const rateHalfLife = 10 * time.Second

func (r *rateEstimator) observe(now time.Time) {
	r.decay(now)
	r.rate += math.Ln2 / rateHalfLife.Seconds()
}

func (r *rateEstimator) decay(now time.Time) {
	if !r.last.IsZero() {
		if dt := now.Sub(r.last).Seconds(); dt > 0 {
			r.rate *= math.Exp(-dt * math.Ln2 / rateHalfLife.Seconds())
		}
	}
	r.last = now
}

func (r *rateEstimator) perSecond(now time.Time) float64 {
	r.decay(now)
	return r.rate
}

// ParkedByRoute returns, per lane in priority order, the number of
// requests parked per route (for the leases of cluster-wide limits, which
// ask capacity for the providers these routes call).
func (s *Set) ParkedByRoute() []map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]map[string]int, len(s.lanes))
	for i, l := range s.lanes {
		m := make(map[string]int, len(l.routes))
		for _, rq := range l.routes {
			if rq.count > 0 {
				m[rq.name] = rq.count
			}
		}
		out[i] = m
	}
	return out
}
