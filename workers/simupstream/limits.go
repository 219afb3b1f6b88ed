package simupstream

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Limit names a cause of a 429 reply, the keys of [Stats.RateLimitedBy].
const (
	// LimitConcurrency is Options.MaxConcurrency.
	LimitConcurrency = "concurrency"
	// LimitRPS is Options.RPS, the token bucket.
	LimitRPS = "rps"
	// LimitPerSecond is Options.PerSecond, the sliding one-second window.
	LimitPerSecond = "per_second"
	// LimitPerMinute is Options.PerMinute, the sliding one-minute window.
	LimitPerMinute = "per_minute"
	// LimitFault is [Fault429], set by SetFault or x-sim-fault.
	LimitFault = "fault"
)

// limitNames lists the limits in the order of limitIndex.
var limitNames = [...]string{LimitConcurrency, LimitRPS, LimitPerSecond, LimitPerMinute, LimitFault}

// limitIndex is an index into limitNames.
type limitIndex uint8

const (
	limConcurrency limitIndex = iota
	limRPS
	limPerSecond
	limPerMinute
	limFault
)

// window is a sliding-window request limit: at most len(at) admissions in
// any span. It is a ring of the last len(at) admission times, so the
// oldest, at[next], decides whether one more fits. The caller locks.
type window struct {
	span time.Duration
	at   []time.Time
	next int
}

// newWindow returns a window of n admissions per span, or nil for n <= 0.
func newWindow(n int, span time.Duration) *window {
	if n <= 0 {
		return nil
	}
	return &window{span: span, at: make([]time.Time, n)}
}

// wait returns how long until one more admission fits (0: it fits now).
func (w *window) wait(now time.Time) time.Duration {
	oldest := w.at[w.next]
	if oldest.IsZero() {
		return 0
	}
	return max(0, oldest.Add(w.span).Sub(now))
}

// take records an admission at now.
func (w *window) take(now time.Time) {
	w.at[w.next] = now
	w.next = (w.next + 1) % len(w.at)
}

// windows are the sliding-window limits of a server; mu makes one request's
// check and admission atomic across both.
type windows struct {
	mu        sync.Mutex
	perSecond *window
	perMinute *window
}

// admit admits a request at now into both windows, or into neither: then
// it returns the limit that refused it and how long until it would fit.
func (ws *windows) admit(now time.Time) (ok bool, by limitIndex, wait time.Duration) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.perSecond != nil {
		if d := ws.perSecond.wait(now); d > 0 {
			return false, limPerSecond, d
		}
	}
	if ws.perMinute != nil {
		if d := ws.perMinute.wait(now); d > 0 {
			return false, limPerMinute, d
		}
	}
	if ws.perSecond != nil {
		ws.perSecond.take(now)
	}
	if ws.perMinute != nil {
		ws.perMinute.take(now)
	}
	return true, 0, 0
}

// takeWindows applies the sliding-window limits. Past one it answers 429
// with retry-after (whole seconds, rounded up) and retry-after-ms, and
// reports false. No rate-limit headers are sent, so a relay in front can
// learn nothing from them: what the upstream counts is the relay's own
// limiting.
func (x *exchange) takeWindows() bool {
	ok, by, wait := x.s.win.admit(time.Now())
	if ok {
		return true
	}
	x.setRetryAfter(wait)
	x.limit = by
	x.writeError(http.StatusTooManyRequests, msgRateLimited)
	return false
}

// setRetryAfter sets retry-after (whole seconds, at least 1) and
// retry-after-ms (at least 1) to d.
func (x *exchange) setRetryAfter(d time.Duration) {
	h := x.w.Header()
	h.Set("Retry-After", strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10))
	h.Set("Retry-After-Ms", strconv.FormatInt(max(1, int64(math.Ceil(float64(d)/float64(time.Millisecond)))), 10))
}

// timelineLen is how many seconds the per-second counts cover: the last
// hour.
const timelineLen = 3600

// Second is the count of one wall-clock second.
type Second struct {
	// Unix is the second, in seconds since the Unix epoch.
	Unix int64 `json:"unix"`
	// Requests counts API requests received in that second.
	Requests int64 `json:"requests"`
	// RateLimited counts the 429 replies among them.
	RateLimited int64 `json:"rate_limited"`
}

// timeline counts requests and 429s per wall-clock second over the last
// timelineLen seconds, in a ring indexed by the second.
type timeline struct {
	mu   sync.Mutex
	secs [timelineLen]Second
}

// slot returns the ring entry of now's second, reset when it held an older
// one; tl.mu is held.
func (tl *timeline) slot(now time.Time) *Second {
	u := now.Unix()
	s := &tl.secs[u%timelineLen]
	if s.Unix != u {
		*s = Second{Unix: u}
	}
	return s
}

// request counts a request received at now.
func (tl *timeline) request(now time.Time) {
	tl.mu.Lock()
	tl.slot(now).Requests++
	tl.mu.Unlock()
}

// rateLimited counts a 429 answered to a request received at now.
func (tl *timeline) rateLimited(now time.Time) {
	tl.mu.Lock()
	tl.slot(now).RateLimited++
	tl.mu.Unlock()
}

// seconds returns the seconds with requests in the last timelineLen
// seconds before now, oldest first.
func (tl *timeline) seconds(now time.Time) []Second {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	u := now.Unix()
	var out []Second
	for i := u - timelineLen + 1; i <= u; i++ {
		if s := tl.secs[i%timelineLen]; s.Unix == i && s.Requests > 0 {
			out = append(out, s)
		}
	}
	return out
}

// PeakIn returns the most requests received in any run of n consecutive
// seconds of secs (which must be oldest first, as [Stats.Seconds] is).
func PeakIn(secs []Second, n int) int64 {
	var peak int64
	for i := range secs {
		var sum int64
		for _, s := range secs[i:] {
			if s.Unix >= secs[i].Unix+int64(n) {
				break
			}
			sum += s.Requests
		}
		peak = max(peak, sum)
	}
	return peak
}
