package lanes

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// capacity is a fake provider pool: free slots per route, taken by Admit
// and given back by release, which kicks the Set as the router does.
type capacity struct {
	mu       sync.Mutex
	free     map[string]int       // route -> free slots
	order    []string             // ids in the order they were admitted
	calls    map[string]int       // id -> Admit calls
	released map[string]int       // id -> grants given back through Release
	retryAt  map[string]time.Time // route -> retry time named on refusal
}

func newCapacity() *capacity {
	return &capacity{free: map[string]int{}, calls: map[string]int{}, released: map[string]int{},
		retryAt: map[string]time.Time{}}
}

// admit is the AdmitFunc of the waiter id on route.
func (c *capacity) admit(id, route string) AdmitFunc {
	return func() (Grant, time.Time, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.calls[id]++
		if c.free[route] <= 0 {
			return nil, c.retryAt[route], false
		}
		c.free[route]--
		c.order = append(c.order, id)
		return &testGrant{c: c, id: id}, time.Time{}, true
	}
}

// testGrant is the grant of the waiter id; Release counts in c.released.
type testGrant struct {
	c  *capacity
	id string
}

// Release records that the grant was given back.
func (g *testGrant) Release() {
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	g.c.released[g.id]++
}

// grantName names a Wait's grant: "grant-<id>", or "" for none.
func grantName(g Grant) string {
	if tg, ok := g.(*testGrant); ok {
		return "grant-" + tg.id
	}
	return ""
}

// add frees n slots on route and kicks s.
func (c *capacity) add(s *Set, route string, n int) {
	c.mu.Lock()
	c.free[route] += n
	c.mu.Unlock()
	s.Kick()
}

func (c *capacity) admitted() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.order...)
}

func (c *capacity) callsOf(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

func (c *capacity) releasedOf(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.released[id]
}

// result is what one Wait returned.
type result struct {
	id     string
	grant  Grant
	waited time.Duration
	err    error
}

// harness is a Set over a capacity.
type harness struct {
	t   *testing.T
	s   *Set
	c   *capacity
	reg *prometheus.Registry
	wg  sync.WaitGroup
}

func newHarness(t *testing.T, specs ...Spec) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := Open(t.Context(), Options{Lanes: deep(specs...), Registry: reg})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	h := &harness{t: t, s: s, c: newCapacity(), reg: reg}
	t.Cleanup(func() {
		_ = s.Close()
		h.wg.Wait()
	})
	return h
}

// testMaxDepth is the MaxDepth deep gives lanes that name none.
const testMaxDepth = 10000

// deep returns specs with MaxDepth testMaxDepth where they set none: the
// Set has no default of its own.
func deep(specs ...Spec) []Spec {
	out := make([]Spec, len(specs))
	for i, sp := range specs {
		if sp.MaxDepth == 0 {
			sp.MaxDepth = testMaxDepth
		}
		out[i] = sp
	}
	return out
}

// waiter returns a waiter id on lane for key and route over h's capacity.
func (h *harness) waiter(id, lane, key, route string) Waiter {
	return Waiter{Lane: lane, Key: key, Route: route, Admit: h.c.admit(id, route)}
}

// start runs Wait for w in a goroutine and, unless the Wait ends at once,
// returns after w is parked, so that waiters started one after another
// park in that order.
func (h *harness) start(ctx context.Context, id string, w Waiter) <-chan result {
	h.t.Helper()
	before := h.parkedTotal()
	ch := make(chan result, 1)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		g, waited, err := h.s.Wait(ctx, w)
		ch <- result{id: id, grant: g, waited: waited, err: err}
	}()
	h.poll("parked "+id, func() bool { return h.parkedTotal() > before || len(ch) > 0 })
	return ch
}

func (h *harness) parkedTotal() int64 { return h.s.parked.Load() }

// poll waits, for at most 10 s, until cond holds.
func (h *harness) poll(what string, cond func() bool) {
	h.t.Helper()
	natstest.Eventually(h.t, 10*time.Second, what, cond)
}

// recv returns the result on ch within 10 s.
func (h *harness) recv(ch <-chan result) result {
	h.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		h.t.Fatal("Wait did not return within 10s")
	}
	return result{}
}

// waitAdmitted polls until n waiters have been admitted and returns them.
func (h *harness) waitAdmitted(n int) []string {
	h.t.Helper()
	h.poll(fmt.Sprintf("%d admitted", n), func() bool { return len(h.c.admitted()) >= n })
	return h.c.admitted()
}

