package workers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/wire"
	"github.com/relaygw/relay/workers/workerstest"
)

// upstream answers every request with status (and a JSON body when 2xx),
// counting calls.
type upstream struct {
	srv    *httptest.Server
	calls  atomic.Int64
	status atomic.Int64
}

func newUpstream(t *testing.T, status int) *upstream {
	t.Helper()
	u := &upstream{}
	u.status.Store(int64(status))
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.calls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		st := int(u.status.Load())
		w.Header().Set("Content-Type", "application/json")
		if st == 429 {
			w.Header().Set("Retry-After", "7")
		}
		w.WriteHeader(st)
		if st < 300 {
			fmt.Fprint(w, `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":2,"output_tokens":1}}`)
		} else {
			fmt.Fprintf(w, `{"type":"error","error":{"type":"x","message":"status %d"}}`, st)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func target(t *testing.T, name string, u *upstream) workers.Target {
	t.Helper()
	p, err := workerstest.Provider(workers.ProviderOptions{Name: name, Format: workers.FormatAnthropic, BaseURL: u.srv.URL,
		APIKey: "k-" + name, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	return workers.Target{Provider: p, ProviderName: name, Format: workers.FormatAnthropic, Weight: 1, Timeout: 5 * time.Second}
}

func request(t *testing.T, model string) *workers.Request {
	t.Helper()
	body := []byte(`{"model":"` + model + `","max_tokens":5,"messages":[]}`)
	f, err := wire.Peek(body, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &workers.Request{Format: workers.FormatAnthropic, Body: body, Fields: f, Header: http.Header{}}
}

func TestDoRetriesElsewhere(t *testing.T) {
	cases := []struct {
		name       string
		statuses   []int // one upstream per status, route targets in order
		fallback   int   // status of a fallback route's upstream; 0 = none
		wantStatus int   // 0 = *workers.Error expected
		wantCalls  int   // total upstream calls
		wantRetry  time.Duration
	}{
		{name: "first fails, second serves", statuses: []int{500, 200}, wantStatus: 200, wantCalls: 2},
		{name: "529 then 200", statuses: []int{529, 200}, wantStatus: 200, wantCalls: 2},
		{name: "4xx is an answer, not retried", statuses: []int{400, 200}, wantStatus: 400, wantCalls: 1},
		{name: "all fail, one retried after backoff", statuses: []int{500, 503}, wantCalls: 3},
		{name: "fallback serves", statuses: []int{500}, fallback: 200, wantStatus: 200, wantCalls: 2},
		{name: "bounded by attempts", statuses: []int{500, 500, 500, 500}, wantCalls: 3},
		{name: "single target retried", statuses: []int{503}, wantCalls: 3},
		{name: "retry-after kept", statuses: []int{429}, wantCalls: 1, wantRetry: 7 * time.Second},
		{name: "provider key refused", statuses: []int{401, 200}, wantStatus: 200, wantCalls: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ups []*upstream
			var targets []workers.Target
			for i, st := range tc.statuses {
				u := newUpstream(t, st)
				ups = append(ups, u)
				targets = append(targets, target(t, fmt.Sprintf("p%d", i), u))
			}
			specs := []workers.RouteSpec{{Model: "m", Targets: targets}}
			if tc.fallback != 0 {
				u := newUpstream(t, tc.fallback)
				ups = append(ups, u)
				specs[0].Fallbacks = []string{"fb"}
				specs = append(specs, workers.RouteSpec{Model: "fb", Targets: []workers.Target{target(t, "fb", u)}})
			}
			r, err := workerstest.Router(workers.RouterOptions{Routes: specs, Backoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := r.Do(context.Background(), request(t, "m"), nil)
			var calls, untried int64
			for _, u := range ups {
				calls += u.calls.Load()
				if u.calls.Load() == 0 {
					untried++
				}
			}
			for _, u := range ups {
				if u.calls.Load() > 1 && untried > 0 {
					t.Errorf("an upstream was called %d times while another was never tried", u.calls.Load())
				}
			}
			if calls != int64(tc.wantCalls) {
				t.Errorf("upstream calls = %d; want %d", calls, tc.wantCalls)
			}
			if tc.wantStatus == 0 {
				var we *workers.Error
				if !errors.As(err, &we) {
					t.Fatalf("Do = %v, %v; want *workers.Error", resp, err)
				}
				if we.RetryAfter() != tc.wantRetry {
					t.Errorf("RetryAfter = %v; want %v", we.RetryAfter(), tc.wantRetry)
				}
				return
			}
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if resp.StatusCode != tc.wantStatus || resp.Attempts != tc.wantCalls {
				t.Errorf("Do = status %d after %d attempts; want %d after %d", resp.StatusCode, resp.Attempts, tc.wantStatus, tc.wantCalls)
			}
		})
	}
}

func TestDoUnknownModelAndCancel(t *testing.T) {
	u := newUpstream(t, 200)
	r, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{{Model: "m", Targets: []workers.Target{target(t, "p", u)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Do(context.Background(), request(t, "x"), nil); !errors.Is(err, workers.ErrUnknownModel) {
		t.Errorf("Do(unknown) = %v; want ErrUnknownModel", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Do(ctx, request(t, "m"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Do(cancelled) = %v; want context.Canceled", err)
	}
	if !r.Has("m") || r.Has("x") || len(r.Models()) != 1 {
		t.Errorf("Has/Models wrong: %v", r.Models())
	}
}

// TestNewRouterNeedsRetrySettings: the router has no retry defaults of
// its own (the configuration's are the only ones), so it refuses zeros.
func TestNewRouterNeedsRetrySettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    workers.RouterOptions
	}{
		{"max attempts", workers.RouterOptions{RetryRatio: 0.2, RetryFloor: 3}},
		{"budget ratio", workers.RouterOptions{MaxAttempts: 3, RetryFloor: 3}},
		{"budget floor", workers.RouterOptions{MaxAttempts: 3, RetryRatio: 0.2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := workers.NewRouter(tc.o); err == nil {
				t.Error("NewRouter: no error")
			}
		})
	}
	if _, err := workers.NewRouter(workers.RouterOptions{MaxAttempts: 1, RetryRatio: 0.2, RetryFloor: 3}); err != nil {
		t.Errorf("NewRouter with every retry setting: %v", err)
	}
}
