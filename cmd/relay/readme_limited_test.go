package main

import (
	"context"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats/natstest"
)

// Where a header the README names is checked against the demo.
const (
	hdrAnswer   = "on an answer (TestReadmeExamples)"
	hdrReplay   = "on a repeated Idempotency-Key submission (TestReadmeExamples)"
	hdrCallback = "on a demo job's callback (TestReadmeExamples)"
	hdrEarly    = "on an early answer (TestReadmeLimitedDemo)"
	hdrExpired  = "on an answer whose wait ran out (TestReadmeLimitedDemo)"
	hdrRequest  = "sent by the client (TestReadmeLimitedDemo, TestReadmeExamples)"
)

// readmeHeaders maps every header name the README names (of the families
// readmeHeaderName matches, lower case) to where a test checks it against
// the demo. A header the README names that is in neither this map nor
// readmeHeadersNotChecked fails TestReadmeHeaderNames.
var readmeHeaders = map[string]string{
	"x-request-id":              hdrAnswer,
	"x-relay-provider":          hdrAnswer,
	"x-relay-lane":              hdrAnswer, // sent as x-relay-lane: standard, answered back
	"x-relay-queue-ms":          hdrAnswer,
	"x-relay-attempts":          hdrAnswer,
	"idempotent-replayed":       hdrReplay,
	"webhook-id":                hdrCallback,
	"webhook-timestamp":         hdrCallback,
	"webhook-signature":         hdrCallback,
	"x-relay-estimated-wait-ms": hdrEarly,
	"retry-after":               hdrEarly,
	"retry-after-ms":            hdrEarly,
	"x-should-retry":            hdrExpired,
	"x-relay-max-wait":          hdrRequest,
}

// readmeHeadersNotChecked lists the header names the README names that
// the demo cannot produce, with the reason.
var readmeHeadersNotChecked = map[string]string{
	"x-ratelimit-*": "an OpenAI-style upstream's rate-limit headers, which the relay reads; " +
		"the demo's simulator has no limits and sends none, and the relay never sends them",
	"x-ratelimit-{remaining,reset}-{requests,tokens}": "the same upstream headers, spelled out",
}

var (
	reBackticked = regexp.MustCompile("`([^`]+)`")
	// readmeHeaderName matches the response-side header families the
	// README names: x-…, retry-after…, webhook-…, idempotent-….
	readmeHeaderName = regexp.MustCompile(`(?i)^(x-[a-z0-9*{},-]+|retry-after(-ms)?|webhook-[a-z]+|idempotent-[a-z]+)$`)
)

// TestReadmeHeaderNames finds every header name in the README and
// requires it in readmeHeaders (checked against the demo) or
// readmeHeadersNotChecked (with the reason), and every entry of those to
// be named in the README.
func TestReadmeHeaderNames(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range reBackticked.FindAllStringSubmatch(readmeProse(string(b)), -1) {
		name, _, _ := strings.Cut(m[1], ":")
		name = strings.ToLower(strings.TrimSpace(name))
		if !readmeHeaderName.MatchString(name) {
			continue
		}
		seen[name] = true
		_, checked := readmeHeaders[name]
		_, skipped := readmeHeadersNotChecked[name]
		if !checked && !skipped {
			t.Errorf("README names header %q: check it against the demo (readmeHeaders) or say why not (readmeHeadersNotChecked)", name)
		}
	}
	for name := range readmeHeaders {
		if !seen[name] {
			t.Errorf("readmeHeaders has %q, which the README no longer names", name)
		}
	}
	for name := range readmeHeadersNotChecked {
		if !seen[name] {
			t.Errorf("readmeHeadersNotChecked has %q, which the README no longer names", name)
		}
	}
	// The API section's list: before the `;` what every answer carries,
	// after it what an early answer adds.
	always, early := readmeResponseHeaders(t)
	for _, n := range always {
		if readmeHeaders[n] != hdrAnswer {
			t.Errorf("README's Response headers list %q on every answer; readmeHeaders checks it %s", n, readmeHeaders[n])
		}
	}
	for _, n := range early {
		if readmeHeaders[n] != hdrEarly {
			t.Errorf("README's Response headers list %q on early answers; readmeHeaders checks it %s", n, readmeHeaders[n])
		}
	}
}

// readmeProse is the README without its fenced code blocks, whose
// fences would pair with inline backticks.
func readmeProse(s string) string {
	var out strings.Builder
	fenced := false
	for line := range strings.Lines(s) {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			out.WriteString(line)
		}
	}
	return out.String()
}

var reRespSentence = regexp.MustCompile(`Response headers: ([^.]+)\.`)