func TestStrictPriorityFIFO(t *testing.T) {
	h := newHarness(t,
		Spec{Name: "hi", MaxWait: time.Minute},
		Spec{Name: "mid", MaxWait: time.Minute},
		Spec{Name: "lo", MaxWait: time.Minute})
	var chans []<-chan result
	// Lowest lane first, so that arrival order alone would get it wrong.
	for _, lane := range []string{"lo", "mid", "hi"} {
		for i := range 4 {
			id := fmt.Sprintf("%s%d", lane, i)
			chans = append(chans, h.start(t.Context(), id, h.waiter(id, lane, "k", "r")))
		}
	}
	if got := h.s.Depth("lo") + h.s.Depth("mid") + h.s.Depth("hi"); got != 12 {
		t.Fatalf("parked %d, want 12", got)
	}
	// One slot at a time, as releases come.
	for i := range 12 {
		h.c.add(h.s, "r", 1)
		h.waitAdmitted(i + 1)
	}
	want := "hi0 hi1 hi2 hi3 mid0 mid1 mid2 mid3 lo0 lo1 lo2 lo3"
	if got := strings.Join(h.c.admitted(), " "); got != want {
		t.Errorf("dispatch order\n got %s\nwant %s", got, want)
	}
	for _, ch := range chans {
		r := h.recv(ch)
		if r.err != nil || grantName(r.grant) != "grant-"+r.id {
			t.Errorf("%s: grant %v, err %v", r.id, r.grant, r.err)
		}
	}
	if n := testutil.ToFloat64(h.s.metrics.dispatches.WithLabelValues("mid")); n != 4 {
		t.Errorf("relay_lane_dispatched_total{lane=mid} = %v, want 4", n)
	}
	if n := testutil.CollectAndCount(h.s.metrics.wait); n != 3 {
		t.Errorf("relay_lane_wait_seconds has %d series, want 3", n)
	}
}

func TestMinShare(t *testing.T) {
	h := newHarness(t,
		Spec{Name: "interactive", MaxWait: time.Minute},
		Spec{Name: "batch", MaxWait: time.Minute, MinShare: 0.1})
	const batchN, interactiveN, served = 300, 500, 400
	for i := range batchN {
		id := fmt.Sprintf("b%d", i)
		h.start(t.Context(), id, h.waiter(id, "batch", "k", "r"))
	}
	for i := range interactiveN {
		id := fmt.Sprintf("i%d", i)
		h.start(t.Context(), id, h.waiter(id, "interactive", "k", "r"))
	}
	// Both lanes stay backlogged for the whole run: 400 dispatches of 800.
	for done := 0; done < served; done += 20 {
		h.c.add(h.s, "r", 20)
		h.waitAdmitted(done + 20)
	}
	order := h.c.admitted()[:served]
	var batch int
	for _, id := range order {
		if id[0] == 'b' {
			batch++
		}
	}
	share := float64(batch) / served
	t.Logf("batch got %d of %d dispatches (%.1f%%)", batch, served, 100*share)
	if share < 0.095 || share > 0.15 {
		t.Errorf("batch share %.3f, want about min_share 0.1", share)
	}
	// Strict priority until batch is owed its share: not batch first.
	if order[0] != "i0" {
		t.Errorf("first dispatch %s, want i0", order[0])
	}
	// Once interactive is drained, batch has everything.
	h.c.add(h.s, "r", batchN+interactiveN-served)
	rest := h.waitAdmitted(batchN + interactiveN)[served:]
	for _, id := range rest[len(rest)-10:] {
		if id[0] != 'b' {
			t.Errorf("late dispatch %s, want batch only", id)
		}
	}
}

func TestKeyFairness(t *testing.T) {
	h := newHarness(t, Spec{Name: "standard", MaxWait: time.Minute})
	for i := range 50 {
		id := fmt.Sprintf("big%d", i)
		h.start(t.Context(), id, h.waiter(id, "standard", "big", "r"))
	}
	for i := range 5 {
		id := fmt.Sprintf("small%d", i)
		h.start(t.Context(), id, h.waiter(id, "standard", "small", "r"))
	}
	h.c.add(h.s, "r", 12)
	order := h.waitAdmitted(12)
	var small []string
	for i, id := range order[:10] {
		if strings.HasPrefix(id, "small") {
			small = append(small, id)
		}
		if i > 0 && strings.HasPrefix(id, "small") && strings.HasPrefix(order[i-1], "small") {
			t.Errorf("small twice in a row while big waits: %v", order)
		}
	}
	if want := "small0 small1 small2 small3 small4"; strings.Join(small, " ") != want {
		t.Errorf("small's dispatches in the first 10: %v, want %s (order %v)", small, want, order)
	}
	// FIFO per key.
	var big []string
	for _, id := range order {
		if strings.HasPrefix(id, "big") {
			big = append(big, id)
		}
	}
	for i, id := range big {
		if id != fmt.Sprintf("big%d", i) {
			t.Errorf("big's order %v, want FIFO", big)
			break
		}
	}
}

