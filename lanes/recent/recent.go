// Package recent keeps the times of an event's last occurrences and turns
// them into a rate over a sliding window: how fast a lane drains a route's
// parked requests, how fast a relay starts a lane's jobs.
package recent

import "time"

// Samples is how many occurrences a Ring remembers.
const Samples = 64

// Ring holds the times of the last Samples occurrences of an event. The
// zero value is ready; it is not safe for concurrent use.
type Ring struct {
	at   [Samples]time.Time
	next int
	n    int // samples held, at most Samples
}

// Observe records an occurrence at t (times come in order).
func (r *Ring) Observe(t time.Time) {
	r.at[r.next] = t
	r.next = (r.next + 1) % Samples
	r.n = min(r.n+1, Samples)
}

// Newest returns the time of the last occurrence (zero when none).
func (r *Ring) Newest() time.Time {
	return r.at[(r.next-1+Samples)%Samples]
}

// Rate returns occurrences per second over the k remembered ones within
// window of now: (k-1) intervals over the time from the oldest of them to
// now, so a flow that stopped slows the rate as time passes. ok is false
// with fewer than least such occurrences.
func (r *Ring) Rate(now time.Time, window time.Duration, least int) (perSecond float64, ok bool) {
	k := 0
	var oldest time.Time
	for i := 1; i <= r.n; i++ {
		t := r.at[(r.next-i+Samples)%Samples]
		if now.Sub(t) > window {
			break
		}
		k, oldest = k+1, t
	}
	if k < max(least, 2) {
		return 0, false
	}
	return float64(k-1) / max(now.Sub(oldest), time.Millisecond).Seconds(), true
}