// readmeResponseHeaders returns the names of the API section's
// `Response headers:` sentence: before its `;` and after.
func readmeResponseHeaders(t *testing.T) (always, early []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := reRespSentence.FindSubmatch(b)
	if m == nil {
		t.Fatal("README lacks its `Response headers:` sentence")
	}
	first, rest, _ := strings.Cut(string(m[1]), ";")
	names := func(s string) []string {
		var out []string
		for _, n := range reBackticked.FindAllStringSubmatch(s, -1) {
			out = append(out, strings.ToLower(n[1]))
		}
		return out
	}
	always, early = names(first), names(rest)
	if len(always) < 3 || len(early) < 1 {
		t.Fatalf("README response header sentence %q parsed to %v and %v", m[1], always, early)
	}
	return always, early
}

// headersChecked returns the names readmeHeaders checks at where.
func headersChecked(where string) []string {
	var out []string
	for n, w := range readmeHeaders {
		if w == where {
			out = append(out, n)
		}
	}
	return out
}

// uncommentLimited turns the commented provider and route blocks of
// configs/demo.yaml (lines "  # - …" and their "  #   …" continuation)
// into configuration, and returns how many blocks it uncommented.
func uncommentLimited(demo string) (string, int) {
	var out strings.Builder
	blocks, in := 0, false
	for line := range strings.Lines(demo) {
		switch {
		case strings.HasPrefix(line, "  # - "):
			blocks++
			in = true
			line = "  " + line[len("  # "):]
		case in && strings.HasPrefix(line, "  #   "):
			line = "  " + line[len("  # "):]
		default:
			in = false
		}
		out.WriteString(line)
	}
	return out.String(), blocks
}

var (
	reOpsCommand = regexp.MustCompile(`nats --server (nats://\S+) \\\n#\s+--inbox-prefix (\S+) stream info (\S+)`)
	reReadmeInfo = regexp.MustCompile("`nats stream info\\s+(\\S+)`")
)

