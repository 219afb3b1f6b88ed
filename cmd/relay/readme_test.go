package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// readmeBlocks returns the bodies of the README's code blocks in the given
// language, in order.
func readmeBlocks(t *testing.T, lang string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var cur *strings.Builder
	for line := range strings.Lines(string(b)) {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```"+lang:
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line)
		}
	}
	return blocks
}

// readmeCheck is what one README shell example must do against the demo.
type readmeCheck struct {
	match    string // a substring of the command line that identifies it
	status   []int  // acceptable HTTP statuses
	contains []string
}

// readmeChecks lists every shell example of the README in order. A new
// example without a row here fails TestReadmeExamples: add its row.
var readmeChecks = []readmeCheck{
	{match: "relay serve --config configs/demo.yaml"},
	{match: "go test"},
	{"x-api-key: relay-demo-key", []int{200}, []string{`"type":"message"`, "You said: hi"}},
	{`"stream":true,"messages"`, []int{200}, []string{"event: message_start", `"text":" said:"`, `"text":" hi"`, "event: message_stop"}},
	{"/v1/chat/completions", []int{200}, []string{`"object":"chat.completion.chunk"`, `"content":" hi"`, `"usage":{`, "data: [DONE]"}},
	{"/v1/models", []int{200}, []string{`"id":"claude-sonnet"`}},
	{"x-api-key: wrong", []int{401}, []string{`"type":"authentication_error"`}},
	{"/metrics", []int{200}, []string{"relay_requests_total{"}},
	{"Idempotency-Key: order-42", []int{202}, []string{`"object":"job"`, `"status":"queued"`}},
	{"v1/jobs/job_", []int{200}, []string{`"object":"job"`}},
	{match: "-X DELETE"},        // answer: readmeExpect, by the job's state
	{match: "/v1/jobs?status="}, // answer: readmeExpect
	{match: "/callback"},        // answer: readmeExpect, by the callback's state
	{"/v1/messages/batches -H", []int{200}, []string{`"type":"message_batch"`}},
	{"/results", []int{200}, []string{`"custom_id":"a"`, `"custom_id":"b"`, `"type":"succeeded"`}},
	{"nats sub", nil, nil},
	{"localhost:8081/admin/keys -H", []int{201}, []string{`"name":"team-b"`, `"key":"rk-`, `"source":"api"`}},
	{"x-api-key: rk-…", []int{200}, []string{`"type":"message"`}},
	{"localhost:8081/admin/keys -H", []int{200}, []string{`"name":"demo"`, `"source":"config"`, `"name":"team-b"`}},
	{"-X PATCH", []int{200}, []string{`"rpm":120`, `"gpt-4o"`}},
	{"/rotate", []int{200}, []string{`"key":"rk-`, `"previous_valid_until"`}},
	{"-X DELETE localhost:8081", []int{200}, []string{`"revoked":true`}},
	{"keys create team-c", nil, []string{`"name": "team-c"`, `"key": "rk-`, `"usd": 20`}},
	{"keys list", nil, []string{`"name": "team-c"`, `"name": "demo"`}},
	{"keys update team-c", nil, []string{`"claude-sonnet"`}},
	{"keys rotate team-c", nil, []string{`"previous_valid_until"`}},
	{"keys revoke team-c", nil, []string{`"revoked": true`}},
	{"/v1/usage", []int{200}, []string{`"object":"usage"`, `"key":"demo"`}},
}

// readmeRun holds what earlier examples produced, for the placeholders of
// later ones (`job_01K…`, `msgbatch_…`).
type readmeRun struct {
	t       *testing.T
	p       *relayProc
	nats    string
	client  *http.Client
	jobID   string
	batchID string
	secret  string      // the last key secret the admin API answered
	header  http.Header // the last answer's headers
	submit  []string    // the README's job submission command line
}

// readmeExpect gives, for the examples whose answer depends on the state
// of the README's job, the answer the README promises for the state the
// job is in when the example runs (it replaces the row's status and
// contains).
var readmeExpect = map[string]func(r *readmeRun) ([]int, []string){
	// `# cancel while queued (409 once it runs or has finished)`: the
	// demo serves the job in milliseconds, so it is made to have finished.
	"-X DELETE": func(r *readmeRun) ([]int, []string) {
		r.waitJobFinished()
		return []int{http.StatusConflict}, []string{`"type":"error"`, "can no longer be canceled"}
	},
	// The README's job is listed by the README's own filters.
	"/v1/jobs?status=": func(r *readmeRun) ([]int, []string) {
		j := r.waitJobFinished()
		if j.Status != "succeeded" {
			r.t.Fatalf("README job %s ended %q; the listing example filters status=succeeded", r.jobID, j.Status)
		}
		return []int{http.StatusOK}, []string{`"data":[`, `"has_more":`, `"id":"` + r.jobID + `"`}
	},
	// 409 when the job has no callback_url, has not finished or its
	// callback is still pending; 202 with the job otherwise. The README's
	// callback_url (hooks.example.com) is not delivered to here, so the
	// callback is pending (its next attempt 5 s away) when this runs.
	"/callback": func(r *readmeRun) ([]int, []string) {
		j := r.waitJobFinished()
		switch {
		case j.Callback == nil:
			r.t.Fatalf("README job %s shows no callback object; it has a callback_url", r.jobID)
		case j.Callback.Outcome == "pending":
			return []int{http.StatusConflict}, []string{`"type":"error"`, "still being delivered"}
		}
		return []int{http.StatusAccepted}, []string{`"id":"` + r.jobID + `"`}
	},
}

// readmeJob is the part of GET /v1/jobs/{id} the state checks read.
type readmeJob struct {
	Status   string
	Callback *struct{ Outcome string }
}

// waitJobFinished polls the README's job until it has finished, for at
// most 30 s, and returns it.
func (r *readmeRun) waitJobFinished() readmeJob {
	var j readmeJob
	natstest.Eventually(r.t, 30*time.Second, "README job "+r.jobID+" finished", func() bool {
		req, _ := http.NewRequestWithContext(r.t.Context(), http.MethodGet, "http://"+r.p.addr+"/v1/jobs/"+r.jobID, nil)
		req.Header.Set("x-api-key", "relay-demo-key")
		_, body := r.send(req)
		j = readmeJob{}
		if err := json.Unmarshal([]byte(body), &j); err != nil {
			r.t.Fatalf("GET job %s: %v: %s", r.jobID, err, body)
		}
		return j.Status != "queued" && j.Status != "running"
	})
	return j
}

// TestReadmeExamples runs every shell example in the README against the
// demo (configs/demo.yaml) as a reader would paste it: curl command lines
// are parsed and sent with curl's defaults, the NATS subscription is
// opened with the URL and subject the README gives, and the Go consumer
// example's names are used to read a result. The README's listed response
// headers must be on a real answer. Container examples (docker …) are
// not run: no container engine runs here.
func TestReadmeExamples(t *testing.T) {
	t.Parallel()
	var lines []pipeline
	for _, b := range readmeBlocks(t, "sh") {
		if strings.HasPrefix(strings.TrimSpace(b), "docker ") {
			// No container engine runs here; TestDockerfileBinary builds
			// the binary exactly as the Dockerfile does.
			t.Logf("container example not run (no container engine): %q", b)
			continue
		}
		ls, err := shellLines(b)
		if err != nil {
			t.Fatalf("README example %q: %v", b, err)
		}
		lines = append(lines, ls...)
	}
	if len(lines) != len(readmeChecks) {
		for i, l := range lines {
			t.Logf("example %d: %s", i, strings.Join(l[0], " "))
		}
		t.Fatalf("README has %d shell examples, readmeChecks %d: add or remove rows", len(lines), len(readmeChecks))
	}
	natsAddr := freePort(t)
	p := startDemoNATS(t, natsAddr)
	r := &readmeRun{t: t, p: p, nats: natsAddr, client: sdkHTTPClient(t)}
	sub := r.subscribeFirst(lines)
	usage := r.subscribeUsage()
	for i, l := range lines {
		chk := readmeChecks[i]
		line := strings.Join(l[0], " ")
		if !strings.Contains(line, chk.match) {
			t.Fatalf("example %d %q: expected the example matching %q here", i, line, chk.match)
		}
		t.Run(fmt.Sprintf("%02d", i), func(t *testing.T) { r.t = t; r.run(l, chk) })
	}
	r.t = t
	if sub != nil {
		r.expectResult(sub)
	}
	r.goConsumer()
	r.responseHeaders()
	r.replayed()
	r.callbackHeaders()
	r.expectUsage(usage)
}

// startDemoNATS is startDemo with the NATS client port on natsAddr.
func startDemoNATS(t *testing.T, natsAddr string) *relayProc {
	t.Helper()
	demo, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return startDemoText(t, natsAddr, string(demo))
}

// startDemoText runs `relay serve` on demo, a configs/demo.yaml text,
// with its ports replaced by free ones (NATS on natsAddr).
func startDemoText(t *testing.T, natsAddr, demo string) *relayProc {
	t.Helper()
	dir := t.TempDir()
	return startServe(t, relayOpts{grace: "2s"}, dir, filepath.Join(dir, "relay.yaml"), func(p *relayProc) {
		p.admin = freePort(t)
		p.writeConfig(strings.NewReplacer("127.0.0.1:8080", p.addr, "127.0.0.1:18790", p.sim,
			"127.0.0.1:4222", natsAddr, "127.0.0.1:8081", p.admin, "./data/nats-demo", filepath.Join(dir, "nats")).Replace(demo))
	})
}

// run executes one example line and checks it.
func (r *readmeRun) run(l pipeline, chk readmeCheck) {
	t := r.t
	switch l[0][0] {
	case "go":
		if slices.Contains(l[0], "keys") {
			r.keysCommand(l[0], chk)
			return
		}
		// The two commands: the demo this test runs is the first one.
		if strings.Contains(strings.Join(l[0], " "), "serve") && !slices.Contains(l[0], "configs/demo.yaml") {
			t.Fatalf("the README's serve command does not run configs/demo.yaml: %q", l[0])
		}
		return
	case "nats":
		return // opened before the jobs ran, see subscribeFirst
	case "curl":
	default:
		t.Fatalf("README example %q: no runner for %q", l[0], l[0][0])
	}
	if expect, ok := readmeExpect[chk.match]; ok {
		chk.status, chk.contains = expect(r)
	}
	if strings.Contains(strings.Join(l[0], " "), "Idempotency-Key:") {
		r.submit = l[0]
	}
	status, body := r.curl(l[0])
	if !slices.Contains(chk.status, status) {
		t.Fatalf("%q: status %d, want one of %v; body:\n%s", l[0], status, chk.status, body)
	}
	for _, rest := range l[1:] {
		body = filter(t, rest, body)
	}
	for _, want := range chk.contains {
		if !strings.Contains(body, want) {
			t.Errorf("%q: answer lacks %q:\n%s", l[0], want, body)
		}
	}
	if chk.match == "v1/jobs/job_" && strings.Contains(body, `"status":"queued"`) && !strings.Contains(body, `"queue_position":`) {
		t.Errorf("%q: a queued job without queue_position (README: while queued):\n%s", l[0], body)
	}
	r.remember(body)
}

// filter applies a pipeline stage (only `grep ^prefix` is used) to body.
func filter(t *testing.T, cmd []string, body string) string {
	if len(cmd) != 2 || cmd[0] != "grep" || !strings.HasPrefix(cmd[1], "^") {
		t.Fatalf("pipeline stage %q: only `grep ^prefix` is supported", cmd)
	}
	var out strings.Builder
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, cmd[1][1:]) {
			out.WriteString(line)
		}
	}
	if out.Len() == 0 {
		t.Fatalf("%q printed nothing", cmd)
	}
	return out.String()
}