func TestBlockedRouteDoesNotBlockOthers(t *testing.T) {
	h := newHarness(t, Spec{Name: "hi", MaxWait: time.Minute}, Spec{Name: "lo", MaxWait: time.Minute})
	for i := range 3 {
		id := fmt.Sprintf("a%d", i)
		h.start(t.Context(), id, h.waiter(id, "hi", "k", "route-a"))
	}
	var bs []<-chan result
	for i := range 2 {
		id := fmt.Sprintf("b%d", i)
		bs = append(bs, h.start(t.Context(), id, h.waiter(id, "lo", "k", "route-b")))
	}
	if !h.s.Parked("route-a") || !h.s.Parked("route-b") || h.s.Parked("route-c") {
		t.Fatalf("Parked: a %v b %v c %v, want true true false",
			h.s.Parked("route-a"), h.s.Parked("route-b"), h.s.Parked("route-c"))
	}
	// route-a (higher lane) has no capacity; route-b's waiters still go.
	h.c.add(h.s, "route-b", 2)
	for _, ch := range bs {
		if r := h.recv(ch); r.err != nil {
			t.Errorf("%s: %v", r.id, r.err)
		}
	}
	if h.s.Parked("route-b") {
		t.Error("route-b still parked after dispatch")
	}
	if !h.s.Parked("route-a") || h.s.Depth("hi") != 3 {
		t.Errorf("route-a: parked %v depth %d, want true 3", h.s.Parked("route-a"), h.s.Depth("hi"))
	}
}

