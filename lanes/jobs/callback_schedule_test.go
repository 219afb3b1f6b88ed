package jobs_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/callbacks"
)

// daySchedule is the default callbacks.retry_schedule.
var daySchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t atomic.Pointer[time.Time] }

func newClock() *fakeClock {
	c := &fakeClock{}
	now := time.Now().UTC()
	c.t.Store(&now)
	return c
}

func (c *fakeClock) Now() time.Time  { return *c.t.Load() }
func (c *fakeClock) Set(t time.Time) { c.t.Store(&t) }

// scheduleOpts runs callbacks on the day schedule with clock, checking
// due times every 10 ms of real time.
func scheduleOpts(t *testing.T, clock *fakeClock, reg prometheus.Registerer) jobs.Options {
	return jobs.Options{Now: clock.Now, CallbackSchedule: daySchedule, CallbackRecheck: 10 * time.Millisecond,
		Registry: reg, Callbacks: sender(t, callbacks.DelivererOptions{MaxAttempts: len(daySchedule) + 1})}
}

// waitAttempts waits until the job's callback has recorded n attempts.
func waitAttempts(t *testing.T, s *jobs.Service, id string, n int) jobs.CallbackState {
	t.Helper()
	j := waitJob(t, s, "team-a", id, func(j jobs.Job) bool { return j.Callback != nil && j.Callback.Attempts >= n })
	if j.Callback.Attempts != n {
		t.Fatalf("callback attempts = %d; want %d", j.Callback.Attempts, n)
	}
	return *j.Callback
}

// checkDelay checks that attempt n's recorded next attempt lies within
// the jitter of the schedule's delay.
func checkDelay(t *testing.T, cs jobs.CallbackState, n int) {
	t.Helper()
	if cs.Outcome != "pending" || cs.NextAttemptAt == nil || cs.LastAttemptAt == nil {
		t.Fatalf("after attempt %d: %+v; want pending with both times", n, cs)
	}
	d, want := cs.NextAttemptAt.Sub(*cs.LastAttemptAt), daySchedule[n-1]
	lo, hi := time.Duration(float64(want)*(1-jobs.CallbackJitter)), time.Duration(float64(want)*(1+jobs.CallbackJitter))
	if d < lo || d > hi {
		t.Fatalf("delay after attempt %d = %v; want within [%v, %v]", n, d, lo, hi)
	}
}

// stillAt checks, over a few rechecks, that no attempt is made before
// it is due.
func stillAt(t *testing.T, s *jobs.Service, rcv *receiver, id string, n int) {
	t.Helper()
	time.Sleep(100 * time.Millisecond) // ten rechecks
	if got := len(rcv.deliveries()); got != n {
		t.Fatalf("deliveries = %d before the next attempt is due; want %d", got, n)
	}
	waitAttempts(t, s, id, n)
}

func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{%s} not found", name, label)
	return 0
}

// The schedule is followed with an injected clock (each delay within its
// jitter, no attempt early), the callback is a dead letter after the last
// attempt (record, metrics), and a re-send delivers with the same
// webhook-id and body.
func TestCallbackScheduleDeadLetterResend(t *testing.T) {
	st := newStore(t)
	clock := newClock()
	reg := prometheus.NewRegistry()
	attempts := len(daySchedule) + 1
	codes := make([]int, attempts, attempts+1)
	for i := range codes {
		codes[i] = 500
	}
	rcv := newReceiver(t, append(codes, 200)...)
	s := start(t, st.js, okRunner, scheduleOpts(t, clock, reg))
	x := sub("team-a")
	x.CallbackURL = rcv.URL
	j := mustSubmit(t, s, x)
	for n := 1; n < attempts; n++ {
		cs := waitAttempts(t, s.Service, j.ID, n)
		checkDelay(t, cs, n)
		clock.Set(cs.NextAttemptAt.Add(-time.Second))
		stillAt(t, s.Service, rcv, j.ID, n)
		clock.Set(*cs.NextAttemptAt)
	}
	got := waitJob(t, s.Service, "team-a", j.ID, func(j jobs.Job) bool { return j.Callback.Outcome == "dead_letter" })
	cs := got.Callback
	if cs.Attempts != attempts || cs.LastStatus != 500 || cs.LastAttemptAt == nil || cs.NextAttemptAt != nil ||
		!strings.Contains(cs.LastError, "giving up after 7 attempts") {
		t.Fatalf("dead letter %+v", cs)
	}
	waitEmpty(t, st.js, jobs.CallbacksStream)
	if v := metricValue(t, reg, "relay_callbacks_total", "dead_letter"); v != 1 {
		t.Errorf("relay_callbacks_total{dead_letter} = %v; want 1", v)
	}
	if v := metricValue(t, reg, "relay_callbacks_total", "retry"); v != float64(attempts-1) {
		t.Errorf("relay_callbacks_total{retry} = %v; want %d", v, attempts-1)
	}
	natstest.Eventually(t, 5*time.Second, "dead letter gauge 1", func() bool {
		return metricValue(t, reg, "relay_callbacks_dead_letters", "") == 1
	})
	if st, err := s.Stats(t.Context()); err != nil || st.DeadLetters != 1 {
		t.Errorf("Stats() = %+v, %v; want DeadLetters 1 (the status page's count)", st, err)
	}

	// Re-send: only the owner; a fresh schedule; same webhook-id and body.
	if _, err := s.ResendCallback(t.Context(), "team-b", j.ID); !isNotFound(err) {
		t.Errorf("re-send by another key: %v; want ErrNotFound", err)
	}
	r, err := s.ResendCallback(t.Context(), "team-a", j.ID)
	if err != nil || r.Callback.Outcome != "pending" || r.Callback.Resends != 1 || r.Callback.Attempts != 0 {
		t.Fatalf("ResendCallback = %+v, %v", r.Callback, err)
	}
	resends := 1
	switch _, err := s.ResendCallback(t.Context(), "team-a", j.ID); {
	case err == nil:
		resends = 2 // the first re-send was delivered already: a delivered callback may be re-sent
	case !errors.Is(err, jobs.ErrCallbackPending):
		t.Errorf("second re-send while pending: %v; want ErrCallbackPending (or nil if already delivered)", err)
	}
	got = waitJob(t, s.Service, "team-a", j.ID, func(j jobs.Job) bool {
		return j.Callback.Outcome == "delivered" && j.Callback.Resends == resends
	})
	if got.Callback.Attempts != 1 || got.Callback.DeliveredAt == nil {
		t.Fatalf("re-sent callback %+v; want delivered at its first attempt", got.Callback)
	}
	d := rcv.deliveries()
	if len(d) != attempts+resends || d[attempts].id != j.ID || string(d[attempts].body) != string(d[0].body) {
		t.Fatalf("%d deliveries; the re-send must keep webhook-id %s and the body", len(d), j.ID)
	}
	natstest.Eventually(t, 5*time.Second, "dead letter gauge 0", func() bool {
		return metricValue(t, reg, "relay_callbacks_dead_letters", "") == 0
	})
	if st, err := s.Stats(t.Context()); err != nil || st.DeadLetters != 0 {
		t.Errorf("Stats() after the re-send = %+v, %v; want DeadLetters 0", st, err)
	}
}

