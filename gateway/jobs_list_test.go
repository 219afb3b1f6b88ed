package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/callbacks"
)

// okJobs answers every job 200 at once.
var okJobs = jobs.RunnerFunc(func(context.Context, jobs.Job, []byte) jobs.Outcome {
	return jobs.Outcome{StatusCode: 200, Body: []byte(`{"id":"msg_1","type":"message","content":[]}`), Provider: "p"}
})

// listRelay is a relay with keys team-a and limited (batch only), jobs
// running at once, callbacks tried twice 10 ms apart.
func listRelay(t *testing.T) *relay {
	return newRelay(t,
		withJobs(jobs.Options{Workers: 2, CallbackWorkers: 1, CallbackSchedule: []time.Duration{10 * time.Millisecond},
			Callbacks: newCallbackSender(testSigner(t), true), CallbackURLs: callbacks.Checker{AllowPrivate: true}}),
		withJobRunner(okJobs), withKeys(teamA, limitedBatch))
}

func submitJob(t *testing.T, r *relay, key, model, extra string) string {
	t.Helper()
	body := strings.Replace(jobBody, "claude-sonnet", model, 1)
	code, _, j := r.doJSON(t, "POST", "/v1/jobs", key, nil, `{"endpoint":"/v1/messages","lane":"batch","body":`+body+extra+`}`)
	if code != 202 {
		t.Fatalf("POST /v1/jobs = %d %v", code, j)
	}
	return j["id"].(string)
}

func pageIDs(t *testing.T, p map[string]any) []string {
	t.Helper()
	data, ok := p["data"].([]any)
	if !ok {
		t.Fatalf("page %v has no data array", p)
	}
	var out []string
	for _, d := range data {
		out = append(out, d.(map[string]any)["id"].(string))
	}
	return out
}

