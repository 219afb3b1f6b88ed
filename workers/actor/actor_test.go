package actor

import (
	"cmp"
	"errors"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/relaygw/relay/configs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a manual clock safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newActor(t *testing.T, o Options) (*Actor, *fakeClock) {
	t.Helper()
	c := newClock()
	o.Now = c.Now
	if o.Name == "" {
		o.Name = "test"
	}
	// The configuration's breaker defaults where o sets none: the Actor
	// has none of its own.
	d := configs.DefaultBreaker()
	b := &o.Breaker
	b.FailureRatio, b.MinRequests = cmp.Or(b.FailureRatio, d.FailureRatio), cmp.Or(b.MinRequests, d.MinRequests)
	b.Window, b.OpenFor = cmp.Or(b.Window, d.Window.Std()), cmp.Or(b.OpenFor, d.OpenFor.Std())
	return New(o), c
}

// nextCapacity is the earliest time at which a.Admit(in, maxOut) may
// succeed: what a Refusal's When says, computed without admitting.
func nextCapacity(a *Actor, in, maxOut int) time.Time {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	in, out := a.sizes(in, maxOut)
	_, when := a.check(now, in, out)
	return when
}

// mustAdmit admits or fails the test.
func mustAdmit(t *testing.T, a *Actor, in, out int) *Permit {
	t.Helper()
	p, err := a.Admit(in, out)
	if err != nil {
		t.Fatalf("Admit(%d, %d) = %v; want a permit", in, out, err)
	}
	return p
}

// refusal asserts that Admit refuses with reason and returns the Refusal.
func refusal(t *testing.T, a *Actor, in, out int, reason Reason) *Refusal {
	t.Helper()
	p, err := a.Admit(in, out)
	if err == nil {
		p.Done(Outcome{Kind: Canceled})
		t.Fatalf("Admit(%d, %d) admitted; want refusal %q", in, out, reason)
	}
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("Admit(%d, %d) error %T %v; want *Refusal", in, out, err, err)
	}
	if r.Reason != reason {
		t.Fatalf("Admit(%d, %d) reason = %q; want %q (%v)", in, out, r.Reason, reason, err)
	}
	return r
}

func near(got, want float64) bool { return math.Abs(got-want) < 1e-6 }

func TestBurstThenRefusal(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		in, out   int
		admits    int
		reason    Reason
		wantAfter time.Duration // When - now
	}{
		// The requests bucket holds RequestBurst(rpm), one second's worth.
		{name: "rpm below 60 holds one request", opts: Options{RPM: 3}, in: 10, out: 10, admits: 1, reason: ReasonRPM, wantAfter: 20 * time.Second},
		{name: "rpm holds one second's worth", opts: Options{RPM: 300}, in: 10, out: 10, admits: 5, reason: ReasonRPM, wantAfter: 200 * time.Millisecond},
		{name: "input_tpm", opts: Options{InputTPM: 600}, in: 200, out: 10, admits: 3, reason: ReasonInputTPM, wantAfter: 20 * time.Second},
		{name: "output_tpm", opts: Options{OutputTPM: 1000}, in: 10, out: 400, admits: 2, reason: ReasonOutputTPM, wantAfter: 12 * time.Second},
		{name: "default max output", opts: Options{OutputTPM: 2 * DefaultMaxOutput}, in: 10, out: 0, admits: 2, reason: ReasonOutputTPM, wantAfter: 30 * time.Second},
		{name: "fractional rate rounds up to the ms", opts: Options{RPM: 7}, in: 1, out: 1, admits: 1, reason: ReasonRPM, wantAfter: 8572 * time.Millisecond},
		{name: "fractional rate rounds up to the ms, burst 7", opts: Options{RPM: 420}, in: 1, out: 1, admits: 7, reason: ReasonRPM, wantAfter: 143 * time.Millisecond},
		{name: "fractional rate rounds up to the ms, input", opts: Options{InputTPM: 7}, in: 1, out: 1, admits: 7, reason: ReasonInputTPM, wantAfter: 8572 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, c := newActor(t, tc.opts)
			for range tc.admits {
				mustAdmit(t, a, tc.in, tc.out)
			}
			r := refusal(t, a, tc.in, tc.out, tc.reason)
			if got := r.When.Sub(c.Now()); got != tc.wantAfter {
				t.Errorf("Refusal.When - now = %v; want %v", got, tc.wantAfter)
			}
			if got := nextCapacity(a, tc.in, tc.out); !got.Equal(r.When) {
				t.Errorf("NextCapacity(%d, %d) = %v; want %v", tc.in, tc.out, got, r.When)
			}
			if got := r.RetryAfter(c.Now()); got != tc.wantAfter {
				t.Errorf("RetryAfter = %v; want %v", got, tc.wantAfter)
			}
			c.Advance(tc.wantAfter - time.Millisecond)
			refusal(t, a, tc.in, tc.out, tc.reason)
			c.Advance(time.Millisecond)
			mustAdmit(t, a, tc.in, tc.out)
		})
	}
}