// A relay restart mid-schedule (the embedded server too, same store
// directory) keeps the attempt count and the due time: nothing fires
// early, and the schedule goes on where it was.
func TestCallbackScheduleSurvivesRestart(t *testing.T) {
	st := newStore(t)
	clock := newClock()
	rcv := newReceiver(t, 500, 500, 500, 200)
	s := start(t, st.js, okRunner, scheduleOpts(t, clock, nil))
	x := sub("team-a")
	x.CallbackURL = rcv.URL
	j := mustSubmit(t, s, x)
	cs := waitAttempts(t, s.Service, j.ID, 1)
	clock.Set(*cs.NextAttemptAt)
	cs = waitAttempts(t, s.Service, j.ID, 2)
	checkDelay(t, cs, 2)
	s.stop()
	st.restart()
	s2 := start(t, st.js, okRunner, scheduleOpts(t, clock, nil))
	stillAt(t, s2.Service, rcv, j.ID, 2) // 5 min not passed: still waiting
	clock.Set(*cs.NextAttemptAt)
	// A message the stopped relay held when NATS went down comes back
	// after the consumer's ack wait (the callback timeout + 20 s), not at
	// once: wait past it. What is asserted is the count and the delay.
	natstest.Eventually(t, time.Minute, "third attempt after the restart", func() bool {
		got, err := s2.Get(t.Context(), "team-a", j.ID)
		return err == nil && got.Callback != nil && got.Callback.Attempts >= 3
	})
	cs = waitAttempts(t, s2.Service, j.ID, 3)
	checkDelay(t, cs, 3)
	clock.Set(*cs.NextAttemptAt)
	got := waitJob(t, s2.Service, "team-a", j.ID, func(j jobs.Job) bool { return j.Callback.Outcome == "delivered" })
	if got.Callback.Attempts != 4 || len(rcv.deliveries()) != 4 {
		t.Fatalf("callback %+v after %d deliveries; want delivered at attempt 4", got.Callback, len(rcv.deliveries()))
	}
}

// Re-sends that cannot be: no callback_url, a job not finished, an
// unknown job.
func TestResendRefused(t *testing.T) {
	st := newStore(t)
	s := start(t, st.js, waitRunner{okRunner}, jobs.Options{})
	plain := mustSubmit(t, s, sub("team-a"))
	waitJob(t, s.Service, "team-a", plain.ID, status(jobs.StatusSucceeded))
	waiting := sub("team-a")
	waiting.Model, waiting.CallbackURL = "wait", "http://127.0.0.1:1/cb"
	w := mustSubmit(t, s, waiting)
	cases := []struct {
		id   string
		want error
	}{
		{plain.ID, jobs.ErrNoCallback},
		{w.ID, jobs.ErrNotFinished},
		{jobs.NewID(time.Now()), jobs.ErrNotFound},
		{"job_nonsense", jobs.ErrNotFound},
	}
	for _, tc := range cases {
		if _, err := s.ResendCallback(t.Context(), "team-a", tc.id); !errors.Is(err, tc.want) {
			t.Errorf("ResendCallback(%s) = %v; want %v", tc.id, err, tc.want)
		}
	}
}
