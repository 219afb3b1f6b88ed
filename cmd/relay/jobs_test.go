package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/simupstream"
)

// jobsRelay is a relay configuration for job tests: a provider in front of
// a simulated upstream running in the test process (so it outlives the
// relay and counts calls), a callback signing secret, private callback
// URLs allowed, and an embedded NATS client port for outside consumers.
type jobsRelay struct {
	t        *testing.T
	dir      string // working directory, config and NATS store
	addr     string // API listener
	natsAddr string // embedded NATS client listener
	secret   string // callbacks.signing_secret
	upstream *simupstream.Server
	maxConc  int    // the provider's max_concurrency, 0 = none
	natsYAML string // the nats section, as written by writeConfig
}

// observerPassword is the password of the nats.users entry "observer",
// which may publish and subscribe to everything.
const observerPassword = "observer-password-1b9d"

// newJobsRelay writes the configuration of a job test relay; start runs it.
func newJobsRelay(t *testing.T, upstream simupstream.Options, maxConc int) *jobsRelay {
	t.Helper()
	key := make([]byte, 24)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	sim, err := simupstream.Start(context.Background(), "127.0.0.1:0", upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	r := &jobsRelay{t: t, dir: t.TempDir(), addr: freePort(t), natsAddr: freePort(t),
		secret: "whsec_" + base64.StdEncoding.EncodeToString(key), upstream: sim, maxConc: maxConc}
	r.writeConfig(fmt.Sprintf("{listen: %s, store_dir: %s, users: [{user: observer, password: %s, publish: [\">\"], subscribe: [\">\"]}]}",
		r.natsAddr, filepath.Join(r.dir, "nats"), observerPassword))
	return r
}

// writeConfig writes the relay's configuration with natsYAML as its nats
// section; an empty r.secret leaves callbacks.signing_secret out.
func (r *jobsRelay) writeConfig(natsYAML string) {
	r.t.Helper()
	r.natsYAML = natsYAML
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nshutdown_grace: 5s\n", r.addr)
	fmt.Fprintf(&b, "nats: %s\n", natsYAML)
	fmt.Fprintf(&b, "providers:\n  - name: sim\n    type: anthropic\n    base_url: %s\n    api_key: %s\n", r.upstream.URL(), canaryUpstream)
	if r.maxConc > 0 {
		fmt.Fprintf(&b, "    max_concurrency: %d\n", r.maxConc)
	}
	b.WriteString("routes:\n  - model: claude-sonnet\n    targets:\n      - {provider: sim, model: claude-sonnet-4-5}\n")
	fmt.Fprintf(&b, "keys:\n  - name: key0\n    key: %s\n", canaryKey)
	// A short retry schedule (the default waits 5 s, then 5 min).
	const schedule = "retry_schedule: [200ms, 400ms, 800ms, 1600ms, 3200ms]"
	if r.secret != "" {
		fmt.Fprintf(&b, "callbacks: {signing_secret: %q, allow_private_networks: true, %s}\n", r.secret, schedule)
	} else {
		fmt.Fprintf(&b, "callbacks: {allow_private_networks: true, %s}\n", schedule)
	}
	b.WriteString("log: {level: info}\n")
	if err := os.WriteFile(filepath.Join(r.dir, "relay.yaml"), []byte(b.String()), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// observe connects to the relay's embedded NATS client port as the
// observer until the test ends.
func (r *jobsRelay) observe() jetstream.JetStream {
	r.t.Helper()
	nc, err := nats.Connect("nats://"+r.natsAddr, nats.UserInfo("observer", observerPassword))
	if err != nil {
		r.t.Fatalf("observer connect: %v", err)
	}
	r.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		r.t.Fatal(err)
	}
	return js
}

// start runs the relay on the configuration and store and waits until it
// is ready.
func (r *jobsRelay) start() *relayProc {
	r.t.Helper()
	return launch(r.t, r.dir, r.addr, "")
}

// submit posts a Messages job with callbackURL and returns its id.
func (r *jobsRelay) submit(callbackURL string) string {
	r.t.Helper()
	code, id, b := r.trySubmit(callbackURL, "hi")
	if code != http.StatusAccepted || id == "" {
		r.t.Fatalf("POST /v1/jobs: %d %s; want 202 with a queued job", code, b)
	}
	return id
}

// trySubmit posts a Messages job with callbackURL (none when empty) and
// content, and returns the status, the queued job's id on a 202, and
// the body.
func (r *jobsRelay) trySubmit(callbackURL, content string) (code int, id, body string) {
	r.t.Helper()
	cb := ""
	if callbackURL != "" {
		cb = fmt.Sprintf(`,"callback_url":%q`, callbackURL)
	}
	reqBody := fmt.Sprintf(`{"endpoint":"/v1/messages","body":{"model":"claude-sonnet","max_tokens":8,`+
		`"messages":[{"role":"user","content":%q}]}%s}`, content, cb)
	req, err := http.NewRequest(http.MethodPost, "http://"+r.addr+"/v1/jobs", strings.NewReader(reqBody))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("x-api-key", canaryKey)
	req.Header.Set("content-type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		r.t.Fatalf("POST /v1/jobs: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("POST /v1/jobs: read body: %v", err)
	}
	var j jobView
	if resp.StatusCode == http.StatusAccepted && (json.Unmarshal(b, &j) != nil || j.Status != "queued") {
		r.t.Fatalf("POST /v1/jobs: %d %s; want a queued job", resp.StatusCode, b)
	}
	return resp.StatusCode, j.ID, string(b)
}

// jobView is the part of a job's JSON the tests look at.
type jobView struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	Result   *struct {
		StatusCode int `json:"status_code"`
	} `json:"result"`
	Callback *struct {
		Attempts   int    `json:"attempts"`
		Outcome    string `json:"outcome"`
		LastStatus int    `json:"last_status"`
	} `json:"callback"`
}

func (j *jobView) terminal() bool {
	return j.Status == "succeeded" || j.Status == "failed" || j.Status == "canceled"
}

// job returns GET /v1/jobs/{id}; ok is false when the relay did not answer
// 200 (it may be restarting).
func (r *jobsRelay) job(id string) (j jobView, ok bool) {
	req, err := http.NewRequest(http.MethodGet, "http://"+r.addr+"/v1/jobs/"+id, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("x-api-key", canaryKey)
	resp, err := httpClient.Do(req)
	if err != nil {
		return j, false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return j, false
	}
	if err := json.Unmarshal(b, &j); err != nil {
		r.t.Fatalf("GET /v1/jobs/%s: %v: %s", id, err, b)
	}
	return j, true
}

// delivery is one callback request the receiver got.
type delivery struct {
	id, ts, sig string
	body        []byte
	answered    int
	at          time.Time
}

// receiver is a callback receiver on loopback that answers with
// answer(webhook-id, n), n counting that id's deliveries from 1.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []delivery
	answer func(id string, n int) int
}

func newReceiver(t *testing.T, answer func(id string, n int) int) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			t.Errorf("callback body: %v", err)
		}
		d := delivery{id: req.Header.Get("webhook-id"), ts: req.Header.Get("webhook-timestamp"),
			sig: req.Header.Get("webhook-signature"), body: body, at: time.Now()}
		rc.mu.Lock()
		n := 1
		for _, g := range rc.got {
			if g.id == d.id {
				n++
			}
		}
		d.answered = rc.answer(d.id, n)
		rc.got = append(rc.got, d)
		rc.mu.Unlock()
		w.WriteHeader(d.answered)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// deliveries returns a copy of what the receiver got so far.