func TestRequestBurst(t *testing.T) {
	tests := []struct {
		rpm, want int
	}{
		{rpm: -5, want: 1},
		{rpm: 0, want: 1},
		{rpm: 1, want: 1},
		{rpm: 59, want: 1},
		{rpm: 60, want: 1},
		{rpm: 61, want: 2},
		{rpm: 120, want: 2},
		{rpm: 3600, want: 60},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.rpm), func(t *testing.T) {
			if got := RequestBurst(tc.rpm); got != tc.want {
				t.Errorf("RequestBurst(%d) = %d; want %d", tc.rpm, got, tc.want)
			}
			if tc.rpm <= 0 {
				return // no requests bucket at all
			}
			// A fresh Actor's requests bucket holds exactly that many.
			a, _ := newActor(t, Options{RPM: tc.rpm})
			if got := a.State().Requests.Available; !near(got, float64(tc.want)) {
				t.Errorf("fresh Actor with RPM %d: Requests.Available = %v; want %d", tc.rpm, got, tc.want)
			}
		})
	}
}

// TestRPM120 follows one rpm=120 Actor through a burst and a fake-clock
// minute: two calls at once, the third refused until +0.5s, then 120 a
// minute, one every 500ms.
func TestRPM120(t *testing.T) {
	a, c := newActor(t, Options{RPM: 120})
	start := c.Now()
	mustAdmit(t, a, 1, 1).Done(Outcome{Kind: Success})
	mustAdmit(t, a, 1, 1).Done(Outcome{Kind: Success})
	r := refusal(t, a, 1, 1, ReasonRPM)
	if got := r.When.Sub(start); got != 500*time.Millisecond {
		t.Fatalf("third call: When - now = %v; want 500ms", got)
	}
	if got := nextCapacity(a, 1, 1); !got.Equal(r.When) {
		t.Errorf("NextCapacity = %v; want %v", got, r.When)
	}

	var at []time.Duration // admission times after the burst, from start
	for range 60_000 {     // (start, start+60s] in 1ms steps
		c.Advance(time.Millisecond)
		if p, err := a.Admit(1, 1); err == nil {
			at = append(at, c.Now().Sub(start))
			p.Done(Outcome{Kind: Success})
		}
	}
	if len(at) != 120 {
		t.Fatalf("admissions in the minute after the burst = %d; want 120", len(at))
	}
	for i, d := range at {
		if want := time.Duration(i+1) * 500 * time.Millisecond; d != want {
			t.Fatalf("admission %d at start+%v; want start+%v", i+1, d, want)
		}
	}
}

// TestUpdateRequestBurst checks that Update keeps the requests bucket's level,
// clamped to a lowered burst and not refilled by a raised one.
func TestUpdateRequestBurst(t *testing.T) {
	a, c := newActor(t, Options{RPM: 600}) // holds 10
	mustAdmit(t, a, 1, 1)
	if got := a.State().Requests.Available; !near(got, 9) {
		t.Fatalf("Requests.Available = %v; want 9", got)
	}
	a.Update(Options{RPM: 120}) // holds 2: the 9 left are clamped
	if got := a.State().Requests.Available; !near(got, 2) {
		t.Errorf("after lowering RPM to 120: Requests.Available = %v; want 2", got)
	}
	mustAdmit(t, a, 1, 1)
	mustAdmit(t, a, 1, 1)
	r := refusal(t, a, 1, 1, ReasonRPM)
	if got := r.When.Sub(c.Now()); got != 500*time.Millisecond {
		t.Errorf("after lowering RPM to 120: When - now = %v; want 500ms", got)
	}
	a.Update(Options{RPM: 6000}) // holds 100, but the empty level is kept
	if got := a.State().Requests.Available; !near(got, 0) {
		t.Errorf("after raising RPM to 6000: Requests.Available = %v; want 0", got)
	}
	r = refusal(t, a, 1, 1, ReasonRPM)
	if got := r.When.Sub(c.Now()); got != 10*time.Millisecond {
		t.Errorf("after raising RPM to 6000: When - now = %v; want 10ms", got)
	}
	c.Advance(time.Minute) // refills to the new burst, not beyond
	if got := a.State().Requests.Available; !near(got, 100) {
		t.Errorf("a minute later: Requests.Available = %v; want 100", got)
	}
}

// TestRefillAtHighFrequency proves that calls every millisecond, each far
// smaller than one second's refill, still see the bucket refill (an integer
// bucket that truncates the refill on every call would starve).
func TestRefillAtHighFrequency(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		in   int
		want int // admissions in 10 s after draining
	}{
		{name: "rpm 60", opts: Options{RPM: 60}, in: 1, want: 10},
		{name: "input 600/min, 1 token calls", opts: Options{InputTPM: 600}, in: 1, want: 100},
		{name: "input 90/min, 1 token calls", opts: Options{InputTPM: 90}, in: 1, want: 15},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, c := newActor(t, tc.opts)
			for { // drain
				p, err := a.Admit(tc.in, 1)
				if err != nil {
					break
				}
				p.Done(Outcome{Kind: Success})
			}
			got := 0
			for range 10_050 { // 10.05 s: no admission falls on the last step

				c.Advance(time.Millisecond)
				if p, err := a.Admit(tc.in, 1); err == nil {
					got++
					p.Done(Outcome{Kind: Success})
				}
			}
			if got != tc.want {
				t.Errorf("admissions over 10s at 1ms steps = %d; want %d", got, tc.want)
			}
		})
	}
}

