package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
	{"-X DELETE", []int{200, 409}, nil},
	{"/v1/jobs?status=", []int{200}, []string{`"data":[`, `"has_more":`}},
	{"/callback", []int{202, 409}, nil},
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
	secret  string // the last key secret the admin API answered
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
}

// startDemoNATS is startDemo with the NATS client port on natsAddr.
func startDemoNATS(t *testing.T, natsAddr string) *relayProc {
	t.Helper()
	demo, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return startServe(t, relayOpts{grace: "2s"}, dir, filepath.Join(dir, "relay.yaml"), func(p *relayProc) {
		p.admin = freePort(t)
		p.writeConfig(strings.NewReplacer("127.0.0.1:8080", p.addr, "127.0.0.1:18790", p.sim,
			"127.0.0.1:4222", natsAddr, "127.0.0.1:8081", p.admin, "./data/nats-demo", filepath.Join(dir, "nats")).Replace(string(demo)))
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

var reRespHeaders = regexp.MustCompile("Response headers: ((?:`[a-z-]+`,?\\s*(?:and\\s*)?)+)")

// responseHeaders checks that the README's list of response headers is on
// a real answer from the demo.
func (r *readmeRun) responseHeaders() {
	t := r.t
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := reRespHeaders.FindSubmatch(b)
	if m == nil {
		t.Fatal("README lacks its `Response headers:` list")
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+r.p.addr+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("x-api-key", "relay-demo-key")
	req.Header.Set("content-type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body))
	resp.Body.Close()
	names := regexp.MustCompile("`([a-z-]+)`").FindAllSubmatch(m[1], -1)
	if len(names) < 3 {
		t.Fatalf("README response header list %q parsed to %d names", m[1], len(names))
	}
	for _, n := range names {
		if resp.Header.Get(string(n[1])) == "" {
			t.Errorf("README lists response header %s; the demo's answer has none (%v)", n[1], resp.Header)
		}
	}
}
