package simupstream

import (
	"testing"
	"time"
)

// TestWindowAdmit drives the sliding windows with explicit times: at most
// n admissions in any span, refusals not counted, and the wait says when
// the oldest admission leaves the window.
func TestWindowAdmit(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms       int
		ok       bool
		by       limitIndex
		wait     time.Duration
		describe string
	}
	tests := []struct {
		name           string
		perSec, perMin int
		steps          []step
	}{
		{"per second", 2, 0, []step{
			{0, true, 0, 0, "first"},
			{100, true, 0, 0, "second"},
			{200, false, limPerSecond, 800 * time.Millisecond, "third within the second"},
			{999, false, limPerSecond, time.Millisecond, "refusals are not counted"},
			{1000, true, 0, 0, "the first left the window"},
			{1050, false, limPerSecond, 50 * time.Millisecond, "the second still in it"},
			{1100, true, 0, 0, "the second left too"},
		}},
		{"per minute", 0, 3, []step{
			{0, true, 0, 0, ""},
			{10, true, 0, 0, ""},
			{20, true, 0, 0, ""},
			{30_000, false, limPerMinute, 30 * time.Second, "fourth within the minute"},
			{60_000, true, 0, 0, "the first left"},
		}},
		{"both: the second is checked first", 2, 3, []step{
			{0, true, 0, 0, ""},
			{10, true, 0, 0, ""},
			{20, false, limPerSecond, 980 * time.Millisecond, ""},
			{1000, true, 0, 0, "third of the minute"},
			{2000, false, limPerMinute, 58 * time.Second, "the second has room, the minute not"},
			{2000, false, limPerMinute, 58 * time.Second, "a refusal by the minute takes nothing from the second"},
			{60_000, true, 0, 0, ""},
			{60_010, true, 0, 0, ""},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := &windows{perSecond: newWindow(tc.perSec, time.Second), perMinute: newWindow(tc.perMin, time.Minute)}
			for i, st := range tc.steps {
				ok, by, wait := ws.admit(at(st.ms))
				if ok != st.ok || (!ok && (by != st.by || wait != st.wait)) {
					t.Errorf("step %d at %d ms (%s): admit = %v, %s, %v; want %v, %s, %v",
						i, st.ms, st.describe, ok, limitNames[by], wait, st.ok, limitNames[st.by], st.wait)
				}
			}
		})
	}
}

// TestTimeline counts per second and forgets seconds older than an hour.
func TestTimeline(t *testing.T) {
	var tl timeline
	t0 := time.Unix(1_700_000_000, 0)
	tl.request(t0)
	tl.request(t0.Add(300 * time.Millisecond))
	tl.rateLimited(t0.Add(300 * time.Millisecond))
	tl.request(t0.Add(2 * time.Second))
	got := tl.seconds(t0.Add(2 * time.Second))
	want := []Second{{Unix: t0.Unix(), Requests: 2, RateLimited: 1}, {Unix: t0.Unix() + 2, Requests: 1}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("seconds = %+v; want %+v", got, want)
	}
	// An hour later the ring slot of t0 is reused.
	later := t0.Add(timelineLen * time.Second)
	tl.request(later)
	got = tl.seconds(later)
	if len(got) != 2 || got[0].Unix != t0.Unix()+2 || got[1] != (Second{Unix: later.Unix(), Requests: 1}) {
		t.Errorf("an hour later: seconds = %+v; want t0+2 s and the new second only", got)
	}
}

func TestPeakIn(t *testing.T) {
	secs := []Second{{Unix: 10, Requests: 3}, {Unix: 11, Requests: 4}, {Unix: 13, Requests: 5}, {Unix: 14, Requests: 1}}
	tests := []struct {
		n    int
		want int64
	}{{1, 5}, {2, 7}, {3, 9}, {5, 13}, {60, 13}}
	for _, tc := range tests {
		if got := PeakIn(secs, tc.n); got != tc.want {
			t.Errorf("PeakIn(%d) = %d; want %d", tc.n, got, tc.want)
		}
	}
	if got := PeakIn(nil, 1); got != 0 {
		t.Errorf("PeakIn(nil) = %d; want 0", got)
	}
}
