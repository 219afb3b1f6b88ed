package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
)

// anthropicStatus is the status Anthropic's API answers with each of its
// error types (its errors documentation).
var anthropicStatus = map[string][]int{
	"invalid_request_error": {400, 405, 409, 422},
	"authentication_error":  {401},
	"permission_error":      {403},
	"not_found_error":       {404},
	"request_too_large":     {413},
	"rate_limit_error":      {429},
	"api_error":             {500, 502, 503},
	"overloaded_error":      {503, StatusOverloaded},
}

// TestErrorClasses checks every row of errorClasses against the error
// types of both APIs, and the status each format is answered with.
func TestErrorClasses(t *testing.T) {
	for k := range numKinds {
		c := errorClasses[k]
		t.Run(fmt.Sprintf("kind%d/%d", k, c.status), func(t *testing.T) {
			if k == kindClientGone {
				if c.status != StatusClientClosedRequest || c.anthropic != "" {
					t.Fatalf("client gone: %+v; want only status 499, never answered", c)
				}
				return
			}
			if !containsInt(anthropicStatus[c.anthropic], c.status) {
				t.Errorf("status %d with Anthropic type %q; Anthropic answers it with %v", c.status, c.anthropic, anthropicStatus[c.anthropic])
			}
			wantOA := "invalid_request_error"
			switch {
			case k == kindBudget:
				// OpenAI answers an exhausted quota so, type and code.
				wantOA = "insufficient_quota"
			case c.status == 429:
				wantOA = "requests"
			case c.status >= 500:
				wantOA = "server_error"
			}
			if c.openaiType != wantOA {
				t.Errorf("OpenAI type %q for status %d; want %q", c.openaiType, c.status, wantOA)
			}
			e := newError(k, "m")
			if e.status != c.status || e.anthropic != c.anthropic || e.openaiCode != c.openaiCode || e.param != c.param || e.retryAfter != c.retryAfter {
				t.Errorf("newError = %+v; want the row %+v", e, c)
			}
			wantOpenAIStatus := c.status
			if c.status == StatusOverloaded {
				wantOpenAIStatus = http.StatusServiceUnavailable
			}
			if got := e.statusFor(workers.FormatOpenAI); got != wantOpenAIStatus {
				t.Errorf("OpenAI status %d; want %d", got, wantOpenAIStatus)
			}
			if got := e.statusFor(workers.FormatAnthropic); got != c.status {
				t.Errorf("Anthropic status %d; want %d", got, c.status)
			}
		})
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// fixedParker is a Parker whose lanes all estimate retryAfter; it parks
// nothing.
type fixedParker struct{ retryAfter time.Duration }

func (p fixedParker) Park(context.Context, lanes.Waiter) (*lanes.Ticket, error) {
	return nil, lanes.ErrClosed
}
func (p fixedParker) Parked(string) bool              { return false }
func (p fixedParker) RetryAfter(string) time.Duration { return p.retryAfter }

// TestErrorRules maps each internal error through errorRules: every rule
// is exercised, and every source's errors all get an answer.
func TestErrorRules(t *testing.T) {
	refusal := func(r actor.Reason, in time.Duration) *actor.Refusal {
		return &actor.Refusal{Provider: "p", Reason: r, When: time.Now().Add(in)}
	}
	noCapacity := &workers.Error{Refusals: []*actor.Refusal{refusal(actor.ReasonRPM, 3*time.Second)}}
	keyRefused := &workers.Error{Failures: []workers.Failure{{Provider: "p", Kind: workers.FailProviderAuth, Status: 401, Err: errors.New("401")}}, Attempts: 1}
	keySetAside := &workers.Error{Refusals: []*actor.Refusal{refusal(actor.ReasonProviderAuth, 30*time.Second)}}
	garbage := &workers.Error{Failures: []workers.Failure{{Provider: "p", Kind: workers.FailGarbage, Status: 200, Err: errors.New("not JSON")}}, Attempts: 1}
	garbageAndKey := &workers.Error{Failures: []workers.Failure{
		{Provider: "p", Kind: workers.FailGarbage, Status: 200, Err: errors.New("not JSON")},
		{Provider: "q", Kind: workers.FailProviderAuth, Status: 401, Err: errors.New("401")},
	}, Attempts: 2}
	failing := &workers.Error{Failures: []workers.Failure{
		{Provider: "p", Kind: workers.FailStatus, Status: 500, Err: errors.New("500")},
		{Provider: "q", Kind: workers.FailStatus, Status: 503, Err: errors.New("503")},
	}, Attempts: 2}
	failingOnce := &workers.Error{Failures: []workers.Failure{{Provider: "p", Kind: workers.FailTimeout, Err: errors.New("timeout")}}, Attempts: 1}
	const jobID = "job_0123"
	lane := Lane{Name: "interactive", MaxWait: 2 * time.Second}
	cases := []struct {
		rule      string // the rule expected to answer
		from      source
		err       error
		status    int
		retry     time.Duration // the retry-after expected (0: none)
		noRetry   bool
		msgHas    string
		wantParam string
	}{
		{"lanes.ErrLaneFull", fromLane, fmt.Errorf("park: %w", lanes.ErrLaneFull), 429, 7 * time.Second, false, `lane "interactive" is full`, ""},
		{"lanes.ErrUnknownLane", fromLane, lanes.ErrUnknownLane, 400, 0, false, `lane "interactive" is not configured`, ""},
		{"lanes.ErrWaitExpired", fromLane, lanes.ErrWaitExpired, StatusOverloaded, 7 * time.Second, true, "within 2s", ""},
		{"lanes.ErrCannotServeInTime", fromLane, &lanes.EarlyError{Reason: "breaker_open", Wait: 14 * time.Second}, StatusOverloaded, 14 * time.Second, false, "breakers of its providers are open", ""},
		{"lanes.ErrCannotServeInTime", fromLane, &lanes.EarlyError{Reason: lanes.ReasonLaneWait, Wait: 3 * time.Second}, StatusOverloaded, 3 * time.Second, false, "parked ahead of it", ""},
		{"lanes: closed, or other", fromLane, lanes.ErrClosed, StatusOverloaded, time.Second, false, "shutting down", ""},
		{"lanes: closed, or other", fromLane, errors.New("anything else"), StatusOverloaded, time.Second, false, "shutting down", ""},
		{"workers.Error: no capacity", fromDispatcher, noCapacity, 429, 3 * time.Second, false, "at its limit", ""},
		{"workers.Error: provider keys refused", fromDispatcher, keyRefused, 502, 0, true, "refused the relay's own key", ""},
		{"workers.Error: provider keys refused", fromDispatcher, keySetAside, 502, 0, true, "refused the relay's own key", ""},
		{"workers.Error: not transient", fromDispatcher, garbage, 502, 0, false, "could not pass on", ""},
		{"workers.Error: not transient", fromDispatcher, garbageAndKey, 502, 0, false, "could not pass on", ""},
		{"workers.Error: failing", fromDispatcher, failing, StatusOverloaded, time.Second, true, "failing or overloaded", ""},
		{"workers.Error: failing", fromDispatcher, failingOnce, StatusOverloaded, time.Second, false, "failing or overloaded", ""},
		{"workers.ErrInvalidRequest", fromDispatcher, fmt.Errorf("%w: tools are not supported", workers.ErrInvalidRequest), 400, 0, false, "tools are not supported", ""},
		{"workers.ErrUnknownModel", fromDispatcher, workers.ErrUnknownModel, 404, 0, false, "not served", "model"},
		{"dispatcher: other", fromDispatcher, errors.New("boom"), 500, 0, false, "internal error", ""},
		{"jobs.ErrNotFound", fromJobs, jobs.ErrNotFound, 404, 0, false, `job "job_0123" not found`, ""},
		{"jobs.ErrExpired", fromJobs, jobs.ErrExpired, 404, 0, false, "has expired", ""},
		{"batch not found or expired", fromBatches, jobs.ErrExpired, 404, 0, false, `message batch "job_0123" not found`, ""},
		{"batch not found or expired", fromBatches, jobs.ErrNotFound, 404, 0, false, `message batch "job_0123" not found`, ""},
		{"jobs.ErrBatchNotEnded", fromBatches, jobs.ErrBatchNotEnded, 409, 0, false, "still processing", ""},
		{"batch jobs.ErrInvalid", fromBatches, jobs.ErrBatchTooLarge, 400, 0, false, "too many requests", ""},
		{"jobs.ErrBatchEnded", fromBatches, jobs.ErrBatchEnded, 409, 0, false, "cannot be canceled", ""},
		{"jobs.ErrNotCancelable", fromJobs, jobs.ErrNotCancelable, 409, 0, false, "no longer be canceled", ""},
		{"callback not re-sendable", fromJobs, jobs.ErrNoCallback, 409, 0, false, "no callback_url", ""},
		{"callback not re-sendable", fromJobs, jobs.ErrNotFinished, 409, 0, false, "has not finished", ""},
		{"callback not re-sendable", fromJobs, jobs.ErrCallbackPending, 409, 0, false, "still being delivered", ""},
		{"jobs.ErrIdempotencyMismatch", fromJobs, jobs.ErrIdempotencyMismatch, 422, 0, false, "send a new Idempotency-Key", "Idempotency-Key"},
		{"jobs.ErrInvalid", fromJobs, fmt.Errorf("%w: lane", jobs.ErrInvalid), 400, 0, false, "invalid job: lane", ""},
		{"jobs.ErrTooLarge", fromBatches, jobs.ErrTooLarge, 413, 0, false, "larger than the job store accepts", ""},
		{"job store: other", fromJobs, errors.New("nats: timeout"), 503, time.Second, false, "unavailable", ""},
	}
	used := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			r := ruleFor(tc.err, tc.from)
			if r == nil || r.name != tc.rule {
				t.Fatalf("rule %v; want %q", r, tc.rule)
			}
			used[r.name] = true
			e := answerFor(tc.err, &about{from: tc.from, id: jobID, lane: lane, lanes: fixedParker{7 * time.Second}})
			if e.status != tc.status || e.noRetry != tc.noRetry || e.param != tc.wantParam || !errors.Is(e.cause, tc.err) {
				t.Errorf("answer %+v; want status %d, noRetry %v, param %q, the cause kept", e, tc.status, tc.noRetry, tc.wantParam)
			}
			// Retry-after hints computed from now may have lost a moment.
			if e.retryAfter > tc.retry || e.retryAfter < tc.retry-time.Second/2 {
				t.Errorf("retry-after %v; want %v", e.retryAfter, tc.retry)
			}
			if !strings.Contains(e.msg, tc.msgHas) {
				t.Errorf("message %q; want it to say %q", e.msg, tc.msgHas)
			}
		})
	}
	for _, r := range errorRules {
		if !used[r.name] {
			t.Errorf("rule %q is exercised by no case", r.name)
		}
	}
	for _, from := range []source{fromDispatcher, fromLane, fromJobs, fromBatches} {
		var last *errorRule
		for i := range errorRules {
			if errorRules[i].from&from != 0 {
				last = &errorRules[i]
			}
		}
		if last == nil || last.match != nil {
			t.Errorf("source %d: the last rule must answer every error", from)
		}
	}
}