func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// cbURL is the callback URL of the receiver.
func (rc *receiver) cbURL() string { return rc.URL + "/cb" }

// verify checks a delivery's Standard Webhooks signature with an HMAC
// computed here, independently of the relay's signer.
func verify(t *testing.T, secret string, d delivery) {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(d.id + "." + d.ts + "."))
	m.Write(d.body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, s := range strings.Fields(d.sig) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return
		}
	}
	t.Errorf("webhook %s: signature %q does not verify", d.id, d.sig)
}

// kill ends the relay with SIGKILL and waits for it.
func (p *relayProc) kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	<-p.done
}

// TestJobsCrashRestart accepts jobs behind a slow upstream with little
// capacity, kills the relay with SIGKILL while some run, restarts it on the
// same store and checks that every job ends exactly once from the caller's
// view: one terminal state, one webhook-id (signed) and one NATS result
// message each.
func TestJobsCrashRestart(t *testing.T) {
	t.Parallel()
	const n = 20
	r := newJobsRelay(t, simupstream.Options{Latency: 500 * time.Millisecond}, 2)
	rc := newReceiver(t, func(string, int) int { return http.StatusOK })
	p := r.start()

	ids := make([]string, n)
	for i := range ids {
		ids[i] = r.submit(rc.cbURL())
	}
	// Crash once some jobs finished and others are in flight upstream.
	natstest.Eventually(t, 20*time.Second, "a job done and one in flight", func() bool {
		if r.upstream.Stats().InFlight == 0 {
			return false
		}
		for _, id := range ids {
			if j, _ := r.job(id); j.terminal() {
				return true
			}
		}
		return false
	})
	p.kill()
	killedAt := time.Now()
	before := r.upstream.Stats().Requests
	t.Logf("killed after %d upstream calls, %d deliveries", before, len(rc.deliveries()))

	p = r.start()
	views := make(map[string]jobView, n)
	natstest.Eventually(t, 90*time.Second, "every job terminal with its callback delivered", func() bool {
		for _, id := range ids {
			if v, ok := views[id]; ok && v.Callback != nil && v.Callback.Outcome == "delivered" {
				continue
			}
			j, ok := r.job(id)
			if !ok || !j.terminal() {
				return false
			}
			views[id] = j
			if j.Callback == nil || j.Callback.Outcome != "delivered" {
				return false
			}
		}
		return true
	})
	t.Logf("upstream calls: %d (%d before the kill), for %d jobs; all done %v after the kill",
		r.upstream.Stats().Requests, before, n, time.Since(killedAt).Round(time.Millisecond))
	for _, id := range ids {
		if v := views[id]; v.Status != "succeeded" || v.Result == nil || v.Result.StatusCode != http.StatusOK {
			t.Errorf("job %s: %+v; want succeeded with 200", id, v)
		}
	}

	// Wait until every job and callback message has been acknowledged
	// (both work queues are empty), so that no stray redelivery can come,
	// then check the caller's view again.
	js := r.observe()
	natstest.Eventually(t, 30*time.Second, jobs.JobsStream+" and "+jobs.CallbacksStream+" empty", func() bool {
		return natstest.StreamMsgs(t, js, jobs.JobsStream, "") == 0 && natstest.StreamMsgs(t, js, jobs.CallbacksStream, "") == 0
	})
	for _, id := range ids {
		if j, ok := r.job(id); !ok || j.Status != "succeeded" {
			t.Errorf("job %s later: %+v", id, j)
		}
	}

	// Callbacks: one distinct webhook-id per job, every copy signed and
	// identical. A repeat after a 2xx may only come from a delivery the
	// crash interrupted before its acknowledgement.
	byID := map[string][]delivery{}
	for _, d := range rc.deliveries() {
		verify(t, r.secret, d)
		byID[d.id] = append(byID[d.id], d)
	}
	if len(byID) != n {
		t.Errorf("callbacks carried %d distinct webhook-ids; want %d", len(byID), n)
	}
	for _, id := range ids {
		ds := byID[id]
		if len(ds) == 0 {
			t.Errorf("job %s: no callback", id)
			continue
		}
		var status string
		for i, d := range ds {
			var b struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			}
			if err := json.Unmarshal(d.body, &b); err != nil || b.ID != id {
				t.Errorf("job %s: callback body %s", id, d.body)
			}
			if i == 0 {
				status = b.Status
			} else if b.Status != status || string(d.body) != string(ds[0].body) {
				t.Errorf("job %s: callback %d differs from the first: %s vs %s", id, i+1, d.body, ds[0].body)
			}
			if i > 0 && ds[i-1].answered/100 == 2 && ds[i-1].at.After(killedAt) {
				t.Errorf("job %s: callback repeated after a %d answered after the restart", id, ds[i-1].answered)
			}
		}
		if status != "succeeded" {
			t.Errorf("job %s: callback status %q", id, status)
		}
		if len(ds) > 1 {
			t.Logf("job %s: %d callback deliveries", id, len(ds))
		}
	}

	// NATS: exactly one result message per job on RELAY_RESULTS, read by a
	// separate client (the observer, js) over the embedded server's client
	// port.
	if _, err := nats.Connect("nats://" + r.natsAddr); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("NATS client port without credentials: %v; want an authorization error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "RELAY_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Errorf("RELAY_RESULTS holds %d messages; want %d", info.State.Msgs, n)
	}
	cons, err := js.OrderedConsumer(ctx, "RELAY_RESULTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"relay.results.>"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range info.State.Msgs {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("read RELAY_RESULTS: %v (after %d)", err, len(seen))
		}
		id := msg.Headers().Get(jetstream.MsgIDHeader)
		seen[id]++
		var b struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(msg.Data(), &b); err != nil || b.ID != id || b.Status != "succeeded" {
			t.Errorf("result message %s on %s: %s", id, msg.Subject(), msg.Data())
		}
		if want := "relay.results.key0." + id; msg.Subject() != want {
			t.Errorf("result subject %s; want %s", msg.Subject(), want)
		}
	}
	if _, err := cons.Next(jetstream.FetchMaxWait(500 * time.Millisecond)); err == nil {
		t.Error("RELAY_RESULTS holds more messages than its info said")
	}
	if len(seen) != n {
		t.Errorf("RELAY_RESULTS: %d distinct Nats-Msg-Ids; want %d", len(seen), n)
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("job %s: %d result messages; want 1", id, seen[id])
		}
	}
	tenantReadsResults(t, "nats://"+canaryKey+"@"+r.natsAddr, "key0", n)
	// Idle pulls are routine, not worth a warning (they were logged by
	// every worker every few seconds).
	if m := p.findLog(map[string]string{"msg": "pull job message"}); m != nil {
		t.Errorf("idle pull logged: %v", m)
	}
	p.stopClean()
}