func TestHugeRequestIsClamped(t *testing.T) {
	a, c := newActor(t, Options{InputTPM: 1000, OutputTPM: 500})
	p := mustAdmit(t, a, 5000, 8000)
	if got := a.State().InputTokens.Available; !near(got, 0) {
		t.Errorf("input Available after huge call = %v; want 0", got)
	}
	r := refusal(t, a, 5000, 8000, ReasonInputTPM)
	if got := r.When.Sub(c.Now()); got != time.Minute {
		t.Errorf("When - now = %v; want 1m", got)
	}
	p.Done(Outcome{Kind: Success})
	c.Advance(time.Minute)
	mustAdmit(t, a, 5000, 8000)
}

func TestMultiBucketAtomicity(t *testing.T) {
	tests := []struct {
		name       string
		in, out    int
		reason     Reason
		wantReq    float64
		wantIn     float64
		wantOutput float64
	}{
		{name: "input refuses", in: 80, out: 10, reason: ReasonInputTPM, wantReq: 9, wantIn: 50, wantOutput: 990},
		{name: "output refuses", in: 10, out: 2000, reason: ReasonOutputTPM, wantReq: 9, wantIn: 50, wantOutput: 990},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// RPM 600 holds 10 requests, so after one call the rpm bucket
			// still has 9 and a token bucket is the one refusing.
			a, _ := newActor(t, Options{RPM: 600, InputTPM: 100, OutputTPM: 1000})
			mustAdmit(t, a, 50, 10)
			// 2000 > burst is clamped to 1000, which the 990 left cannot cover.
			refusal(t, a, tc.in, tc.out, tc.reason)
			s := a.State()
			if !near(s.Requests.Available, tc.wantReq) || !near(s.InputTokens.Available, tc.wantIn) ||
				!near(s.OutputTokens.Available, tc.wantOutput) {
				t.Errorf("after refusal: requests %v input %v output %v; want %v %v %v",
					s.Requests.Available, s.InputTokens.Available, s.OutputTokens.Available,
					tc.wantReq, tc.wantIn, tc.wantOutput)
			}
		})
	}
}

func TestSettle(t *testing.T) {
	tests := []struct {
		name    string
		in, out int
		o       Outcome
		wantIn  float64
		wantOut float64
	}{
		{name: "output refund", in: 100, out: 800,
			o:      Outcome{Kind: Success, UsageKnown: true, InputTokens: 100, OutputTokens: 100},
			wantIn: 900, wantOut: 900},
		{name: "input refund", in: 100, out: 100,
			o:      Outcome{Kind: Success, UsageKnown: true, InputTokens: 40, OutputTokens: 100},
			wantIn: 960, wantOut: 900},
		{name: "input extra charge", in: 100, out: 100,
			o:      Outcome{Kind: Success, UsageKnown: true, InputTokens: 300, OutputTokens: 100},
			wantIn: 700, wantOut: 900},
		{name: "extra charge clamped to burst", in: 100, out: 100,
			o:      Outcome{Kind: Success, UsageKnown: true, InputTokens: 50_000, OutputTokens: 100},
			wantIn: 0, wantOut: 900},
		{name: "unknown usage success keeps charges", in: 100, out: 800,
			o:      Outcome{Kind: Success},
			wantIn: 900, wantOut: 200},
		{name: "unknown usage server error refunds output", in: 100, out: 800,
			o:      Outcome{Kind: ServerError},
			wantIn: 900, wantOut: 1000},
		{name: "unknown usage canceled keeps output", in: 100, out: 800,
			o:      Outcome{Kind: Canceled},
			wantIn: 900, wantOut: 200},
		{name: "refund never exceeds burst", in: 100, out: 800,
			o:      Outcome{Kind: Success, UsageKnown: true, InputTokens: 0, OutputTokens: 0},
			wantIn: 1000, wantOut: 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newActor(t, Options{InputTPM: 1000, OutputTPM: 1000})
			p := mustAdmit(t, a, tc.in, tc.out)
			p.Done(tc.o)
			s := a.State()
			if !near(s.InputTokens.Available, tc.wantIn) || !near(s.OutputTokens.Available, tc.wantOut) {
				t.Errorf("Done(%+v): input %v output %v; want %v %v",
					tc.o, s.InputTokens.Available, s.OutputTokens.Available, tc.wantIn, tc.wantOut)
			}
		})
	}
}

func TestDebtDelaysAdmission(t *testing.T) {
	a, c := newActor(t, Options{InputTPM: 600})
	p := mustAdmit(t, a, 100, 1)
	p.Done(Outcome{Kind: Success, UsageKnown: true, InputTokens: 600}) // 500 extra on a 500 level: empty
	mustAdmitAfter := nextCapacity(a, 100, 1).Sub(c.Now())
	if mustAdmitAfter != 10*time.Second {
		t.Errorf("NextCapacity after extra charge = now+%v; want now+10s", mustAdmitAfter)
	}
}