// TestReadmeLimitedDemo uncomments the sim-limited provider and the
// claude-limited route of configs/demo.yaml, as its comment says to,
// validates the result as `relay config validate` does, runs it and
// does what the comment describes: more than 1 request/s to
// claude-limited. The requests over the limits wait parked (seen in
// relay_lane_depth and, as the README says, in `nats stream info
// RELAY_LANES` as the demo-ops user) and are served as capacity frees up;
// one whose x-relay-max-wait runs out while parked gets 529 with
// retry-after and x-should-retry: false; one sent once the lane's
// estimate is trusted, whose wait is shorter than that estimate, is
// answered early with retry-after, retry-after-ms and
// x-relay-estimated-wait-ms.
func TestReadmeLimitedDemo(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	demo, blocks := uncommentLimited(string(raw))
	if blocks != 2 || !strings.Contains(demo, "\n  - name: sim-limited\n") || !strings.Contains(demo, "\n  - model: claude-limited\n") {
		t.Fatalf("configs/demo.yaml: want the commented sim-limited provider and claude-limited route (found %d blocks):\n%s", blocks, demo)
	}
	cfg, err := configs.ParseWithEnv([]byte(demo), nil)
	if err != nil {
		t.Fatalf("demo.yaml with sim-limited uncommented: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(demo), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runRelay(t, dir, nil, "config", "validate", "--config", "demo.yaml"); code != 0 || strings.TrimSpace(out) != "ok" {
		t.Fatalf("relay config validate, sim-limited uncommented: exit %d %q %s", code, out, errOut)
	}
	var rpm int
	for _, p := range cfg.Providers {
		if p.Name == "sim-limited" {
			rpm = p.RPM
		}
	}
	if rpm != 60 {
		t.Fatalf("sim-limited rpm = %d; this test sends its flood for rpm 60 (1 request/s, one at once)", rpm)
	}

	natsAddr := freePort(t)
	p := startDemoText(t, natsAddr, demo)
	client := sdkHTTPClient(t)

	// The flood: 12 requests at once, 1/s allowed. The first is served at
	// once, the others park on interactive (the demo key's default lane,
	// max_wait 30s) and go out one a second.
	const flood = 12
	type answer struct {
		status  int
		queueMS int
	}
	answers := make([]answer, flood)
	var wg sync.WaitGroup
	for i := range flood {
		wg.Go(func() {
			status, h, _ := askLimited(t, client, p.addr, "")
			q, _ := strconv.Atoi(h.Get("x-relay-queue-ms"))
			answers[i] = answer{status, q}
		})
	}
	defer wg.Wait() // on a Fatal below too: the requests end within 30 s

	natstest.Eventually(t, 10*time.Second, "parked requests in relay_lane_depth", func() bool {
		return p.metric(`relay_lane_depth{lane="interactive"}`) >= 2
	})

	// A request whose wait is shorter than the time its turn takes (two or
	// more are ahead, one goes out a second), sent while the lane is cold
	// (no estimate yet): parked, then answered when its wait runs out.
	status, h, body := askLimited(t, client, p.addr, "1s")
	if status != 529 || !strings.Contains(body, "overloaded_error") {
		t.Errorf("request whose 1s wait ran out: %d %s; want 529 overloaded_error", status, body)
	}
	for _, n := range headersChecked(hdrExpired) {
		if h.Get(n) == "" {
			t.Errorf("answer of a wait that ran out lacks %s (README); headers %v", n, h)
		}
	}
	if h.Get("x-should-retry") != "false" || h.Get("retry-after") == "" {
		t.Errorf("answer of a wait that ran out: x-should-retry %q, retry-after %q; README: retry-after and x-should-retry: false",
			h.Get("x-should-retry"), h.Get("retry-after"))
	}

	// The README's `nats stream info RELAY_LANES`, as demo.yaml's comment
	// spells it for the demo-ops user, shows the parked requests.
	m := reOpsCommand.FindStringSubmatch(demo)
	if m == nil {
		t.Fatalf("configs/demo.yaml lacks its demo-ops `nats … stream info` command")
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rm := reReadmeInfo.FindSubmatch(readme)
	if rm == nil || string(rm[1]) != m[3] {
		t.Fatalf("README's `nats stream info` names %q, demo.yaml's %q", rm, m[3])
	}
	lanesStreamShowsParked(t, strings.Replace(m[1], "127.0.0.1:4222", natsAddr, 1), m[2], m[3])

	// Once the lane has dispatched 8 parked requests in the last 30 s its
	// estimate is trusted: a request with a shorter wait than its turn
	// needs is answered at once.
	natstest.Eventually(t, 20*time.Second, "8 parked requests dispatched", func() bool {
		return p.metric(`relay_lane_dispatched_total{lane="interactive"}`) >= 8
	})
	status, h, body = askLimited(t, client, p.addr, "500ms")
	if status != 529 || !strings.Contains(body, "overloaded_error") {
		t.Fatalf("request with a 500ms wait behind the trusted estimate: %d %s; want an early 529", status, body)
	}
	for _, n := range headersChecked(hdrEarly) {
		if h.Get(n) == "" {
			t.Errorf("early answer lacks %s (README); headers %v", n, h)
		}
	}
	ms, _ := strconv.Atoi(h.Get("x-relay-estimated-wait-ms"))
	secs, _ := strconv.Atoi(h.Get("retry-after"))
	if ms <= 500 || h.Get("retry-after-ms") != h.Get("x-relay-estimated-wait-ms") ||
		secs != int(math.Ceil(float64(ms)/1000)) || h.Get("x-should-retry") != "" {
		t.Errorf("early answer: estimated %q ms, retry-after %q, retry-after-ms %q, x-should-retry %q; README: the estimate "+
			"(past the 500ms wait) in ms twice, retry-after rounded up to seconds, no x-should-retry",
			h.Get("x-relay-estimated-wait-ms"), h.Get("retry-after"), h.Get("retry-after-ms"), h.Get("x-should-retry"))
	}
	if v := p.metric(`relay_fast_rejections_total{reason="lane_wait",route="claude-limited"}`); v < 1 {
		t.Errorf(`relay_fast_rejections_total{reason="lane_wait",route="claude-limited"} = %v; want the early answer counted`, v)
	}

	wg.Wait()
	parked := 0
	for i, a := range answers {
		if a.status != http.StatusOK {
			t.Errorf("flood request %d: %d; want every one served (parked, then sent)", i, a.status)
		}
		if a.queueMS > 0 {
			parked++
		}
	}
	if parked < flood-1 {
		t.Errorf("%d of %d flood requests waited parked (x-relay-queue-ms > 0); want all but the first", parked, flood)
	}
}

// askLimited sends one small Messages request for claude-limited with the
// demo key, and x-relay-max-wait when maxWait is set.
func askLimited(t *testing.T, client *http.Client, addr, maxWait string) (int, http.Header, string) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/v1/messages",
		strings.NewReader(`{"model":"claude-limited","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Error(err)
		return 0, nil, ""
	}
	req.Header.Set("x-api-key", "relay-demo-key")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	if maxWait != "" {
		req.Header.Set("x-relay-max-wait", maxWait)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Error(err)
		return 0, nil, ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Error(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// lanesStreamShowsParked reads the stream's info as the user of server
// URL u with inbox prefix inbox, until it holds a message.
func lanesStreamShowsParked(t *testing.T, u, inbox, stream string) {
	t.Helper()
	nc, err := nats.Connect(u, nats.CustomInboxPrefix(inbox))
	if err != nil {
		t.Fatalf("connect as demo.yaml's demo-ops: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "`nats stream info "+stream+"` shows parked requests", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Logf("stream %s as demo-ops: %v", stream, err)
			return false
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Logf("stream %s info as demo-ops: %v", stream, err)
			return false
		}
		return info.State.Msgs > 0
	})
}