// keysCommand runs a `go run ./cmd/relay keys ...` example with the
// built binary, on the demo's configuration as this test rewrote it, and
// with no admin token in the environment (the demo's file has one).
func (r *readmeRun) keysCommand(args []string, chk readmeCheck) {
	t := r.t
	t.Helper()
	i := slices.Index(args, "keys")
	if i < 0 || !slices.Contains(args[:i], "./cmd/relay") {
		t.Fatalf("README example %q: want go run ./cmd/relay keys …", args)
	}
	rest := slices.Clone(args[i:])
	for j, a := range rest {
		if a == "configs/demo.yaml" {
			rest[j] = r.p.cfgPath
		}
	}
	out, errOut, code := runRelay(t, t.TempDir(), []string{"RELAY_ADMIN_TOKEN="}, rest...)
	if code != 0 {
		t.Fatalf("%q: exit %d: %s", args, code, errOut)
	}
	for _, want := range chk.contains {
		if !strings.Contains(out, want) {
			t.Errorf("%q: output lacks %q:\n%s", args, want, out)
		}
	}
}

// remember keeps the ids a submit or a batch create answered, and the
// secret an admin key creation answered.
func (r *readmeRun) remember(body string) {
	var v struct{ ID, Key string }
	if json.Unmarshal([]byte(body), &v) != nil {
		return
	}
	if strings.HasPrefix(v.Key, "rk-") {
		r.secret = v.Key
	}
	switch {
	case strings.HasPrefix(v.ID, "job_"):
		r.jobID = v.ID
	case strings.HasPrefix(v.ID, "msgbatch_"):
		r.batchID = v.ID
	}
}