// TestLimiterCredit pins the x/time/rate behaviour that refunds rely on
// (golang/go#54082): a negative ReserveN credits tokens, capped at the burst,
// even when the limiter is in debt.
func TestLimiterCredit(t *testing.T) {
	now := newClock().Now()
	tests := []struct {
		name    string
		charge  int
		credit  int
		want    float64
		chargeN int
	}{
		{name: "partial credit", charge: 80, credit: 30, want: 50},
		{name: "credit capped at burst", charge: 10, credit: 50, want: 100},
		{name: "credit out of debt", charge: 100, chargeN: 50, credit: 70, want: 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lim := rate.NewLimiter(1, 100)
			lim.AllowN(now, tc.charge)
			if tc.chargeN > 0 {
				lim.ReserveN(now, tc.chargeN) // into debt
			}
			if r := lim.ReserveN(now, -tc.credit); !r.OK() {
				t.Fatalf("ReserveN(now, %d).OK() = false; want true", -tc.credit)
			}
			if got := lim.TokensAt(now); !near(got, tc.want) {
				t.Errorf("TokensAt after credit = %v; want %v", got, tc.want)
			}
		})
	}
}

func TestHeaderCaps(t *testing.T) {
	c0 := newClock().Now()
	rfc := func(d time.Duration) string { return c0.Add(d).Format(time.RFC3339) }
	tests := []struct {
		name    string
		opts    Options
		header  map[string]string
		in, out int
		reason  Reason
		until   time.Duration // cap end, relative to the clock's start
		allowed int           // admissions still allowed under the cap
	}{
		// RPM 3000 holds 50 requests: the local limiter has plenty, only
		// the cap refuses.
		{name: "anthropic requests exhausted", opts: Options{RPM: 3000},
			header: map[string]string{"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": rfc(20 * time.Second)},
			in:     10, out: 10, reason: ReasonRPM, until: 20 * time.Second},
		{name: "anthropic requests on an unlimited bucket", opts: Options{},
			header: map[string]string{"anthropic-ratelimit-requests-remaining": "2", "anthropic-ratelimit-requests-reset": rfc(30 * time.Second)},
			in:     10, out: 10, reason: ReasonRPM, until: 30 * time.Second, allowed: 2},
		{name: "anthropic input tokens", opts: Options{InputTPM: 30000},
			header: map[string]string{"anthropic-ratelimit-input-tokens-remaining": "250", "anthropic-ratelimit-input-tokens-reset": rfc(15 * time.Second)},
			in:     100, out: 10, reason: ReasonInputTPM, until: 15 * time.Second, allowed: 2},
		{name: "anthropic combined tokens fall back to input", opts: Options{},
			header: map[string]string{"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": rfc(5 * time.Second)},
			in:     100, out: 10, reason: ReasonInputTPM, until: 5 * time.Second},
		{name: "anthropic output tokens", opts: Options{OutputTPM: 8000},
			header: map[string]string{"anthropic-ratelimit-output-tokens-remaining": "1000", "anthropic-ratelimit-output-tokens-reset": rfc(40 * time.Second)},
			in:     10, out: 400, reason: ReasonOutputTPM, until: 40 * time.Second, allowed: 2},
		{name: "openai requests", opts: Options{RPM: 500},
			header: map[string]string{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"},
			in:     10, out: 10, reason: ReasonRPM, until: time.Second},
		{name: "openai tokens", opts: Options{InputTPM: 30000},
			header: map[string]string{"x-ratelimit-remaining-tokens": "50", "x-ratelimit-reset-tokens": "6m0s"},
			in:     100, out: 10, reason: ReasonInputTPM, until: 6 * time.Minute},
		{name: "openai milliseconds", opts: Options{},
			header: map[string]string{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"},
			in:     10, out: 10, reason: ReasonRPM, until: 20 * time.Millisecond},
		{name: "bare seconds", opts: Options{},
			header: map[string]string{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3"},
			in:     10, out: 10, reason: ReasonRPM, until: 3 * time.Second},
		{name: "absurd reset is bounded", opts: Options{},
			header: map[string]string{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1000h"},
			in:     10, out: 10, reason: ReasonRPM, until: MaxLearnedWait},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, c := newActor(t, tc.opts)
			h := http.Header{}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			mustAdmit(t, a, 1, 1).Done(Outcome{Kind: Success, Header: h})
			for range tc.allowed {
				mustAdmit(t, a, tc.in, tc.out)
			}
			r := refusal(t, a, tc.in, tc.out, tc.reason)
			if want := c0.Add(tc.until); !r.When.Equal(want) {
				t.Errorf("Refusal.When = %v; want %v", r.When, want)
			}
			c.Advance(tc.until - time.Millisecond)
			refusal(t, a, tc.in, tc.out, tc.reason)
			c.Advance(time.Millisecond)
			mustAdmit(t, a, tc.in, tc.out)
		})
	}
}

func TestHeadersIgnored(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]string
	}{
		{name: "no reset", header: map[string]string{"anthropic-ratelimit-requests-remaining": "0"}},
		{name: "reset in the past", header: map[string]string{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2000-01-01T00:00:00Z"}},
		{name: "garbage remaining", header: map[string]string{"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "1s"}},
		{name: "garbage reset", header: map[string]string{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newActor(t, Options{RPM: 6000}) // holds 100 requests: only a cap could refuse
			h := http.Header{}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			mustAdmit(t, a, 1, 1).Done(Outcome{Kind: Success, Header: h})
			mustAdmit(t, a, 1, 1)
		})
	}
}

func TestParseReset(t *testing.T) {
	now := newClock().Now()
	tests := []struct {
		in     string
		want   time.Time
		wantOK bool
	}{
		{in: "2026-03-01T12:00:20Z", want: now.Add(20 * time.Second), wantOK: true},
		{in: "2026-03-01T12:00:20.5Z", want: now.Add(20500 * time.Millisecond), wantOK: true},
		{in: "1s", want: now.Add(time.Second), wantOK: true},
		{in: "6m0s", want: now.Add(6 * time.Minute), wantOK: true},
		{in: "20ms", want: now.Add(20 * time.Millisecond), wantOK: true},
		{in: "1.5", want: now.Add(1500 * time.Millisecond), wantOK: true},
		{in: "1772366420", want: time.Unix(1772366420, 0), wantOK: true},
		{in: "soon"},
		{in: "-3"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseReset(now, tc.in)
			if ok != tc.wantOK || (ok && !got.Equal(tc.want)) {
				t.Errorf("parseReset(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestCoolDown(t *testing.T) {
	tests := []struct {
		name     string
		o        Outcome
		wantCool time.Duration // 0: no cool-down
	}{
		{name: "429 with retry-after", o: Outcome{Kind: RateLimited, RetryAfter: 7 * time.Second}, wantCool: 7 * time.Second},
		{name: "429 without retry-after", o: Outcome{Kind: RateLimited}, wantCool: DefaultRateLimitCoolDown},
		{name: "529 with retry-after", o: Outcome{Kind: Overloaded, RetryAfter: 3 * time.Second}, wantCool: 3 * time.Second},
		{name: "529 without retry-after", o: Outcome{Kind: Overloaded}},
		{name: "500 with retry-after", o: Outcome{Kind: ServerError, RetryAfter: 3 * time.Second}},
		{name: "retry-after is bounded", o: Outcome{Kind: RateLimited, RetryAfter: 100 * time.Hour}, wantCool: MaxLearnedWait},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, c := newActor(t, Options{})
			start := c.Now()
			mustAdmit(t, a, 1, 1).Done(tc.o)
			if tc.wantCool == 0 {
				mustAdmit(t, a, 1, 1)
				return
			}
			r := refusal(t, a, 1, 1, ReasonCoolingDown)
			if want := start.Add(tc.wantCool); !r.When.Equal(want) {
				t.Errorf("Refusal.When = %v; want %v", r.When, want)
			}
			if got := a.State().CoolingUntil; !got.Equal(start.Add(tc.wantCool)) {
				t.Errorf("State().CoolingUntil = %v; want %v", got, start.Add(tc.wantCool))
			}
			c.Advance(tc.wantCool - time.Millisecond)
			refusal(t, a, 1, 1, ReasonCoolingDown)
			c.Advance(time.Millisecond)
			mustAdmit(t, a, 1, 1)
		})
	}
}

func TestProviderAuth(t *testing.T) {
	a, c := newActor(t, Options{Breaker: BreakerOptions{MinRequests: 1}})
	mustAdmit(t, a, 1, 1).Done(Outcome{Kind: ProviderAuth})
	r := refusal(t, a, 1, 1, ReasonProviderAuth)
	if got := r.When.Sub(c.Now()); got != ProviderAuthBackoff {
		t.Errorf("When - now = %v; want %v", got, ProviderAuthBackoff)
	}
	if got := a.State().Breaker; got != BreakerClosed {
		t.Errorf("breaker = %v; want closed", got)
	}
	c.Advance(ProviderAuthBackoff)
	mustAdmit(t, a, 1, 1)
}

func TestReasonPrecedenceAndWhen(t *testing.T) {
	// Cooling for 2s while the rpm bucket (RPM 3 holds one request) needs
	// 20s: the reason is the first check, When the latest constraint.
	a, c := newActor(t, Options{RPM: 3})
	start := c.Now()
	mustAdmit(t, a, 1, 1).Done(Outcome{Kind: RateLimited, RetryAfter: 2 * time.Second})
	r := refusal(t, a, 1, 1, ReasonCoolingDown)
	if got := r.When.Sub(start); got != 20*time.Second {
		t.Errorf("When - now = %v; want 20s", got)
	}
	// Once the cool-down is over, the rpm bucket is the first (and only)
	// obstacle, with the same When.
	c.Advance(2 * time.Second)
	r = refusal(t, a, 1, 1, ReasonRPM)
	if got := r.When.Sub(start); got != 20*time.Second {
		t.Errorf("after cool-down: When - start = %v; want 20s", got)
	}
}

func outcomes(kind OutcomeKind, n int) []OutcomeKind {
	s := make([]OutcomeKind, n)
	for i := range s {
		s[i] = kind
	}
	return s
}

func seq(parts ...[]OutcomeKind) []OutcomeKind {
	var s []OutcomeKind
	for _, p := range parts {
		s = append(s, p...)
	}
	return s
}

func TestBreakerOpens(t *testing.T) {
	bo := BreakerOptions{FailureRatio: 0.5, MinRequests: 4, Window: 10 * time.Second, OpenFor: 5 * time.Second}
	tests := []struct {
		name string
		seq  []OutcomeKind
		step time.Duration // clock advance between calls
		want BreakerState
	}{
		{name: "below min requests", seq: outcomes(ServerError, 3), want: BreakerClosed},
		{name: "min requests reached", seq: outcomes(Timeout, 4), want: BreakerOpen},
		{name: "ratio reached", seq: seq(outcomes(Success, 2), []OutcomeKind{ConnError, Overloaded}), want: BreakerOpen},
		{name: "ratio not reached", seq: seq(outcomes(Success, 5), outcomes(ServerError, 3), []OutcomeKind{Success, ServerError}), want: BreakerClosed},
		{name: "streak after successes", seq: seq(outcomes(Success, 50), outcomes(ServerError, 4)), want: BreakerOpen},
		{name: "client errors, 429s, cancels and auth ignored",
			seq:  seq(outcomes(ClientError, 20), outcomes(RateLimited, 5), outcomes(Canceled, 20), outcomes(ProviderAuth, 3), outcomes(ServerError, 3)),
			want: BreakerClosed},
		{name: "old failures leave the window", seq: outcomes(ServerError, 6), step: 4 * time.Second, want: BreakerClosed},
		{name: "failures inside the window", seq: outcomes(ServerError, 4), step: 3 * time.Second, want: BreakerOpen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, c := newActor(t, Options{Breaker: bo})
			for _, k := range tc.seq {
				c.Advance(tc.step)
				p, err := a.Admit(1, 1)
				if err != nil {
					t.Fatalf("Admit: %v", err)
				}
				// Cool-downs and auth back-offs are not under test here.
				p.Done(Outcome{Kind: k})
				a.mu.Lock()
				a.coolUntil, a.authUntil = time.Time{}, time.Time{}
				a.mu.Unlock()
			}
			if got := a.State().Breaker; got != tc.want {
				t.Errorf("breaker after %v = %v; want %v", tc.seq, got, tc.want)
			}
		})
	}
}

func TestBreakerHalfOpen(t *testing.T) {
	bo := BreakerOptions{FailureRatio: 0.5, MinRequests: 2, Window: 10 * time.Second, OpenFor: 5 * time.Second, HalfOpenProbes: 2}
	open := func(t *testing.T) (*Actor, *fakeClock, *Permit) {
		a, c := newActor(t, Options{Breaker: bo})
		stale := mustAdmit(t, a, 1, 1)
		for range 2 {
			mustAdmit(t, a, 1, 1).Done(Outcome{Kind: ServerError})
		}
		r := refusal(t, a, 1, 1, ReasonBreakerOpen)
		if want := c.Now().Add(bo.OpenFor); !r.When.Equal(want) || !nextCapacity(a, 1, 1).Equal(want) {
			t.Fatalf("open breaker: When %v, NextCapacity %v; want %v", r.When, nextCapacity(a, 1, 1), want)
		}
		if s := a.State(); s.Breaker != BreakerOpen || !s.BreakerOpenAt.Equal(c.Now().Add(bo.OpenFor)) {
			t.Fatalf("State() = %v until %v; want open until %v", s.Breaker, s.BreakerOpenAt, c.Now().Add(bo.OpenFor))
		}
		c.Advance(bo.OpenFor)
		return a, c, stale
	}

	t.Run("probe limit", func(t *testing.T) {
		a, c, stale := open(t)
		p1, p2 := mustAdmit(t, a, 1, 1), mustAdmit(t, a, 1, 1)
		r := refusal(t, a, 1, 1, ReasonBreakerOpen)
		if !r.When.Equal(c.Now()) {
			t.Errorf("half-open full: When = %v; want now", r.When)
		}
		stale.Done(Outcome{Kind: ServerError}) // admitted before opening: ignored
		if got := a.State().Breaker; got != BreakerHalfOpen {
			t.Errorf("after stale failure: breaker = %v; want half_open", got)
		}
		p1.Done(Outcome{Kind: Success})
		p2.Done(Outcome{Kind: Success})
		if got := a.State().Breaker; got != BreakerClosed {
			t.Errorf("after probe successes: breaker = %v; want closed", got)
		}
	})
	t.Run("failure reopens for a full OpenFor", func(t *testing.T) {
		a, c, _ := open(t)
		p1, p2 := mustAdmit(t, a, 1, 1), mustAdmit(t, a, 1, 1)
		p1.Done(Outcome{Kind: Success})
		p2.Done(Outcome{Kind: Timeout})
		r := refusal(t, a, 1, 1, ReasonBreakerOpen)
		if want := c.Now().Add(bo.OpenFor); !r.When.Equal(want) {
			t.Errorf("reopened: When = %v; want %v", r.When, want)
		}
		c.Advance(bo.OpenFor)
		mustAdmit(t, a, 1, 1)
	})
	t.Run("canceled probe frees its slot", func(t *testing.T) {
		a, _, _ := open(t)
		p1, p2 := mustAdmit(t, a, 1, 1), mustAdmit(t, a, 1, 1)
		refusal(t, a, 1, 1, ReasonBreakerOpen)
		p1.Done(Outcome{Kind: Canceled})
		p3 := mustAdmit(t, a, 1, 1)
		p2.Done(Outcome{Kind: Success})
		p3.Done(Outcome{Kind: Success})
		if got := a.State().Breaker; got != BreakerClosed {
			t.Errorf("breaker = %v; want closed", got)
		}
	})
}

func TestConcurrency(t *testing.T) {
	a, c := newActor(t, Options{MaxConcurrency: 2, OutputTPM: 1000})
	p1, p2 := mustAdmit(t, a, 1, 100), mustAdmit(t, a, 1, 100)
	r := refusal(t, a, 1, 100, ReasonConcurrency)
	if !r.When.Equal(c.Now()) || !nextCapacity(a, 1, 100).Equal(c.Now()) {
		t.Errorf("concurrency refusal: When %v, NextCapacity %v; want now", r.When, nextCapacity(a, 1, 100))
	}
	if got := a.State().InFlight; got != 2 {
		t.Errorf("InFlight = %d; want 2", got)
	}
	done := Outcome{Kind: Success, UsageKnown: true, OutputTokens: 0}
	p1.Done(done)
	p1.Done(done) // ignored: no second slot, no second refund
	var nilPermit *Permit
	nilPermit.Done(done) // ignored
	if s := a.State(); s.InFlight != 1 || !near(s.OutputTokens.Available, 900) {
		t.Errorf("after double Done: InFlight %d, output %v; want 1, 900", s.InFlight, s.OutputTokens.Available)
	}
	p3 := mustAdmit(t, a, 1, 100)
	refusal(t, a, 1, 100, ReasonConcurrency)
	p2.Done(done)
	p3.Done(done)
	if got := a.State().InFlight; got != 0 {
		t.Errorf("InFlight = %d; want 0", got)
	}
}

func TestUpdate(t *testing.T) {
	bo := BreakerOptions{FailureRatio: 0.3, MinRequests: 1, OpenFor: 10 * time.Second}
	// RPM 120 holds 2 requests: both calls drain the rpm bucket.
	a, c := newActor(t, Options{Name: "old", MaxConcurrency: 3, RPM: 120, InputTPM: 1000, Breaker: bo})
	p1, p2 := mustAdmit(t, a, 600, 1), mustAdmit(t, a, 100, 1)
	if r := refusal(t, a, 1, 1, ReasonRPM); r.When.Sub(c.Now()) != 500*time.Millisecond {
		t.Errorf("rpm refusal: When - now = %v; want 500ms", r.When.Sub(c.Now()))
	}

	t.Run("raise limits keeps in-flight", func(t *testing.T) {
		a.Update(Options{Name: "new", MaxConcurrency: 3, RPM: 300, InputTPM: 2000, Breaker: bo})
		s := a.State()
		// Levels are kept: the rpm bucket stays empty rather than refilling
		// to the new burst of 5, the input bucket keeps its 300.
		if s.Name != "new" || s.InFlight != 2 || s.Requests.PerMinute != 300 || !near(s.Requests.Available, 0) ||
			!near(s.InputTokens.Available, 300) {
			t.Errorf("after Update: %+v; want name new, InFlight 2, rpm 300 with 0 left, input 300", s)
		}
		r := refusal(t, a, 1, 1, ReasonRPM)
		if got := r.When.Sub(c.Now()); got != 200*time.Millisecond { // the new rate: 5/s
			t.Errorf("rpm refusal after Update: When - now = %v; want 200ms", got)
		}
		c.Advance(time.Second) // 2000/min refills ~33.3/s, rpm 300 refills 5/s
		mustAdmit(t, a, 300, 1).Done(Outcome{Kind: Success})
	})
	t.Run("in-flight permits settle after Update", func(t *testing.T) {
		p1.Done(Outcome{Kind: Success, UsageKnown: true, InputTokens: 100})
		if got := a.State().InFlight; got != 1 {
			t.Errorf("InFlight = %d; want 1", got)
		}
	})
	t.Run("lower concurrency below in-flight", func(t *testing.T) {
		a.Update(Options{Name: "new", MaxConcurrency: 1, Breaker: bo})
		refusal(t, a, 1, 1, ReasonConcurrency)
		p2.Done(Outcome{Kind: ServerError}) // also opens the breaker (MinRequests 1)
	})
	t.Run("breaker state survives Update", func(t *testing.T) {
		if got := a.State().Breaker; got != BreakerOpen {
			t.Fatalf("breaker = %v; want open", got)
		}
		until := a.State().BreakerOpenAt
		a.Update(Options{Name: "new", Breaker: BreakerOptions{MinRequests: 5, OpenFor: time.Hour, Window: time.Minute}})
		r := refusal(t, a, 1, 1, ReasonBreakerOpen)
		if !r.When.Equal(until) {
			t.Errorf("When after Update = %v; want unchanged %v", r.When, until)
		}
	})
	t.Run("limits removed", func(t *testing.T) {
		c.Advance(time.Hour)
		for range 100 {
			mustAdmit(t, a, 1_000_000, 1_000_000).Done(Outcome{Kind: Success})
		}
		if s := a.State(); !math.IsInf(s.InputTokens.Available, 1) || s.Requests.PerMinute != 0 {
			t.Errorf("unlimited buckets: %+v", s)
		}
	})
}

func TestConcurrentAdmitDone(t *testing.T) {
	const (
		workers = 16
		calls   = 500
		maxConc = 4
	)
	// RPM 36000 holds 600 requests, as RPM 600 did before the requests
	// bucket was cut to one second's worth, so plenty of calls get through.
	a, c := newActor(t, Options{MaxConcurrency: maxConc, RPM: 36_000, InputTPM: 60000, OutputTPM: 60000,
		Breaker: BreakerOptions{MinRequests: 1_000_000}})
	var inFlight, peak, admitted atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range calls {
				if w == 0 && i%10 == 0 {
					c.Advance(100 * time.Millisecond)
				}
				p, err := a.Admit(50, 100)
				if err != nil {
					_ = nextCapacity(a, 50, 100)
					continue
				}
				admitted.Add(1)
				n := inFlight.Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				_ = a.State()
				inFlight.Add(-1)
				p.Done(Outcome{Kind: Success, UsageKnown: true, InputTokens: 40, OutputTokens: 10})
			}
		})
	}
	wg.Wait()
	if got := a.State().InFlight; got != 0 {
		t.Errorf("InFlight after all Done = %d; want 0", got)
	}
	if got := peak.Load(); got > maxConc {
		t.Errorf("peak in-flight = %d; want <= %d", got, maxConc)
	}
	if admitted.Load() == 0 {
		t.Error("no call admitted")
	}
}

func TestRefusalError(t *testing.T) {
	a, _ := newActor(t, Options{Name: "anthropic-a", RPM: 1})
	mustAdmit(t, a, 1, 1)
	_, err := a.Admit(1, 1)
	var r *Refusal
	if !errors.As(err, &r) || r.Provider != "anthropic-a" || r.Reason != ReasonRPM {
		t.Fatalf("Admit error = %v; want *Refusal from anthropic-a for rpm", err)
	}
	if err.Error() == "" {
		t.Error("Refusal.Error() is empty")
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{BreakerClosed.String(), "closed"},
		{BreakerHalfOpen.String(), "half_open"},
		{BreakerOpen.String(), "open"},
		{Success.String(), "success"},
		{ProviderAuth.String(), "provider_auth"},
		{OutcomeKind(0).String(), "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("String() = %q; want %q", tc.got, tc.want)
			}
		})
	}
}