func TestLaneFull(t *testing.T) {
	h := newHarness(t, Spec{Name: "small", MaxDepth: 2, MaxWait: 30 * time.Second})
	h.start(t.Context(), "w0", h.waiter("w0", "small", "k", "r"))
	h.start(t.Context(), "w1", h.waiter("w1", "small", "k", "r"))
	start := time.Now()
	_, _, err := h.s.Wait(t.Context(), h.waiter("w2", "small", "k", "r"))
	if !errors.Is(err, ErrLaneFull) {
		t.Fatalf("Wait on a full lane: %v, want ErrLaneFull", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("ErrLaneFull took %v, want at once", d)
	}
	if n := h.c.callsOf("w2"); n != 0 {
		t.Errorf("refused waiter admitted %d times", n)
	}
	if n := testutil.ToFloat64(h.s.metrics.rejections.WithLabelValues("small", "full")); n != 1 {
		t.Errorf("rejected{reason=full} = %v, want 1", n)
	}
	if ra := h.s.RetryAfter("small"); ra < time.Second || ra > 30*time.Second {
		t.Errorf("RetryAfter = %v, want within [1s, max_wait]", ra)
	}
	if _, _, err := h.s.Wait(t.Context(), h.waiter("x", "nope", "k", "r")); !errors.Is(err, ErrUnknownLane) {
		t.Errorf("Wait on an unknown lane: %v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := Open(t.Context(), Options{Lanes: deep(Spec{Name: "a", MaxWait: 20 * time.Second},
		Spec{Name: "tiny", MaxWait: 100 * time.Millisecond}), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.RetryAfter("a"); got != 20*time.Second {
		t.Errorf("no dispatches yet: RetryAfter = %v, want max_wait 20s", got)
	}
	if got := s.RetryAfter("tiny"); got != time.Second {
		t.Errorf("max_wait under 1s: RetryAfter = %v, want 1s", got)
	}
	if got := s.RetryAfter("unknown"); got != time.Second {
		t.Errorf("unknown lane: RetryAfter = %v, want 1s", got)
	}
	// 10 dispatches a second for a while, 40 parked: about 4 s to drain.
	s.mu.Lock()
	l := s.byName["a"]
	for range 300 {
		now = now.Add(100 * time.Millisecond)
		l.rate.observe(now)
	}
	l.depth = 40
	s.mu.Unlock()
	got := s.RetryAfter("a")
	s.mu.Lock()
	l.depth = 0
	s.mu.Unlock()
	if got < 3*time.Second || got > 6*time.Second {
		t.Errorf("40 parked at 10/s: RetryAfter = %v, want about 4s", got)
	}
	if got := s.RetryAfter("a"); got != time.Second {
		t.Errorf("nothing parked: RetryAfter = %v, want 1s", got)
	}
}

func TestWaitExpired(t *testing.T) {
	h := newHarness(t, Spec{Name: "short", MaxWait: 80 * time.Millisecond}, Spec{Name: "long", MaxWait: time.Hour})
	ch := h.start(t.Context(), "lane", h.waiter("lane", "short", "k", "r"))
	w := h.waiter("own", "long", "k", "r")
	w.MaxWait = 50 * time.Millisecond
	ch2 := h.start(t.Context(), "own", w)
	w = h.waiter("longer", "short", "k", "r")
	w.MaxWait = time.Hour // never lengthens the lane's
	ch3 := h.start(t.Context(), "longer", w)
	for _, c := range []struct {
		ch  <-chan result
		min time.Duration
	}{{ch, 80 * time.Millisecond}, {ch2, 50 * time.Millisecond}, {ch3, 80 * time.Millisecond}} {
		r := h.recv(c.ch)
		if !errors.Is(r.err, ErrWaitExpired) || r.grant != nil {
			t.Errorf("%s: grant %v err %v, want ErrWaitExpired", r.id, r.grant, r.err)
		}
		if r.waited < c.min {
			t.Errorf("%s: waited %v, want at least %v", r.id, r.waited, c.min)
		}
	}
	if h.s.Depth("short")+h.s.Depth("long") != 0 || h.s.Parked("r") {
		t.Error("expired waiters still parked")
	}
	if n := testutil.ToFloat64(h.s.metrics.rejections.WithLabelValues("short", "expired")); n != 2 {
		t.Errorf("rejected{short,expired} = %v, want 2", n)
	}
	calls := h.c.callsOf("lane")
	h.c.add(h.s, "r", 1)
	// A later waiter takes the slot: the expired ones are never admitted.
	late := h.start(t.Context(), "late", h.waiter("late", "short", "k", "r"))
	if r := h.recv(late); r.err != nil {
		t.Fatalf("late: %v", r.err)
	}
	if n := h.c.callsOf("lane"); n != calls {
		t.Errorf("expired waiter's Admit called again (%d -> %d)", calls, n)
	}
}

// TestExpiryInDeadlineOrder parks waiters whose waits end in the reverse
// of their arrival: the dispatcher expires each when its own wait ends,
// the shortest first, and leaves the others parked.
func TestExpiryInDeadlineOrder(t *testing.T) {
	h := newHarness(t, Spec{Name: "l", MaxWait: time.Hour})
	waits := []struct {
		id   string
		wait time.Duration
	}{{"hour", time.Hour}, {"300ms", 300 * time.Millisecond}, {"100ms", 100 * time.Millisecond}}
	order := make(chan string, len(waits))
	chs := map[string]<-chan result{}
	for _, w := range waits {
		wt := h.waiter(w.id, "l", "k", "r")
		wt.MaxWait = w.wait
		chs[w.id] = h.start(t.Context(), w.id, wt)
	}
	for _, id := range []string{"100ms", "300ms"} {
		go func(id string) { r := <-chs[id]; order <- r.id + ":" + errName(r.err) }(id)
	}
	for _, want := range []string{"100ms:expired", "300ms:expired"} {
		select {
		case got := <-order:
			if got != want {
				t.Errorf("next outcome %s, want %s", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no outcome within 10s, want %s", want)
		}
	}
	if d := h.s.Depth("l"); d != 1 {
		t.Errorf("depth %d after two expiries, want 1 (the hour-long wait)", d)
	}
	h.s.mu.Lock()
	heapLen := len(h.s.deadlines)
	h.s.mu.Unlock()
	if heapLen != 1 {
		t.Errorf("deadline heap holds %d, want 1", heapLen)
	}
	h.c.add(h.s, "r", 1)
	if r := h.recv(chs["hour"]); r.err != nil || grantName(r.grant) != "grant-hour" {
		t.Errorf("hour: grant %v err %v, want its grant", r.grant, r.err)
	}
}

// TestDispatcherSkipsCanceled cancels a parked request's context while
// nothing watches it (its Wait is not running yet): the dispatcher that
// finds it first takes it out as canceled without calling its Admit, and
// gives the capacity to the next request.
func TestDispatcherSkipsCanceled(t *testing.T) {
	h := newHarness(t, Spec{Name: "l", MaxWait: time.Minute})
	ctx, cancel := context.WithCancel(t.Context())
	gone, err := h.s.Park(ctx, h.waiter("gone", "l", "k", "r"))
	if err != nil {
		t.Fatalf("Park: %v", err)
	}
	h.poll("first Admit of gone", func() bool { return h.c.callsOf("gone") >= 1 })
	next := h.start(t.Context(), "next", h.waiter("next", "l", "k", "r"))
	cancel()
	// A pass under way when cancel ran has ended once the lock is free;
	// every later one sees the context ended.
	_ = h.s.Depth("l")
	calls := h.c.callsOf("gone")
	h.c.add(h.s, "r", 1)
	if r := h.recv(next); r.err != nil || grantName(r.grant) != "grant-next" {
		t.Fatalf("next: grant %v err %v, want its grant", r.grant, r.err)
	}
	if n := h.c.callsOf("gone"); n != calls {
		t.Errorf("canceled request's Admit called again (%d -> %d)", calls, n)
	}
	if g, _, err := gone.Wait(); !errors.Is(err, context.Canceled) || g != nil {
		t.Errorf("gone: Wait = %v, %v; want context.Canceled", g, err)
	}
	if n := testutil.ToFloat64(h.s.metrics.rejections.WithLabelValues("l", "canceled")); n != 1 {
		t.Errorf("rejected{l,canceled} = %v, want 1", n)
	}
}

// errName names a Wait error for the tests' messages.
func errName(err error) string {
	switch {
	case err == nil:
		return "granted"
	case errors.Is(err, ErrWaitExpired):
		return "expired"
	}
	return err.Error()
}

func TestCancelRemovesWaiter(t *testing.T) {
	h := newHarness(t, Spec{Name: "l", MaxWait: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	ch := h.start(ctx, "gone", h.waiter("gone", "l", "k", "r"))
	cancel()
	r := h.recv(ch)
	if !errors.Is(r.err, context.Canceled) || r.grant != nil {
		t.Fatalf("canceled Wait: grant %v err %v", r.grant, r.err)
	}
	if h.s.Depth("l") != 0 || h.s.Parked("r") {
		t.Error("canceled waiter still parked")
	}
	if n := testutil.ToFloat64(h.s.metrics.rejections.WithLabelValues("l", "canceled")); n != 1 {
		t.Errorf("rejected{canceled} = %v, want 1", n)
	}
	calls := h.c.callsOf("gone")
	h.c.add(h.s, "r", 1)
	next := h.start(t.Context(), "next", h.waiter("next", "l", "k", "r"))
	if r := h.recv(next); r.err != nil {
		t.Fatal(r.err)
	}
	if n := h.c.callsOf("gone"); n != calls {
		t.Errorf("canceled waiter's Admit called after it left (%d -> %d)", calls, n)
	}
	if got := h.c.admitted(); len(got) != 1 || got[0] != "next" {
		t.Errorf("admitted %v, want [next]", got)
	}
}

// TestGrantRacesCancel cancels the caller while the dispatcher is admitting
// it: the grant must be released, never lost.
func TestGrantRacesCancel(t *testing.T) {
	h := newHarness(t, Spec{Name: "l", MaxWait: time.Hour})
	var releasedPath int
	for i := range 5 {
		id := fmt.Sprintf("w%d", i)
		ctx, cancel := context.WithCancel(t.Context())
		w := h.waiter(id, "l", "k", "r")
		inner := w.Admit
		var once sync.Once
		entered := make(chan struct{})
		w.Admit = func() (Grant, time.Time, bool) {
			first := false
			once.Do(func() { first = true })
			if !first {
				return inner()
			}
			// The caller leaves while the grant is being made.
			cancel()
			close(entered)
			time.Sleep(30 * time.Millisecond)
			h.c.mu.Lock()
			h.c.free["r"]++
			h.c.mu.Unlock()
			return inner()
		}
		ch := make(chan result, 1)
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			g, waited, err := h.s.Wait(ctx, w)
			ch <- result{id: id, grant: g, waited: waited, err: err}
		}()
		<-entered
		r := h.recv(ch)
		switch {
		case r.err == nil && grantName(r.grant) == "grant-"+id:
			// The grant won the race: the caller got it.
			if n := h.c.releasedOf(id); n != 0 {
				t.Errorf("%s: returned the grant and released it", id)
			}
		case errors.Is(r.err, context.Canceled) && r.grant == nil:
			if n := h.c.releasedOf(id); n != 1 {
				t.Errorf("%s: canceled while granted; Release called %d times, want 1", id, n)
			}
			releasedPath++
		default:
			t.Errorf("%s: grant %v err %v", id, r.grant, r.err)
		}
		cancel()
	}
	if releasedPath == 0 {
		t.Error("the cancel-at-grant path never ran")
	}
	if h.s.Depth("l") != 0 {
		t.Errorf("depth %d after the races, want 0", h.s.Depth("l"))
	}
}

// TestGrantRacesExpiry admits a waiter as its wait runs out: it gets the
// grant rather than an error, and nothing is released.
func TestGrantRacesExpiry(t *testing.T) {
	h := newHarness(t, Spec{Name: "l", MaxWait: 20 * time.Millisecond})
	w := h.waiter("w", "l", "k", "r")
	inner := w.Admit
	w.Admit = func() (Grant, time.Time, bool) {
		time.Sleep(80 * time.Millisecond) // the waiter's timer fires meanwhile
		h.c.mu.Lock()
		h.c.free["r"] = 1
		h.c.mu.Unlock()
		return inner()
	}
	g, _, err := h.s.Wait(t.Context(), w)
	if err != nil || grantName(g) != "grant-w" {
		t.Fatalf("Wait: grant %v err %v, want the grant", g, err)
	}
	if n := h.c.releasedOf("w"); n != 0 {
		t.Errorf("Release called %d times", n)
	}
}

func TestRetryAtWithoutKick(t *testing.T) {
	h := newHarness(t, Spec{Name: "l", MaxWait: time.Minute})
	h.c.mu.Lock()
	h.c.retryAt["r"] = time.Now().Add(60 * time.Millisecond)
	h.c.mu.Unlock()
	ch := h.start(t.Context(), "w", h.waiter("w", "l", "k", "r"))
	h.poll("first refusal", func() bool { return h.c.callsOf("w") >= 1 })
	// The capacity comes back by time alone: nobody kicks.
	h.c.mu.Lock()
	h.c.free["r"] = 1
	h.c.mu.Unlock()
	if r := h.recv(ch); r.err != nil {
		t.Fatalf("waiter refused with a retry time: %v", r.err)
	}
}

// TestNoPollingWithoutRetryAt checks that a refusal that names no time
// leaves the dispatcher idle until a kick.
func TestNoPollingWithoutRetryAt(t *testing.T) {
	h := newHarness(t, Spec{Name: "l", MaxWait: time.Minute})
	ch := h.start(t.Context(), "w", h.waiter("w", "l", "k", "r"))
	h.poll("first Admit", func() bool { return h.c.callsOf("w") >= 1 })
	time.Sleep(50 * time.Millisecond)
	if n := h.c.callsOf("w"); n > 2 {
		t.Errorf("Admit called %d times in 50ms without a kick", n)
	}
	h.c.add(h.s, "r", 1)
	if r := h.recv(ch); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestClose(t *testing.T) {
	h := newHarness(t, Spec{Name: "l", MaxWait: time.Hour})
	var chans []<-chan result
	for i := range 3 {
		id := fmt.Sprintf("w%d", i)
		chans = append(chans, h.start(t.Context(), id, h.waiter(id, "l", "k", "r")))
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chans {
		if r := h.recv(ch); !errors.Is(r.err, ErrClosed) || r.grant != nil {
			t.Errorf("%s: grant %v err %v, want ErrClosed", r.id, r.grant, r.err)
		}
	}
	if _, _, err := h.s.Wait(t.Context(), h.waiter("after", "l", "k", "r")); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close: %v", err)
	}
	if h.s.Depth("l") != 0 || h.s.Parked("r") {
		t.Error("requests still parked after Close")
	}
	if err := h.s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	h.s.Kick() // harmless after Close
}

func TestUpdateWhileParked(t *testing.T) {
	h := newHarness(t, Spec{Name: "a", MaxDepth: 1, MaxWait: time.Hour}, Spec{Name: "b", MaxWait: time.Hour})
	a0 := h.start(t.Context(), "a0", h.waiter("a0", "a", "k", "r"))
	if _, _, err := h.s.Wait(t.Context(), h.waiter("a1", "a", "k", "r")); !errors.Is(err, ErrLaneFull) {
		t.Fatalf("second on depth-1 lane: %v", err)
	}
	b0 := h.start(t.Context(), "b0", h.waiter("b0", "b", "k", "r"))
	// Deeper lane a, a new lane c above it, lane b dropped while it holds b0.
	if err := h.s.Update(deep(Spec{Name: "c", MaxWait: time.Hour}, Spec{Name: "a", MaxDepth: 3, MaxWait: time.Hour})); err != nil {
		t.Fatal(err)
	}
	a1 := h.start(t.Context(), "a1", h.waiter("a1", "a", "k", "r"))
	a2 := h.start(t.Context(), "a2", h.waiter("a2", "a", "k", "r"))
	c0 := h.start(t.Context(), "c0", h.waiter("c0", "c", "k", "r"))
	if _, _, err := h.s.Wait(t.Context(), h.waiter("b1", "b", "k", "r")); !errors.Is(err, ErrUnknownLane) {
		t.Errorf("new request on a dropped lane: %v, want ErrUnknownLane", err)
	}
	if err := h.s.Update(deep(Spec{Name: "x", MaxWait: time.Hour}, Spec{Name: "x", MaxWait: time.Hour})); err == nil {
		t.Error("Update with a duplicate lane: no error")
	}
	// Lane b comes back, below the others: b0 is still served, on it.
	if err := h.s.Update(deep(Spec{Name: "c", MaxWait: time.Hour}, Spec{Name: "a", MaxDepth: 3, MaxWait: time.Hour},
		Spec{Name: "b", MaxWait: time.Hour})); err != nil {
		t.Fatal(err)
	}
	if d := h.s.Depth("b"); d != 1 {
		t.Errorf("lane b re-added: depth %d, want the 1 it holds", d)
	}
	h.c.add(h.s, "r", 5)
	for _, ch := range []<-chan result{a0, a1, a2, b0, c0} {
		if r := h.recv(ch); r.err != nil {
			t.Errorf("%s: %v", r.id, r.err)
		}
	}
	if want, got := "c0 a0 a1 a2 b0", strings.Join(h.c.admitted(), " "); got != want {
		t.Errorf("order after updates %s, want %s", got, want)
	}
}

func TestUpdateRacesWait(t *testing.T) {
	h := newHarness(t, Spec{Name: "a", MaxWait: 40 * time.Millisecond})
	// Waits read the lane under the lock while an update rewrites it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = h.s.Update(deep(Spec{Name: "a", MaxWait: 40 * time.Millisecond}))
			time.Sleep(time.Millisecond)
		}
	}()
	var chans []<-chan result
	for i := range 5 {
		id := fmt.Sprintf("w%d", i)
		chans = append(chans, h.start(t.Context(), id, h.waiter(id, "a", "k", "r")))
	}
	for _, ch := range chans {
		if r := h.recv(ch); !errors.Is(r.err, ErrWaitExpired) {
			t.Errorf("%s: %v", r.id, r.err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestDepthMetric(t *testing.T) {
	h := newHarness(t, Spec{Name: "interactive", MaxWait: time.Hour}, Spec{Name: "batch", MaxWait: time.Hour})
	for i := range 3 {
		id := fmt.Sprintf("b%d", i)
		h.start(t.Context(), id, h.waiter(id, "batch", "k", "r"))
	}
	want := `
# HELP relay_lane_depth Requests parked on a lane now.
# TYPE relay_lane_depth gauge
relay_lane_depth{lane="batch"} 3
relay_lane_depth{lane="interactive"} 0
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "relay_lane_depth"); err != nil {
		t.Error(err)
	}
	h.c.add(h.s, "r", 3)
	h.waitAdmitted(3)
	want = strings.Replace(want, `"batch"} 3`, `"batch"} 0`, 1)
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "relay_lane_depth"); err != nil {
		t.Error(err)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs []Spec
	}{
		{"no lanes", nil},
		{"unnamed lane", []Spec{{Name: "", MaxDepth: 1, MaxWait: time.Second}}},
		{"duplicate lane", []Spec{{Name: "a", MaxDepth: 1, MaxWait: time.Second}, {Name: "a", MaxDepth: 1, MaxWait: time.Second}}},
		{"no max depth", []Spec{{Name: "a", MaxWait: time.Second}}},
		{"no max wait", []Spec{{Name: "a", MaxDepth: 1}}},
		{"min share 1", []Spec{{Name: "a", MaxDepth: 1, MaxWait: time.Second, MinShare: 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckSpecs(tc.specs); err == nil {
				t.Error("CheckSpecs: no error")
			}
			if _, err := Open(t.Context(), Options{Lanes: tc.specs}); err == nil {
				t.Error("Open: no error")
			}
		})
	}
}

// TestUpdateRewaits: a reload that changes a lane's MaxWait reaches the
// requests already parked on it, within the bound each caller set.
func TestUpdateRewaits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		callerWait time.Duration
		newWait    time.Duration
		wantMin    time.Duration // the request waits at least this long
	}{
		{"shortened", 0, 50 * time.Millisecond, 0},
		{"shortened below the caller's bound", time.Hour, 50 * time.Millisecond, 0},
		{"lengthened keeps the caller's bound", 300 * time.Millisecond, 2 * time.Hour, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Spec{Name: "l", MaxWait: time.Hour})
			w := h.waiter("w", "l", "k", "r")
			w.MaxWait = tc.callerWait
			ch := h.start(t.Context(), "w", w)
			if err := h.s.Update(deep(Spec{Name: "l", MaxWait: tc.newWait})); err != nil {
				t.Fatal(err)
			}
			r := h.recv(ch)
			if !errors.Is(r.err, ErrWaitExpired) {
				t.Fatalf("parked request: %v, want ErrWaitExpired", r.err)
			}
			if r.waited < tc.wantMin || r.waited > 5*time.Second {
				t.Errorf("waited %s, want between %s and 5s", r.waited, tc.wantMin)
			}
		})
	}
}

// TestOldestWaitMetric checks relay_lane_oldest_wait_seconds, the age of
// each lane's oldest parked request (across routes and keys), on a clock
// the test moves: hours on a long lane, where relay_lane_wait_seconds's
// buckets must reach too.
func TestOldestWaitMetric(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	reg := prometheus.NewRegistry()
	s, err := Open(t.Context(), Options{Lanes: deep(Spec{Name: "interactive", MaxWait: time.Minute},
		Spec{Name: "batch", MaxWait: 24 * time.Hour}), Registry: reg, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, s: s, c: newCapacity(), reg: reg}
	t.Cleanup(func() {
		_ = s.Close()
		h.wg.Wait()
	})
	oldest := func(want string) {
		t.Helper()
		exp := `
# HELP relay_lane_oldest_wait_seconds How long the oldest request parked on a lane now has waited (0 when none is parked).
# TYPE relay_lane_oldest_wait_seconds gauge
` + want
		if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "relay_lane_oldest_wait_seconds"); err != nil {
			t.Error(err)
		}
	}
	oldest("relay_lane_oldest_wait_seconds{lane=\"batch\"} 0\nrelay_lane_oldest_wait_seconds{lane=\"interactive\"} 0\n")

	h.start(t.Context(), "b0", h.waiter("b0", "batch", "k1", "r1"))
	advance(10 * time.Hour)
	h.start(t.Context(), "b1", h.waiter("b1", "batch", "k2", "r2"))
	h.start(t.Context(), "b2", h.waiter("b2", "batch", "k1", "r1"))
	advance(10 * time.Hour)
	// The oldest is b0 (20 h), whatever the routes and keys.
	oldest("relay_lane_oldest_wait_seconds{lane=\"batch\"} 72000\nrelay_lane_oldest_wait_seconds{lane=\"interactive\"} 0\n")

	// b0 and b2 (route r1) leave: b1 (10 h) is the oldest.
	h.c.add(s, "r1", 2)
	h.waitAdmitted(2)
	oldest("relay_lane_oldest_wait_seconds{lane=\"batch\"} 36000\nrelay_lane_oldest_wait_seconds{lane=\"interactive\"} 0\n")
	h.c.add(s, "r2", 1)
	h.waitAdmitted(3)
	oldest("relay_lane_oldest_wait_seconds{lane=\"batch\"} 0\nrelay_lane_oldest_wait_seconds{lane=\"interactive\"} 0\n")

	// b0's 20 h wait falls in a finite bucket: quantiles near a 24 h
	// max_wait are not capped.
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "relay_lane_wait_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() != "batch" {
				continue
			}
			var under24h uint64
			for _, b := range m.GetHistogram().GetBucket() {
				if b.GetUpperBound() == 86400 {
					under24h = b.GetCumulativeCount()
				}
			}
			if under24h != 3 {
				t.Errorf("batch waits under 24 h: %d, want 3 (buckets %v)", under24h, m.GetHistogram().GetBucket())
			}
		}
	}
}