// curl sends what the curl command line in args would, with curl's
// defaults (a POST with -d, form content type unless -H sets one,
// Accept: */*), and returns the status and body.
func (r *readmeRun) curl(args []string) (int, string) {
	t := r.t
	t.Helper()
	method, target, data, hdr := "", "", "", http.Header{"Accept": {"*/*"}, "User-Agent": {"curl/8.0"}}
	hasData := false
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-H" || a == "-d" || a == "-X":
			if i+1 == len(args) {
				t.Fatalf("%q: %s needs a value", args, a)
			}
			i++
			switch a {
			case "-H":
				k, v, ok := strings.Cut(args[i], ":")
				if !ok {
					t.Fatalf("%q: header %q has no colon", args, args[i])
				}
				hdr.Set(k, strings.TrimSpace(v))
			case "-d":
				data, hasData = args[i], true
			default:
				method = args[i]
			}
		case a == "-s" || a == "-N" || a == "-sN":
		case strings.HasPrefix(a, "-"):
			t.Fatalf("%q: curl option %q is not supported by this test", args, a)
		default:
			target = a
		}
	}
	if hasData && hdr.Get("Content-Type") == "" {
		hdr.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return r.send(r.request(method, target, data, hasData, hdr))
}

// request builds the HTTP request for a README URL, filling placeholders.
func (r *readmeRun) request(method, target, data string, hasData bool, hdr http.Header) *http.Request {
	t := r.t
	t.Helper()
	addr := r.p.addr
	switch {
	case strings.HasPrefix(target, "localhost:8080/"):
	case strings.HasPrefix(target, "localhost:8081/"):
		addr = r.p.admin // the admin API
	default:
		t.Fatalf("README URL %q: want localhost:8080/… or localhost:8081/…", target)
	}
	path := target[len("localhost:8080"):]
	if v := hdr.Get("X-Api-Key"); v == "rk-…" {
		hdr.Set("X-Api-Key", r.secret)
	}
	path = strings.ReplaceAll(path, "job_01K…", r.jobID)
	if strings.Contains(path, "msgbatch_…") {
		path = strings.ReplaceAll(path, "msgbatch_…", r.batchID)
		if strings.HasSuffix(path, "/results") {
			r.waitBatchEnded()
		}
	}
	if method == "" {
		method = http.MethodGet
		if hasData {
			method = http.MethodPost
		}
	}
	var body io.Reader
	if hasData {
		body = strings.NewReader(data)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	return req
}

func (r *readmeRun) send(req *http.Request) (int, string) {
	r.t.Helper()
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	r.header = resp.Header
	return resp.StatusCode, string(b)
}

// waitBatchEnded polls the batch until its results can be read.
func (r *readmeRun) waitBatchEnded() {
	natstest.Eventually(r.t, 60*time.Second, "batch "+r.batchID+" ended", func() bool {
		req, _ := http.NewRequestWithContext(r.t.Context(), http.MethodGet,
			"http://"+r.p.addr+"/v1/messages/batches/"+r.batchID, nil)
		req.Header.Set("x-api-key", "relay-demo-key")
		_, body := r.send(req)
		return strings.Contains(body, `"processing_status":"ended"`)
	})
}

// subscribeFirst opens the README's `nats sub` subscription before the
// jobs run, as a reader would in a second terminal.
func (r *readmeRun) subscribeFirst(lines []pipeline) *nats.Subscription {
	t := r.t
	for _, l := range lines {
		args := l[0]
		if args[0] != "nats" {
			continue
		}
		if len(args) != 5 || args[1] != "sub" || args[2] != "--server" {
			t.Fatalf("nats example %q: want `nats sub --server URL SUBJECT`", args)
		}
		u, err := url.Parse(strings.Replace(args[3], "127.0.0.1:4222", r.nats, 1))
		if err != nil || u.User == nil {
			t.Fatalf("nats example URL %q: %v (want nats://KEY@host:port)", args[3], err)
		}
		nc, err := nats.Connect("nats://"+u.Host, nats.Token(u.User.Username()))
		if err != nil {
			t.Fatalf("nats example: connect with the README's URL: %v", err)
		}
		t.Cleanup(nc.Close)
		sub, err := nc.SubscribeSync(args[4])
		if err != nil {
			t.Fatalf("nats example: subscribe %q: %v", args[4], err)
		}
		return sub
	}
	return nil
}

// expectResult waits for the README job's result on the subscription.
func (r *readmeRun) expectResult(sub *nats.Subscription) {
	t := r.t
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		if strings.HasSuffix(m.Subject, "."+r.jobID) {
			return
		}
	}
	t.Fatalf("no result for %s on the README's NATS subject %q", r.jobID, sub.Subject)
}

