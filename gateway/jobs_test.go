package gateway_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/callbacks"
)

// releaseRunner blocks each job until the test sends its outcome.
type releaseRunner struct {
	started chan string
	release chan jobs.Outcome
}

func (r *releaseRunner) Run(ctx context.Context, j jobs.Job, body []byte, start func() bool) jobs.Outcome {
	if !start() {
		return jobs.Outcome{Err: jobs.ErrNotStarted}
	}
	r.started <- j.ID
	select {
	case o := <-r.release:
		return o
	case <-ctx.Done():
		return jobs.Outcome{Err: ctx.Err(), Retryable: true}
	}
}

// jobsSetup is the relay of the job tests: a jobs service opened with
// signer and allowPrivate that runs jobs with rr, idle until
// relay.runJobs, and the keys team-a and limited (interactive only).
func jobsSetup(rr jobs.Runner, signer *callbacks.Signer, allowPrivate bool, more ...relayOption) []relayOption {
	return append([]relayOption{
		withJobs(jobs.Options{Workers: 2, CallbackWorkers: 1,
			Callbacks: newCallbackSender(signer, allowPrivate), CallbackURLs: callbacks.Checker{AllowPrivate: allowPrivate}}),
		withJobRunner(rr),
		withJobsIdle(),
		withKeys(teamA, limitedInteractive),
	}, more...)
}

// doJSON sends a request with key as x-api-key and the headers hdr, and
// returns status, headers and the JSON object answered.
func (r *relay) doJSON(t *testing.T, method, path, key string, hdr map[string]string, body string) (int, http.Header, map[string]any) {
	t.Helper()
	h := map[string]string{"x-api-key": key}
	for k, v := range hdr {
		h[k] = v
	}
	code, header, b := r.do(t, method, path, h, body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: body %q is not JSON", method, path, b)
	}
	return code, header, m
}

const jobBody = `{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`