func BenchmarkAdmitDone(b *testing.B) {
	a := New(Options{Name: "bench", MaxConcurrency: 1 << 20, RPM: 1 << 30, InputTPM: 1 << 30, OutputTPM: 1 << 30})
	o := Outcome{Kind: Success, UsageKnown: true, InputTokens: 90, OutputTokens: 50}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, err := a.Admit(100, 200)
			if err != nil {
				b.Error(err)
				return
			}
			p.Done(o)
		}
	})
}

// BenchmarkAdmitDoneShared is BenchmarkAdmitDone under a cluster share
// (as workers/lease applies it): admission must cost the same.
func BenchmarkAdmitDoneShared(b *testing.B) {
	a := New(Options{Name: "bench", MaxConcurrency: 1 << 20, RPM: 1 << 30, InputTPM: 1 << 30, OutputTPM: 1 << 30})
	a.SetShare(&Share{MaxConcurrency: 1 << 19, RPM: 1 << 29, InputTPM: 1 << 29, OutputTPM: 1 << 29})
	o := Outcome{Kind: Success, UsageKnown: true, InputTokens: 90, OutputTokens: 50}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, err := a.Admit(100, 200)
			if err != nil {
				b.Error(err)
				return
			}
			p.Done(o)
		}
	})
}

// TestBreakerOpensOnStreak checks that a provider that starts failing
// everything is cut off after MinRequests consecutive failures, even with
// a window full of earlier successes.
func TestBreakerOpensOnStreak(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := New(Options{Name: "p", Breaker: BreakerOptions{FailureRatio: 0.5, MinRequests: 5, Window: 10 * time.Second, OpenFor: time.Minute},
		Now: func() time.Time { return now }})
	for i := 0; i < 100; i++ {
		p, err := a.Admit(1, 1)
		if err != nil {
			t.Fatal(err)
		}
		p.Done(Outcome{Kind: Success})
	}
	for i := 0; i < 5; i++ {
		p, err := a.Admit(1, 1)
		if err != nil {
			t.Fatalf("Admit after %d failures: %v", i, err)
		}
		p.Done(Outcome{Kind: ServerError})
	}
	if _, err := a.Admit(1, 1); err == nil {
		t.Fatal("breaker still closed after MinRequests consecutive failures")
	}
	// A success in between resets the streak.
	b := New(Options{Name: "q", Breaker: BreakerOptions{FailureRatio: 0.9, MinRequests: 3, Window: 10 * time.Second, OpenFor: time.Minute},
		Now: func() time.Time { return now }})
	for _, k := range []OutcomeKind{Success, Success, Success, Success, ServerError, ServerError, Success, ServerError, ServerError} {
		p, err := b.Admit(1, 1)
		if err != nil {
			t.Fatalf("Admit: %v (streak must reset on success)", err)
		}
		p.Done(Outcome{Kind: k})
	}
}
