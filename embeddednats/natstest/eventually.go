package natstest

import (
	"testing"
	"time"
)

// Poll intervals of Eventually: it starts tight, so that fast conditions
// cost little wall time, and backs off so that slow ones (a scrape of a
// subprocess's /metrics) are not hammered.
const (
	firstPoll = time.Millisecond
	maxPoll   = 50 * time.Millisecond
)

// Eventually waits until cond returns true, calling it at once and then
// at growing intervals of at most 50 ms, and fails the test with what
// when d passes first. It is the one poller of the repository's tests:
// wait on it for an event or a counter, never sleep and then assert.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Within(d, cond) {
		t.Fatalf("%s: not within %v", what, d)
	}
}

// Within polls cond as Eventually does and reports whether it returned
// true before d passed, for a test that says more than Eventually when it
// fails (what it saw last).
func Within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	wait := firstPoll
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, maxPoll)
	}
	return true
}