var (
	reInbox   = regexp.MustCompile(`CustomInboxPrefix\("([^"]+)"\)`)
	reDurable = regexp.MustCompile(`Durable: "([^"]+)"`)
	reFilter  = regexp.MustCompile(`FilterSubject: "([^"]+)"`)
	reStream  = regexp.MustCompile(`CreateOrUpdateConsumer\(ctx, "([^"]+)"`)
)

// goConsumer runs the README's Go durable-consumer example with its own
// names and the demo key, and reads the README job's result with it.
func (r *readmeRun) goConsumer() {
	t := r.t
	blocks := readmeBlocks(t, "go")
	if len(blocks) != 1 {
		t.Fatalf("README has %d Go examples, want the one consumer example", len(blocks))
	}
	pick := func(re *regexp.Regexp) string {
		m := re.FindStringSubmatch(blocks[0])
		if m == nil {
			t.Fatalf("README Go example lacks %s", re)
		}
		return m[1]
	}
	nc, err := nats.Connect("nats://"+r.nats, nats.Token("relay-demo-key"), nats.CustomInboxPrefix(pick(reInbox)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, pick(reStream), jetstream.ConsumerConfig{
		Durable: pick(reDurable), FilterSubject: pick(reFilter), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("README Go example: create consumer: %v", err)
	}
	batch, err := cons.Fetch(100, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if strings.HasSuffix(m.Subject(), "."+r.jobID) {
			return
		}
	}
	t.Fatalf("the README's Go consumer read no result for %s", r.jobID)
}

// responseHeaders checks that the README's list of response headers (the
// part before its `;`: every answer) is on a real answer from the demo,
// and that x-relay-lane names the lane the request asked for.
func (r *readmeRun) responseHeaders() {
	t := r.t
	always, _ := readmeResponseHeaders(t)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+r.p.addr+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("x-api-key", "relay-demo-key")
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-relay-lane", "standard")
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body))
	resp.Body.Close()
	for _, n := range append(always, headersChecked(hdrAnswer)...) {
		if resp.Header.Get(n) == "" {
			t.Errorf("README lists response header %s; the demo's answer has none (%v)", n, resp.Header)
		}
	}
	if got := resp.Header.Get("x-relay-lane"); got != "standard" {
		t.Errorf("x-relay-lane: standard was answered with x-relay-lane %q", got)
	}
}

