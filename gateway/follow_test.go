package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/logctx"
	"github.com/relaygw/relay/workers/simupstream"
)

// logLines decodes JSON log lines.
func logLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// linesOf returns the messages of the lines whose attribute key is val.
func linesOf(lines []map[string]any, key, val string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l[key] == val {
			out = append(out, l)
		}
	}
	return out
}

// msgs lists the messages of lines.
func msgs(lines []map[string]any) []string {
	var out []string
	for _, l := range lines {
		out = append(out, l["msg"].(string))
	}
	return out
}

// hasMsg reports whether a line with message msg is among lines.
func hasMsg(lines []map[string]any, msg string) bool {
	for _, l := range lines {
		if l["msg"] == msg {
			return true
		}
	}
	return false
}

// TestRequestIDSanity: a client's x-request-id is kept when it is a sane
// token and replaced otherwise; either way the answer, the upstream call
// and the log line carry the same id.
func TestRequestIDSanity(t *testing.T) {
	r := newRelay(t, withUpstreams(simupstream.Options{Record: 64}))
	tests := []struct {
		name string
		sent []string // x-request-id values sent (none: no header)
		keep bool
	}{
		{name: "sane kept", sent: []string{"client-7.a_b:c-D9"}, keep: true},
		{name: "128 chars kept", sent: []string{strings.Repeat("a", 128)}, keep: true},
		{name: "none", sent: nil},
		{name: "129 chars replaced", sent: []string{strings.Repeat("a", 129)}},
		{name: "space replaced", sent: []string{"a b"}},
		{name: "quote replaced", sent: []string{`a"b`}},
		{name: "json-ish replaced", sent: []string{`x","level":"ERROR`}},
		{name: "two values replaced", sent: []string{"a", "b"}},
		{name: "unicode replaced", sent: []string{"idé"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, r.URL+"/v1/messages", strings.NewReader(claudeBody))
			for k, v := range anthropicHeaders(canaryKey) {
				req.Header.Set(k, v)
			}
			for _, v := range tt.sent {
				req.Header.Add("X-Request-Id", v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			got := resp.Header.Get("X-Request-Id")
			switch {
			case resp.StatusCode != http.StatusOK:
				t.Fatalf("status %d", resp.StatusCode)
			case tt.keep && got != tt.sent[0]:
				t.Errorf("x-request-id answered %q; want the client's %q", got, tt.sent[0])
			case !tt.keep && !strings.HasPrefix(got, "req_"):
				t.Errorf("x-request-id answered %q; want a new req_ id", got)
			}
			up := r.Anthropic.Requests()
			if len(up) == 0 {
				t.Fatal("no upstream request recorded")
			}
			if v := up[len(up)-1].Header.Values("X-Request-Id"); len(v) != 1 || v[0] != got {
				t.Errorf("upstream x-request-id %q; want [%q]", v, got)
			}
			natstest.Eventually(t, 5*time.Second, "the request's log line", func() bool {
				return hasMsg(linesOf(logLines(t, r.logs.String()), "request_id", got), "request")
			})
		})
	}
}

// TestFollowOneRequestThroughLogs follows request ids through the JSON
// logs: a request that is parked, then served, a job with a callback, and
// a job whose callback is retried, then dead-lettered. Every line about
// them carries the request id (and the job id), once, and durations say
// their unit.
func TestFollowOneRequestThroughLogs(t *testing.T) {
	var jobLog syncBuffer
	hooks := make(chan struct{}, 1)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hooks <- struct{}{}
	}))
	t.Cleanup(rcv.Close)
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(refusing.Close)
	// The jobs service logs as cmd/relay sets it up: through logctx.Handler.
	r := newRelay(t, laneSetup(300*time.Millisecond,
		withJobs(jobs.Options{Workers: 1, CallbackWorkers: 1,
			CallbackSchedule: []time.Duration{10 * time.Millisecond}, // two attempts, then a dead letter
			Logger:           slog.New(logctx.Handler(slog.NewJSONHandler(&jobLog, &slog.HandlerOptions{Level: slog.LevelDebug})))}))...)

	// Parked, then served: the one slot is busy with a first request.
	a := anthropicHeaders(canaryKey)
	first := r.postAsync(context.Background(), "first", "/v1/messages", a, claudeBody)
	natstest.Eventually(t, 5*time.Second, "the first request upstream", func() bool { return r.Anthropic.Stats().InFlight == 1 })
	const parkedID = "client-parked-42"
	b := anthropicHeaders(canaryKey)
	b["x-request-id"] = parkedID
	rep := recvReply(t, r.postAsync(context.Background(), "parked", "/v1/messages", b, claudeBody))
	recvReply(t, first)
	if rep.status != http.StatusOK || rep.header.Get("X-Request-Id") != parkedID || rep.header.Get("X-Relay-Queue-Ms") == "0" {
		t.Fatalf("parked request: %d, x-request-id %q, queue %s ms; want 200, %q, parked",
			rep.status, rep.header.Get("X-Request-Id"), rep.header.Get("X-Relay-Queue-Ms"), parkedID)
	}

	// A job with a callback.
	const jobReqID = "client-job-7"
	code, _, j := r.doJSON(t, "POST", "/v1/jobs", canaryKey, map[string]string{"x-request-id": jobReqID},
		`{"endpoint":"/v1/messages","body":`+jobBody+`,"callback_url":"`+rcv.URL+`/hook"}`)
	if code != http.StatusAccepted || j["request_id"] != jobReqID {
		t.Fatalf("POST /v1/jobs = %d %v; want 202 with request_id %q", code, j, jobReqID)
	}
	jobID := j["id"].(string)
	select {
	case <-hooks:
	case <-time.After(20 * time.Second):
		t.Fatal("no callback")
	}
	natstest.Eventually(t, 10*time.Second, "the callback's log line", func() bool {
		return hasMsg(linesOf(logLines(t, jobLog.String()), "job_id", jobID), "callback attempt")
	})

	// A job whose callback receiver answers 500: retried once, then given
	// up as a dead letter.
	const deadReqID = "client-job-dead-9"
	code, _, j = r.doJSON(t, "POST", "/v1/jobs", canaryKey, map[string]string{"x-request-id": deadReqID},
		`{"endpoint":"/v1/messages","body":`+jobBody+`,"callback_url":"`+refusing.URL+`/hook"}`)
	if code != http.StatusAccepted || j["request_id"] != deadReqID {
		t.Fatalf("POST /v1/jobs = %d %v; want 202 with request_id %q", code, j, deadReqID)
	}
	deadID := j["id"].(string)
	natstest.Eventually(t, 20*time.Second, "the dead letter's log line", func() bool {
		return hasMsg(linesOf(logLines(t, jobLog.String()), "job_id", deadID), "callback given up: dead letter")
	})

	all := append(logLines(t, r.logs.String()), logLines(t, jobLog.String())...)
	parked := linesOf(all, "request_id", parkedID)
	for _, want := range []string{"parked", "left lane", "upstream attempt", "request"} {
		if !hasMsg(parked, want) {
			t.Errorf("no %q line with request_id %s; lines: %v", want, parkedID, msgs(parked))
		}
	}
	for _, l := range parked {
		if l["msg"] != "request" {
			continue
		}
		if _, ok := l["duration_ms"].(float64); !ok {
			t.Errorf("request line without duration_ms: %v", l)
		}
		if q, ok := l["queue_ms"].(float64); !ok || q <= 0 {
			t.Errorf("request line queue_ms = %v; want > 0 ms", l["queue_ms"])
		}
		for _, k := range []string{"duration", "queued"} {
			if _, ok := l[k]; ok {
				t.Errorf("request line has %q, a duration without its unit: %v", k, l)
			}
		}
	}
	for _, jt := range []struct {
		id, requestID string
		want          []string // messages of lines with the job's id
		attempts      int      // its "callback attempt" lines
	}{
		{id: jobID, requestID: jobReqID, want: []string{"upstream attempt", "callback attempt"}, attempts: 1},
		{id: deadID, requestID: deadReqID, want: []string{"upstream attempt", "callback attempt", "callback given up: dead letter"},
			attempts: 2},
	} {
		jobLines := linesOf(all, "job_id", jt.id)
		for _, want := range jt.want {
			if !hasMsg(jobLines, want) {
				t.Errorf("no %q line with job_id %s; lines: %v", want, jt.id, msgs(jobLines))
			}
		}
		var attempts int
		for _, l := range jobLines {
			if l["request_id"] != jt.requestID {
				t.Errorf("job line %q has request_id %v; want %s", l["msg"], l["request_id"], jt.requestID)
			}
			if l["msg"] == "callback attempt" {
				attempts++
			}
		}
		if attempts != jt.attempts {
			t.Errorf("job %s: %d callback attempt lines; want %d", jt.id, attempts, jt.attempts)
		}
		if !hasMsg(linesOf(all, "request_id", jt.requestID), "request") {
			t.Errorf("no request line for the submission of job %s", jt.id)
		}
		// Any line naming the job names it as job_id, with the request id.
		for _, l := range all {
			for k, v := range l {
				if v == jt.id && (k != "job_id" || l["request_id"] != jt.requestID) {
					t.Errorf("line %v names job %s under %q; want job_id with request_id %s", l, jt.id, k, jt.requestID)
				}
			}
		}
	}
	for _, l := range all {
		for _, k := range []string{"job", "batch"} {
			if _, ok := l[k]; ok {
				t.Errorf("line %q has key %q; want job_id, batch_id: %v", l["msg"], k, l)
			}
		}
	}
	// The job's upstream call carried the submission's request id.
	var sent bool
	for _, u := range r.Anthropic.Requests() {
		sent = sent || u.Header.Get("X-Request-Id") == jobReqID
	}
	if !sent {
		t.Errorf("no upstream call with x-request-id %s", jobReqID)
	}
	// A JSON line holds each key once (the context's attributes and a
	// line's own never both name the request).
	for _, line := range strings.Split(r.logs.String()+jobLog.String(), "\n") {
		for _, k := range []string{`"request_id"`, `"job_id"`} {
			if strings.Count(line, k) > 1 {
				t.Errorf("%s twice in %s", k, line)
			}
		}
	}
}