// GET /v1/jobs: pages both ways in the Message Batches list's shape, the
// key's own jobs only, filters, and bad parameters answered 400.
func TestJobList(t *testing.T) {
	r := listRelay(t)
	var mine []string
	for range 3 {
		mine = append([]string{submitJob(t, r, canaryKey, "claude-sonnet", "")}, mine...)
		time.Sleep(2 * time.Millisecond) // ids of one millisecond sort randomly
	}
	theirs := submitJob(t, r, limitedKey, "gpt-4o", "")

	code, _, p := r.doJSON(t, "GET", "/v1/jobs?limit=2", canaryKey, nil, "")
	if code != 200 || strings.Join(pageIDs(t, p), ",") != strings.Join(mine[:2], ",") || p["has_more"] != true ||
		p["first_id"] != mine[0] || p["last_id"] != mine[1] {
		t.Fatalf("first page = %d %v; want %v", code, p, mine[:2])
	}
	_, _, p2 := r.doJSON(t, "GET", "/v1/jobs?limit=2&after_id="+mine[1], canaryKey, nil, "")
	if got := pageIDs(t, p2); len(got) != 1 || got[0] != mine[2] || p2["has_more"] != false {
		t.Fatalf("second page = %v; want [%s]", p2, mine[2])
	}
	_, _, back := r.doJSON(t, "GET", "/v1/jobs?limit=2&before_id="+mine[2], canaryKey, nil, "")
	if strings.Join(pageIDs(t, back), ",") != strings.Join(mine[:2], ",") || back["has_more"] != false {
		t.Fatalf("before_id page = %v; want %v", back, mine[:2])
	}
	for _, q := range []string{"", "?after_id=" + mine[0], "?before_id=" + mine[2]} {
		_, _, o := r.doJSON(t, "GET", "/v1/jobs"+q, limitedKey, nil, "")
		for _, id := range pageIDs(t, o) {
			if id != theirs {
				t.Fatalf("limited listed %s (query %q)", id, q)
			}
		}
	}
	for _, id := range mine {
		natstest.Eventually(t, 10*time.Second, "job succeeded", func() bool {
			_, _, g := r.doJSON(t, "GET", "/v1/jobs/"+id, canaryKey, nil, "")
			return g["status"] == "succeeded"
		})
	}
	filters := []struct{ q, want string }{
		{"?status=succeeded&lane=batch", strings.Join(mine, ",")},
		{"?status=queued", ""},
		{"?lane=interactive", ""},
		{"?created_after=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339), ""},
		{"?created_after=2020-01-01T00:00:00Z&limit=99999999999999999999999", strings.Join(mine, ",")},
	}
	for _, f := range filters {
		code, _, fp := r.doJSON(t, "GET", "/v1/jobs"+f.q, canaryKey, nil, "")
		if code != 200 || strings.Join(pageIDs(t, fp), ",") != f.want {
			t.Errorf("GET /v1/jobs%s = %d %v; want [%s]", f.q, code, fp, f.want)
		}
	}
	bad := []string{"limit=0", "limit=-3", "limit=ten", "status=done", "created_after=yesterday", "after_id=job_x",
		"before_id=../../x", "after_id=" + mine[0] + "&before_id=" + mine[1], "lane="}
	for _, q := range bad {
		code, _, e := r.doJSON(t, "GET", "/v1/jobs?"+q, canaryKey, nil, "")
		errObj, _ := e["error"].(map[string]any)
		if code != 400 || e["type"] != "error" || errObj["type"] != "invalid_request_error" {
			t.Errorf("GET /v1/jobs?%s = %d %v; want 400 invalid_request_error", q, code, e)
		}
	}
	// A lane or status that does not exist is named in the error, like
	// the other bad filters, not answered with an empty list.
	named := []struct{ q, want string }{
		{"lane=nope", `lane: unknown lane "nope"`},
		{"status=succeeded&lane=Batch", `lane: unknown lane "Batch"`},
		{"status=done", "status: must be queued, running, succeeded, failed or canceled"},
	}
	for _, n := range named {
		code, _, e := r.doJSON(t, "GET", "/v1/jobs?"+n.q, canaryKey, nil, "")
		errObj, _ := e["error"].(map[string]any)
		if code != 400 || e["type"] != "error" || errObj["type"] != "invalid_request_error" || errObj["message"] != n.want {
			t.Errorf("GET /v1/jobs?%s = %d %v; want 400 invalid_request_error %q", n.q, code, e, n.want)
		}
	}
	if code, _, _ := r.doJSON(t, "GET", "/v1/jobs", "wrong-key", nil, ""); code != 401 {
		t.Errorf("unknown key = %d; want 401", code)
	}
}

// POST /v1/jobs/{id}/callback: a dead letter is visible in GET and re-sent
// by its owner (same webhook-id), refused for others (404) and for jobs
// without a callback (409).
func TestJobCallbackResend(t *testing.T) {
	var ok atomic.Bool
	var ids []string
	hooks := make(chan string, 8)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !ok.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		hooks <- req.Header.Get("Webhook-Id")
	}))
	t.Cleanup(rcv.Close)
	r := listRelay(t)
	id := submitJob(t, r, canaryKey, "claude-sonnet", `,"callback_url":"`+rcv.URL+`/hook"`)
	plain := submitJob(t, r, canaryKey, "claude-sonnet", "")
	var cb map[string]any
	natstest.Eventually(t, 15*time.Second, "callback dead letter", func() bool {
		_, _, g := r.doJSON(t, "GET", "/v1/jobs/"+id, canaryKey, nil, "")
		cb, _ = g["callback"].(map[string]any)
		return cb != nil && cb["outcome"] == "dead_letter"
	})
	if cb["attempts"].(float64) != 2 || cb["last_status"].(float64) != 503 || cb["last_attempt_at"] == nil ||
		!strings.Contains(cb["last_error"].(string), "503") {
		t.Errorf("dead letter = %v", cb)
	}
	if !strings.Contains(metricsOf(t, r.Registry), `relay_callbacks_total{outcome="dead_letter"} 1`) {
		t.Errorf("metrics lack the dead letter")
	}
	if code, _, _ := r.doJSON(t, "POST", "/v1/jobs/"+id+"/callback", limitedKey, nil, ""); code != 404 {
		t.Errorf("re-send by another key = %d; want 404", code)
	}
	natstest.Eventually(t, 10*time.Second, "plain job finished", func() bool {
		_, _, g := r.doJSON(t, "GET", "/v1/jobs/"+plain, canaryKey, nil, "")
		return g["status"] == "succeeded"
	})
	if code, _, e := r.doJSON(t, "POST", "/v1/jobs/"+plain+"/callback", canaryKey, nil, ""); code != 409 {
		t.Errorf("re-send without callback_url = %d %v; want 409", code, e)
	}
	ok.Store(true)
	code, _, j := r.doJSON(t, "POST", "/v1/jobs/"+id+"/callback", canaryKey, nil, "")
	// The answer reads the job back after the re-send was queued; a fast
	// delivery may already have ended it.
	if c, _ := j["callback"].(map[string]any); code != 202 || (c["outcome"] != "pending" && c["outcome"] != "delivered") || c["resends"].(float64) != 1 {
		t.Fatalf("re-send = %d %v; want 202, pending (or already delivered), one re-send", code, j)
	}
	select {
	case got := <-hooks:
		ids = append(ids, got)
	case <-time.After(15 * time.Second):
		t.Fatal("the re-sent callback did not arrive")
	}
	if ids[0] != id {
		t.Errorf("webhook-id %q; want the job id %q", ids[0], id)
	}
}