// replayed sends the README's job submission again: the same
// Idempotency-Key and request return the same job, 200 with
// Idempotent-Replayed: true.
func (r *readmeRun) replayed() {
	t := r.t
	if r.submit == nil {
		t.Fatal("no README job submission (Idempotency-Key) was run")
	}
	status, body := r.curl(r.submit)
	if status != http.StatusOK || !strings.Contains(body, `"id":"`+r.jobID+`"`) {
		t.Errorf("README job submission repeated: %d %s; want 200 with job %s", status, body, r.jobID)
	}
	for _, n := range headersChecked(hdrReplay) {
		if !strings.EqualFold(r.header.Get(n), "true") {
			t.Errorf("README job submission repeated: %s %q, want true (headers %v)", n, r.header.Get(n), r.header)
		}
	}
}

// callbackHeaders runs a demo job whose callback_url is a local receiver
// (the demo allows private networks) and checks the Standard Webhooks
// headers the README names: webhook-id the job id, and webhook-signature
// v1,<base64 HMAC-SHA256 of id.timestamp.body> with demo.yaml's secret.
func (r *readmeRun) callbackHeaders() {
	t := r.t
	type delivery struct {
		h    http.Header
		body []byte
	}
	got := make(chan delivery, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		select {
		case got <- delivery{req.Header.Clone(), b}:
		default:
		}
	}))
	defer srv.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+r.p.addr+"/v1/jobs", strings.NewReader(
		`{"endpoint":"/v1/messages","callback_url":"`+srv.URL+`/hook",`+
			`"body":{"model":"claude-sonnet","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}`))
	req.Header.Set("x-api-key", "relay-demo-key")
	req.Header.Set("content-type", "application/json")
	status, body := r.send(req)
	var job struct{ ID string }
	if status != http.StatusAccepted || json.Unmarshal([]byte(body), &job) != nil {
		t.Fatalf("submit a job with a local callback: %d %s", status, body)
	}
	var d delivery
	select {
	case d = <-got:
	case <-time.After(30 * time.Second):
		t.Fatalf("job %s: no callback within 30 s", job.ID)
	}
	for _, n := range headersChecked(hdrCallback) {
		if d.h.Get(n) == "" {
			t.Errorf("callback lacks %s (README); headers %v", n, d.h)
		}
	}
	if d.h.Get("webhook-id") != job.ID {
		t.Errorf("callback webhook-id %q; README: the job id %s", d.h.Get("webhook-id"), job.ID)
	}
	demo, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Callbacks struct {
			SigningSecret string `yaml:"signing_secret"`
		}
	}
	if err := yaml.Unmarshal(demo, &cfg); err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(cfg.Callbacks.SigningSecret, "whsec_"))
	if err != nil {
		t.Fatalf("demo.yaml signing_secret: %v", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(d.h.Get("webhook-id") + "." + d.h.Get("webhook-timestamp") + "."))
	mac.Write(d.body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !slices.Contains(strings.Fields(d.h.Get("webhook-signature")), want) {
		t.Errorf("callback webhook-signature %q; want %q (README: v1,<base64 HMAC-SHA256 of id.timestamp.body>)",
			d.h.Get("webhook-signature"), want)
	}
}

// subscribeUsage subscribes, with the demo key, to the README's usage
// subject relay.usage.<key-name> for the demo key (named demo).
func (r *readmeRun) subscribeUsage() *nats.Subscription {
	t := r.t
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "`relay.usage.<key-name>`") {
		t.Fatal("README no longer names the usage subject `relay.usage.<key-name>`")
	}
	nc, err := nats.Connect("nats://"+r.nats, nats.Token("relay-demo-key"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync("relay.usage.demo")
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// expectUsage reads one usage event of the demo key and checks that it
// has every field of the README's example event (```json block).
func (r *readmeRun) expectUsage(sub *nats.Subscription) {
	t := r.t
	m, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no usage event on relay.usage.demo: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(m.Data, &got); err != nil {
		t.Fatalf("usage event: %v: %s", err, m.Data)
	}
	blocks := readmeBlocks(t, "json")
	var example map[string]any
	for _, b := range blocks {
		if strings.Contains(b, `"usage_known"`) {
			if err := json.Unmarshal([]byte(strings.ReplaceAll(b, "…", "")), &example); err != nil {
				t.Fatalf("README usage event example: %v", err)
			}
		}
	}
	if example == nil {
		t.Fatal("README lacks its usage event example")
	}
	for k, v := range example {
		g, ok := got[k]
		if !ok {
			t.Errorf("README usage event has %q; a real one (%s) has not", k, m.Data)
			continue
		}
		if sub, ok := v.(map[string]any); ok {
			gm, _ := g.(map[string]any)
			for k2 := range sub {
				if _, ok := gm[k2]; !ok {
					t.Errorf("README usage event has %s.%s; a real one (%s) has not", k, k2, m.Data)
				}
			}
		}
	}
}