// TestJobsCallbackRetried: the receiver answers 503 twice, then 200; the
// callback is delivered on the third attempt with the same webhook-id, and
// the job's callback state says so.
func TestJobsCallbackRetried(t *testing.T) {
	t.Parallel()
	r := newJobsRelay(t, simupstream.Options{Latency: time.Millisecond}, 0)
	rc := newReceiver(t, func(_ string, n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	p := r.start()
	id := r.submit(rc.cbURL())
	var j jobView
	natstest.Eventually(t, 30*time.Second, "callback delivered", func() bool {
		j, _ = r.job(id)
		return j.Callback != nil && j.Callback.Outcome == "delivered"
	})
	if j.Status != "succeeded" || j.Callback.Attempts != 3 || j.Callback.LastStatus != http.StatusOK {
		t.Errorf("job %s: status %s, callback %+v; want succeeded, delivered on attempt 3 with 200", id, j.Status, *j.Callback)
	}
	ds := rc.deliveries()
	if len(ds) != 3 {
		t.Fatalf("receiver got %d deliveries; want 3", len(ds))
	}
	for i, d := range ds {
		verify(t, r.secret, d)
		if d.id != id || string(d.body) != string(ds[0].body) {
			t.Errorf("delivery %d: webhook-id %s, body %s; want %s and the first body", i+1, d.id, d.body, id)
		}
	}
	t.Logf("attempts at +%v, +%v", ds[1].at.Sub(ds[0].at).Round(time.Millisecond), ds[2].at.Sub(ds[0].at).Round(time.Millisecond))
	p.stopClean()
}

// TestJobsCallbackResumesAfterRestart: the receiver refuses (503) until
// the relay has been stopped; the delivery schedule is durable, so the
// restarted relay delivers the callback with the same webhook-id.
func TestJobsCallbackResumesAfterRestart(t *testing.T) {
	t.Parallel()
	r := newJobsRelay(t, simupstream.Options{Latency: time.Millisecond}, 0)
	var mu sync.Mutex
	answer := http.StatusServiceUnavailable
	rc := newReceiver(t, func(string, int) int {
		mu.Lock()
		defer mu.Unlock()
		return answer
	})
	p := r.start()
	id := r.submit(rc.cbURL())
	natstest.Eventually(t, 20*time.Second, "a failed delivery attempt recorded", func() bool {
		j, _ := r.job(id)
		return j.Callback != nil && j.Callback.Attempts >= 1 && j.Callback.Outcome == "pending"
	})
	p.stopClean()
	failed := len(rc.deliveries())
	mu.Lock()
	answer = http.StatusOK
	mu.Unlock()
	restarted := time.Now()

	p = r.start()
	t.Logf("restarted relay ready after %v", time.Since(restarted).Round(time.Millisecond))
	var j jobView
	natstest.Eventually(t, 30*time.Second, "callback delivered after the restart", func() bool {
		j, _ = r.job(id)
		return j.Callback != nil && j.Callback.Outcome == "delivered"
	})
	ds := rc.deliveries()
	if len(ds) != failed+1 {
		t.Errorf("receiver got %d deliveries; want %d refused and 1 accepted", len(ds), failed)
	}
	for i, d := range ds {
		verify(t, r.secret, d)
		if d.id != id || string(d.body) != string(ds[0].body) {
			t.Errorf("delivery %d: webhook-id %s; want %s with the first body", i+1, d.id, id)
		}
		if after := d.at.After(restarted); (i < failed) == after || (d.answered == http.StatusOK) != after {
			t.Errorf("delivery %d answered %d (after restart: %v)", i+1, d.answered, after)
		}
	}
	if j.Status != "succeeded" || j.Callback.Attempts != len(ds) {
		t.Errorf("job: status %s, callback %+v; want succeeded after %d attempts", j.Status, *j.Callback, len(ds))
	}
	t.Logf("%d refused attempts before the restart; delivered %v after it", failed,
		ds[len(ds)-1].at.Sub(restarted).Round(time.Millisecond))
	p.stopClean()
}

// TestJobsCallbackGeneratedSecret: with no callbacks.signing_secret the
// relay still signs every callback, with a secret it generates on the first
// start, logs once and keeps in NATS, so a restart signs with the same one
// and does not log it again.
func TestJobsCallbackGeneratedSecret(t *testing.T) {
	t.Parallel()
	r := newJobsRelay(t, simupstream.Options{Latency: time.Millisecond}, 0)
	r.secret = ""
	r.writeConfig(r.natsYAML)
	rc := newReceiver(t, func(string, int) int { return http.StatusOK })

	p := r.start()
	secret := generatedSecret(t, p.stderr.String())
	if secret == "" {
		t.Fatalf("first start logged no generated signing secret:\n%s", p.stderr.String())
	}
	id1 := r.submit(rc.cbURL())
	natstest.Eventually(t, 30*time.Second, "first callback", func() bool { return len(rc.deliveries()) == 1 })
	p.stopClean()

	p = r.start()
	if again := generatedSecret(t, p.stderr.String()); again != "" {
		t.Errorf("restart logged a generated secret again")
	}
	id2 := r.submit(rc.cbURL())
	natstest.Eventually(t, 30*time.Second, "second callback", func() bool { return len(rc.deliveries()) == 2 })
	p.stopClean()

	for i, d := range rc.deliveries() {
		if want := []string{id1, id2}[i]; d.id != want {
			t.Errorf("delivery %d: webhook-id %s; want %s", i+1, d.id, want)
		}
		if d.sig == "" {
			t.Errorf("delivery %d is unsigned", i+1)
		}
		verify(t, secret, d)
	}
}

// generatedSecret returns the signing secret a relay logged as generated,
// or "".
func generatedSecret(t *testing.T, logs string) string {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Secret string `json:"signing_secret"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Secret != "" {
			return rec.Secret
		}
	}
	return ""
}

// tenantReadsResults logs in on url as the tenant called key (its relay key
// in the URL) and reads want results through a durable consumer named
// after the key, as the README shows.
func tenantReadsResults(t *testing.T, url, key string, want int) {
	t.Helper()
	nc, err := nats.Connect(url, nats.CustomInboxPrefix("_INBOX."+key))
	if err != nil {
		t.Fatalf("tenant connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, "RELAY_RESULTS", jetstream.ConsumerConfig{
		Durable: key, FilterSubject: "relay.results." + key + ".>", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("tenant durable consumer: %v", err)
	}
	got := 0
	for got < want {
		batch, err := cons.Fetch(want-got, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("tenant fetch: %v", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if err := m.Ack(); err != nil {
				t.Errorf("tenant ack: %v", err)
			}
		}
		if n == 0 {
			t.Fatalf("tenant read %d results; want %d (%v)", got, want, batch.Error())
		}
		got += n
	}
}
