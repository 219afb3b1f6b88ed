package simupstream_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/relaygw/relay/workers/simupstream"
)

// TestWindowLimits: past a sliding-window limit requests get 429 in the
// endpoint's shape with retry-after, no rate-limit headers, and Stats
// counts them by cause and per second. A one-minute window keeps the
// test free of timing: every request falls in it however slow the
// machine.
func TestWindowLimits(t *testing.T) {
	for _, a := range apis() {
		t.Run(a.name, func(t *testing.T) {
			s := start(t, simupstream.Options{PerMinute: 3})
			hc := httpClient(t)
			var codes []int
			for i := range 5 {
				resp, body, err := do(t.Context(), hc, http.MethodPost, s.URL()+a.path, a.body, nil)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				codes = append(codes, resp.StatusCode)
				for _, h := range []string{"anthropic-ratelimit-requests-remaining", "x-ratelimit-remaining-requests"} {
					if resp.Header.Get(h) != "" {
						t.Errorf("request %d: %s sent; a window limit sends no rate-limit headers", i, h)
					}
				}
				if resp.StatusCode != http.StatusTooManyRequests {
					continue
				}
				checkErrorShape(t, a, body, "rate_limit_error", "requests", "rate_limit_exceeded")
				ra, err1 := strconv.Atoi(resp.Header.Get("Retry-After"))
				ms, err2 := strconv.Atoi(resp.Header.Get("Retry-After-Ms"))
				if err1 != nil || err2 != nil || ra < 1 || ra > 60 || ms < 1 || ms > 1000*ra {
					t.Errorf("request %d: retry-after %q, retry-after-ms %q; want 1..60 s and ms within them",
						i, resp.Header.Get("Retry-After"), resp.Header.Get("Retry-After-Ms"))
				}
			}
			if want := []int{200, 200, 200, 429, 429}; !slices.Equal(codes, want) {
				t.Errorf("codes = %v; want %v", codes, want)
			}
			st := s.Stats()
			if st.RateLimited != 2 || st.RateLimitedBy[simupstream.LimitPerMinute] != 2 || st.RateLimitedBy[simupstream.LimitPerSecond] != 0 {
				t.Errorf("stats = %+v; want 2 rate limited, both per_minute", st)
			}
			var reqs, limited int64
			for _, sec := range st.Seconds {
				reqs += sec.Requests
				limited += sec.RateLimited
			}
			if reqs != 5 || limited != 2 {
				t.Errorf("seconds = %+v; want 5 requests and 2 429s in all", st.Seconds)
			}
			if got := simupstream.PeakIn(st.Seconds, 60); got != 5 {
				t.Errorf("PeakIn(60) = %d; want 5", got)
			}
		})
	}
}

// TestPerSecondRecovers: a request refused by the one-second window is
// admitted once its retry-after-ms has passed.
func TestPerSecondRecovers(t *testing.T) {
	s := start(t, simupstream.Options{PerSecond: 1})
	hc := httpClient(t)
	var refused *http.Response
	for i := 0; i < 20 && refused == nil; i++ {
		resp, _, err := do(t.Context(), hc, http.MethodPost, s.URL()+"/v1/messages", anthropicBody, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			refused = resp
		}
	}
	if refused == nil {
		t.Fatal("20 requests in a row at a limit of 1 per second: none refused")
	}
	ms, err := strconv.Atoi(refused.Header.Get("Retry-After-Ms"))
	if err != nil || ms < 1 || ms > 1000 {
		t.Fatalf("retry-after-ms %q; want 1..1000", refused.Header.Get("Retry-After-Ms"))
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	resp, _, err := do(t.Context(), hc, http.MethodPost, s.URL()+"/v1/messages", anthropicBody, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after retry-after-ms: %v, %v; want 200", resp, err)
	}
	if by := s.Stats().RateLimitedBy; by[simupstream.LimitPerSecond] < 1 {
		t.Errorf("rate_limited_by = %v; want per_second counted", by)
	}
}

// TestMaxOpen: MaxOpen counts the requests MaxConcurrency refuses, which
// MaxInFlight does not, and /_sim/stats carries the new counters.
func TestMaxOpen(t *testing.T) {
	s := start(t, simupstream.Options{MaxConcurrency: 1})
	hc := httpClient(t)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _, _ = do(ctx, hc, http.MethodPost, s.URL()+"/v1/messages", anthropicBody, map[string]string{"x-sim-fault": "hang"})
	})
	waitFor(t, "one request in flight", func() bool { return s.Stats().InFlight == 1 })
	resp, _, err := do(t.Context(), hc, http.MethodPost, s.URL()+"/v1/messages", anthropicBody, nil)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second request: %v, %v; want 429", resp, err)
	}
	cancel()
	wg.Wait()
	waitFor(t, "nothing open", func() bool { return s.Stats().Open == 0 })
	resp, b, err := do(t.Context(), hc, http.MethodGet, s.URL()+"/_sim/stats", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /_sim/stats: %v, %v", resp, err)
	}
	var st simupstream.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if st.MaxOpen != 2 || st.MaxInFlight != 1 || st.RateLimitedBy[simupstream.LimitConcurrency] != 1 || len(st.RateLimitedBy) != 5 {
		t.Errorf("stats = %+v; want MaxOpen 2, MaxInFlight 1, one 429 by concurrency, every cause listed", st)
	}
}