func TestJobEndToEnd(t *testing.T) {
	ns := natstest.StartTCP(t)
	secretBytes := make([]byte, 32)
	if _, err := rand.Read(secretBytes); err != nil {
		t.Fatal(err)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(secretBytes)
	sg, err := callbacks.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	type hook struct {
		h    http.Header
		body []byte
	}
	hooks := make(chan hook, 4)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("callback body: %v", err)
		}
		hooks <- hook{r.Header.Clone(), b}
	}))
	t.Cleanup(rcv.Close) // after the jobs service has stopped

	rr := &releaseRunner{started: make(chan string, 1), release: make(chan jobs.Outcome)}
	jr := newRelay(t, jobsSetup(rr, sg, true, withNATS(ns))...)

	// An outside subscriber over the TCP client port, with a durable
	// consumer, as a NATS user would.
	nc, err := nats.Connect(ns.ClientURL(), natstest.Auth())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ojs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	code, _, j := jr.doJSON(t, "POST", "/v1/jobs", canaryKey, nil,
		`{"endpoint":"/v1/messages","body":`+jobBody+`,"callback_url":"`+rcv.URL+`/hook","metadata":{"order":7}}`)
	if code != 202 || j["status"] != "queued" || j["lane"] != "batch" || !strings.HasPrefix(j["id"].(string), "job_") {
		t.Fatalf("POST /v1/jobs = %d %v; want 202 queued on lane batch", code, j)
	}
	id := j["id"].(string)
	cons, err := ojs.CreateOrUpdateConsumer(t.Context(), "RELAY_RESULTS", jetstream.ConsumerConfig{Durable: "svc",
		FilterSubjects: []string{"relay.results.team-a.>"}, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if code, _, g := jr.doJSON(t, "GET", "/v1/jobs/"+id, canaryKey, nil, ""); code != 200 || g["status"] != "queued" {
		t.Fatalf("GET = %d %v; want queued", code, g)
	}
	jr.runJobs()
	<-rr.started
	if code, _, g := jr.doJSON(t, "GET", "/v1/jobs/"+id, canaryKey, nil, ""); code != 200 || g["status"] != "running" {
		t.Fatalf("GET = %d %v; want running", code, g)
	}
	rr.release <- jobs.Outcome{StatusCode: 200, Body: []byte(`{"id":"msg_1","type":"message","content":[]}`), Provider: "anthropic-a"}

	var h hook
	select {
	case h = <-hooks:
	case <-time.After(15 * time.Second):
		t.Fatal("no callback")
	}
	if h.h.Get("Webhook-Id") != id {
		t.Errorf("webhook-id = %q; want %q", h.h.Get("Webhook-Id"), id)
	}
	ts := h.h.Get("Webhook-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		t.Errorf("webhook-timestamp %q: %v", ts, err)
	}
	if d := time.Since(time.Unix(sec, 0)); d > time.Minute || d < -time.Minute {
		t.Errorf("webhook-timestamp %q is %v off", ts, d)
	}
	mac := hmac.New(sha256.New, secretBytes)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(h.body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !strings.Contains(" "+h.h.Get("Webhook-Signature")+" ", " "+want+" ") {
		t.Errorf("webhook-signature %q; want %q among them", h.h.Get("Webhook-Signature"), want)
	}
	var cb map[string]any
	if err := json.Unmarshal(h.body, &cb); err != nil || cb["status"] != "succeeded" || cb["id"] != id {
		t.Errorf("callback body %s; want the succeeded job", h.body)
	}

	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("NATS result: %v", err)
	}
	if msg.Subject() != "relay.results.team-a."+id || msg.Headers().Get("Nats-Msg-Id") != id ||
		msg.Headers().Get("Relay-Status") != "succeeded" || msg.Headers().Get("Content-Type") != "application/json" {
		t.Errorf("NATS result %s %v", msg.Subject(), msg.Headers())
	}
	if string(msg.Data()) != string(h.body) {
		t.Errorf("NATS payload %s; want the callback body %s", msg.Data(), h.body)
	}
	if err := msg.Ack(); err != nil {
		t.Errorf("ack the NATS result: %v", err)
	}

	code, _, g := jr.doJSON(t, "GET", "/v1/jobs/"+id, canaryKey, nil, "")
	res, _ := g["result"].(map[string]any)
	if code != 200 || g["status"] != "succeeded" || res == nil || res["status_code"].(float64) != 200 || g["attempts"].(float64) != 1 {
		t.Fatalf("GET = %d %v; want succeeded with the result", code, g)
	}
	natstest.Eventually(t, 10*time.Second, "callback state delivered", func() bool {
		_, _, g = jr.doJSON(t, "GET", "/v1/jobs/"+id, canaryKey, nil, "")
		c, _ := g["callback"].(map[string]any)
		return c != nil && c["outcome"] == "delivered"
	})
	// Another key cannot see it; cancel of a finished job is 409.
	if code, _, e := jr.doJSON(t, "GET", "/v1/jobs/"+id, limitedKey, nil, ""); code != 404 || e["type"] != "error" {
		t.Errorf("GET by another key = %d %v; want 404", code, e)
	}
	if code, _, _ := jr.doJSON(t, "DELETE", "/v1/jobs/"+id, canaryKey, nil, ""); code != 409 {
		t.Errorf("DELETE finished job = %d; want 409", code)
	}
	mt := metricsOf(t, jr.Registry)
	for _, want := range []string{`relay_jobs_total{status="succeeded"} 1`, `relay_callbacks_total{outcome="delivered"} 1`} {
		if !strings.Contains(mt, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func metricsOf(t *testing.T, reg *prometheus.Registry) string {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			b.WriteString(mf.GetName() + "{")
			for i, l := range m.GetLabel() {
				if i > 0 {
					b.WriteString(",")
				}
				b.WriteString(l.GetName() + `="` + l.GetValue() + `"`)
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			b.WriteString("} " + strconv.FormatFloat(v, 'f', -1, 64) + "\n")
		}
	}
	return b.String()
}

func TestJobsHTTPErrorsIdempotencyCancel(t *testing.T) {
	rr := &releaseRunner{started: make(chan string, 1), release: make(chan jobs.Outcome)}
	jr := newRelay(t, jobsSetup(rr, testSigner(t), false)...)

	for _, tc := range []struct {
		name, key, body string
		hdr             map[string]string
		code            int
		errType         string
	}{
		{"no key", "", `{}`, nil, 401, "authentication_error"},
		{"malformed", canaryKey, `{"endpoint":`, nil, 400, "invalid_request_error"},
		{"unknown field", canaryKey, `{"endpoint":"/v1/messages","body":` + jobBody + `,"extra":1}`, nil, 400, "invalid_request_error"},
		{"endpoint", canaryKey, `{"endpoint":"/v1/embeddings","body":` + jobBody + `}`, nil, 400, "invalid_request_error"},
		{"no body", canaryKey, `{"endpoint":"/v1/messages"}`, nil, 400, "invalid_request_error"},
		{"no model", canaryKey, `{"endpoint":"/v1/messages","body":{"max_tokens":1}}`, nil, 400, "invalid_request_error"},
		{"stream", canaryKey, `{"endpoint":"/v1/messages","body":{"model":"claude-sonnet","stream":true}}`, nil, 400, "invalid_request_error"},
		{"ssrf", canaryKey, `{"endpoint":"/v1/messages","body":` + jobBody + `,"callback_url":"http://169.254.169.254/x"}`, nil, 400, "invalid_request_error"},
		{"ssrf loopback", canaryKey, `{"endpoint":"/v1/messages","body":` + jobBody + `,"callback_url":"http://127.1/x"}`, nil, 400, "invalid_request_error"},
		{"unknown route", canaryKey, `{"endpoint":"/v1/messages","body":{"model":"nope"}}`, nil, 404, "not_found_error"},
		{"route not allowed", limitedKey, `{"endpoint":"/v1/messages","body":` + jobBody + `}`, nil, 403, "permission_error"},
		{"lane not allowed", limitedKey, `{"endpoint":"/v1/chat/completions","body":{"model":"gpt-4o"},"lane":"batch"}`, nil, 403, "permission_error"},
		{"unknown lane", canaryKey, `{"endpoint":"/v1/messages","body":` + jobBody + `,"lane":"nope"}`, nil, 400, "invalid_request_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, e := jr.doJSON(t, "POST", "/v1/jobs", tc.key, tc.hdr, tc.body)
			errObj, _ := e["error"].(map[string]any)
			if code != tc.code || errObj == nil || errObj["type"] != tc.errType {
				t.Fatalf("POST /v1/jobs %s = %d %v; want %d %s", tc.body, code, e, tc.code, tc.errType)
			}
		})
	}

	// The limited key's default lane (it may not use batch).
	code, _, j := jr.doJSON(t, "POST", "/v1/jobs", limitedKey, nil, `{"endpoint":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[]}}`)
	if code != 202 || j["lane"] != "interactive" {
		t.Fatalf("POST = %d %v; want 202 on interactive", code, j)
	}
	// Idempotency-Key: the same job, 200 and Idempotent-Replayed.
	idem := map[string]string{"Idempotency-Key": "abc-1"}
	body := `{"endpoint":"/v1/messages","body":` + jobBody + `}`
	code1, _, j1 := jr.doJSON(t, "POST", "/v1/jobs", canaryKey, idem, body)
	code2, h2, j2 := jr.doJSON(t, "POST", "/v1/jobs", canaryKey, idem, body)
	if code1 != 202 || code2 != 200 || j1["id"] != j2["id"] || h2.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("idempotent POSTs = %d %v, %d %v; want 202 then 200 with the same id", code1, j1["id"], code2, j2["id"])
	}
	// The same key with another body: 422 naming the key, in both formats.
	other := `{"endpoint":"/v1/messages","lane":"interactive","body":` + jobBody + `}`
	code3, _, e3 := jr.doJSON(t, "POST", "/v1/jobs", canaryKey, idem, other)
	if e, _ := e3["error"].(map[string]any); code3 != 422 || e == nil || e["type"] != "invalid_request_error" ||
		!strings.Contains(e["message"].(string), `"abc-1"`) {
		t.Fatalf("POST with a reused Idempotency-Key and another body = %d %v; want 422 invalid_request_error naming the key", code3, e3)
	}
	id := j1["id"].(string)
	if code, _, _ := jr.doJSON(t, "DELETE", "/v1/jobs/"+id, limitedKey, nil, ""); code != 404 {
		t.Errorf("DELETE by another key = %d; want 404", code)
	}
	code, _, c := jr.doJSON(t, "DELETE", "/v1/jobs/"+id, canaryKey, nil, "")
	if code != 200 || c["status"] != "canceled" {
		t.Fatalf("DELETE queued = %d %v; want 200 canceled", code, c)
	}
	if code, _, e := jr.doJSON(t, "GET", "/v1/jobs/job_01000000000000000000000000", canaryKey, nil, ""); code != 404 ||
		!strings.Contains(e["error"].(map[string]any)["message"].(string), "expired") {
		t.Errorf("GET of an old id = %d %v; want 404 saying expired", code, e)
	}
	if code, _, _ := jr.doJSON(t, "GET", "/v1/jobs/job_nope", canaryKey, nil, ""); code != 404 {
		t.Errorf("GET unknown = %d; want 404", code)
	}
}

func TestNoJobServiceNoRoutes(t *testing.T) {
	gw := gateway.New(gateway.Config{}, gateway.Options{}, gateway.Deps{})
	srv := httptest.NewServer(gw.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/jobs", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("POST /v1/jobs without a job service = %d; want 404", resp.StatusCode)
	}
}
