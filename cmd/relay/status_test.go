package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// statusToken is the admin token of the status page tests.
const statusToken = "status-page-admin-token-5d1e"

// statusKey3 is the third client key of the status page tests.
const statusKey3 = "relay-canary-key-third-status-7c1a"

// statusConfig is a relay with an admin listener and three providers: sim
// (the simulator, one slot, for quick requests that park briefly), slow
// (an upstream that never answers, one slot, so a second request stays
// parked) and broken (an upstream that answers 500, whose breaker opens
// at the first failure). Three keys, priced calls (the keys' spend) and
// a callback schedule of two attempts (a quick dead letter).
func statusConfig(p *relayProc, slow, broken string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nadmin_listen: %s\nshutdown_grace: 1s\nadmin: {token: %s}\n", p.addr, p.admin, statusToken)
	fmt.Fprintf(&b, "nats: {listen: \"\", store_dir: %s}\n", filepath.Join(p.dir, "nats"))
	fmt.Fprintf(&b, "simulator: {listen: %s, latency: 200ms, token_interval: 1ms}\n", p.sim)
	b.WriteString("providers:\n")
	fmt.Fprintf(&b, "  - {name: sim, type: anthropic, base_url: \"http://%s\", api_key: %s, max_concurrency: 1, rpm: 600}\n", p.sim, canaryUpstream)
	fmt.Fprintf(&b, "  - {name: slow, type: anthropic, base_url: %q, api_key: %s, max_concurrency: 1}\n", slow, canaryUpstream)
	fmt.Fprintf(&b, "  - name: broken\n    type: anthropic\n    base_url: %q\n    api_key: %s\n", broken, canaryUpstream)
	b.WriteString("    breaker: {failure_ratio: 0.5, min_requests: 1, window: 30s, open_for: 10m}\n")
	b.WriteString("routes:\n")
	b.WriteString("  - {model: claude-sonnet, targets: [{provider: sim, model: claude-sonnet-4-5, weight: 3}, {provider: slow, model: claude-sonnet-4-5, weight: 1}]}\n")
	b.WriteString("  - {model: claude-slow, targets: [{provider: slow, model: claude-sonnet-4-5}]}\n")
	b.WriteString("  - {model: claude-broken, targets: [{provider: broken, model: claude-sonnet-4-5}], fallbacks: [claude-slow]}\n")
	b.WriteString("  - {model: claude-quick, targets: [{provider: sim, model: claude-sonnet-4-5}]}\n")
	fmt.Fprintf(&b, "keys:\n  - {name: key0, key: %s, default_lane: interactive}\n", canaryKey)
	fmt.Fprintf(&b, "  - {name: key1, key: %s, default_lane: interactive}\n", canaryKey2)
	fmt.Fprintf(&b, "  - {name: key2, key: %s, default_lane: interactive}\n", statusKey3)
	b.WriteString("prices:\n  - {model: \"claude-sonnet-4-5*\", input: 3.00, output: 15.00}\n")
	b.WriteString("callbacks: {allow_private_networks: true, retry_schedule: [200ms]}\n")
	b.WriteString("log: {level: info}\n")
	return b.String()
}

// longClient has no timeout of its own: the requests held upstream or
// parked end with their context, at test end.
var longClient = &http.Client{}

// askModel sends one request for model and returns its status code (0 when the
// request failed or ctx ended first).
func (p *relayProc) askModel(ctx context.Context, model string) int {
	return p.send(ctx, longClient, model)
}

// statusRelay starts the relay of statusConfig and brings it into the
// state the page must show: the broken provider's breaker open, one
// request in flight on slow and one parked behind it, usage by three
// keys, and one callback dead-lettered.
func statusRelay(t *testing.T) *relayProc {
	t.Helper()
	stop := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(slow.Close)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"type":"error","error":{"type":"api_error","message":"down"}}`, http.StatusInternalServerError)
	}))
	t.Cleanup(broken.Close)
	t.Cleanup(func() { close(stop) })
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	t.Cleanup(refuse.Close)

	p := newProc(t, relayOpts{admin: true}, "")
	p.writeConfig(statusConfig(p, slow.URL, broken.URL))
	p.run()
	p.waitReady()

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// claude-broken: the 500 opens broken's breaker; the fallback then
	// waits on slow, holding its one slot.
	go p.askModel(ctx, "claude-broken")
	natstest.Eventually(t, 20*time.Second, "broken's breaker open and slow busy", func() bool {
		r := p.statusJSON()
		return providerField(r, "broken", "breaker") == "open" && providerField(r, "slow", "in_flight") == float64(1)
	})
	go p.askModel(ctx, "claude-slow") // parks behind the first
	// Quick requests through sim, three at a time on its one slot: some
	// park briefly, so the lane has waits to show.
	for range 3 {
		done := make(chan int, 3)
		for range 3 {
			go func() { done <- p.askModel(ctx, "claude-sonnet") }()
		}
		for range 3 {
			<-done
		}
	}
	// Usage by two more keys, on a route of sim only; and a job whose
	// callback is refused twice: a dead letter.
	for _, key := range []string{canaryKey2, canaryKey2, statusKey3} {
		if code := p.sendAs(ctx, longClient, key, "claude-quick"); code != http.StatusOK {
			t.Fatalf("claude-quick as another key: %d", code)
		}
	}
	submitJob(t, p, "claude-quick", refuse.URL)
	natstest.Eventually(t, 20*time.Second, "one request parked, one dead letter, three keys' usage", func() bool {
		r := p.statusJSON()
		jobs, _ := r["jobs"].(map[string]any)
		return laneField(r, "interactive", "depth") == float64(1) && jobs["dead_letters"] == float64(1) &&
			atLeast(keyField(r, "key0", "requests"), 10) && keyField(r, "key2", "requests") == float64(1)
	})
	return p
}

// submitJob posts a Messages job for model with callbackURL as key0.
func submitJob(t *testing.T, p *relayProc, model, callbackURL string) {
	t.Helper()
	body := fmt.Sprintf(`{"endpoint":"/v1/messages","callback_url":%q,"body":{"model":%q,"max_tokens":8,`+
		`"messages":[{"role":"user","content":"hi"}]}}`, callbackURL, model)
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+"/v1/jobs", strings.NewReader(body))
	req.Header.Set("x-api-key", canaryKey)
	req.Header.Set("content-type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/jobs: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs: %d %s", resp.StatusCode, b)
	}
}

// atLeast reports whether v is a JSON number of at least n.
func atLeast(v any, n float64) bool {
	f, ok := v.(float64)
	return ok && f >= n
}

// keyField returns field of key's row in the keys section.
func keyField(r map[string]any, key, field string) any {
	keys, _ := r["keys"].(map[string]any)
	return rowField(keys, "rows", "key", key, field)
}

// statusJSON fetches /status.json with the admin token.
func (p *relayProc) statusJSON() map[string]any {
	p.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.admin+"/status.json", nil)
	req.Header.Set("Authorization", "Bearer "+statusToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		p.t.Fatalf("GET /status.json: %v", err)
	}
	defer resp.Body.Close()
	var r map[string]any
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		p.t.Fatalf("GET /status.json: %d %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		p.t.Fatalf("decode /status.json: %v", err)
	}
	return r
}

// rowField returns field of the row of section whose key is name.
func rowField(r map[string]any, section, key, name, field string) any {
	rows, _ := r[section].([]any)
	for _, row := range rows {
		m, _ := row.(map[string]any)
		if m[key] == name {
			return m[field]
		}
	}
	return nil
}

func providerField(r map[string]any, name, field string) any {
	return rowField(r, "providers", "name", name, field)
}

func laneField(r map[string]any, name, field string) any {
	return rowField(r, "lanes", "name", name, field)
}

// chromiumPath finds a Chromium or Chrome binary: $RELAY_CHROMIUM, else
// Debian's chromium on PATH.
func chromiumPath() string {
	if p := os.Getenv("RELAY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser starts a headless Chromium with a 1366x768 window and returns
// its context. No outside connections: everything it loads is on
// loopback.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("no chromium on PATH (apt-get install -y chromium, or set RELAY_CHROMIUM): the status page's browser test is skipped")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 768),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return bctx
}

// TestStatusPageInBrowser loads /status in headless Chromium against a
// relay with an open breaker and a parked request, logs in through the
// form, and checks that the page shows both, the dead letter and the
// keys' usage today, fits a 1366x768 screen
// without scrolling, and refreshes itself. RELAY_UPDATE_SCREENSHOT=1 saves
// the screenshot to docs/status.png.
func TestStatusPageInBrowser(t *testing.T) {
	bctx := browser(t)
	p := statusRelay(t)
	base := "http://" + p.admin

	err := chromedp.Do(bctx,
		chromedp.Navigate(base+"/status"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token"),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("login-error")),
	)
	if err != nil {
		t.Fatalf("log in with a wrong token: %v", err)
	}
	if msg := text(t, bctx, chromedp.ID("login-error")); !strings.Contains(msg, "Wrong token") {
		t.Errorf("wrong token: page says %q", msg)
	}
	err = chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.ID("token"), statusToken),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("provider-broken")),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	if breaker := text(t, bctx, chromedp.CSS("#provider-broken td.breaker")); !strings.Contains(breaker, "open") || !strings.Contains(breaker, "half-open in") {
		t.Errorf("broken provider's breaker cell %q, want open with its half-open time", breaker)
	}
	if depth := text(t, bctx, chromedp.CSS("#lane-interactive td.depth")); depth != "1" {
		t.Errorf("interactive lane depth %q, want 1 parked request", depth)
	}
	if dead := text(t, bctx, chromedp.ID("dead-letters")); dead != "1" {
		t.Errorf("dead letters %q, want 1", dead)
	}
	for _, key := range []string{"key0", "key1", "key2"} {
		row := text(t, bctx, chromedp.ID("key-"+key))
		if !strings.HasPrefix(row, key) || !strings.Contains(row, "$") {
			t.Errorf("key row %q: want the key's requests, tokens and spend", row)
		}
	}
	dims, err := chromedp.Run(bctx, chromedp.Evaluate[[]float64](`[document.documentElement.scrollWidth, document.documentElement.scrollHeight, window.innerWidth, window.innerHeight]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(dims) != 4 || dims[0] > dims[2] || dims[1] > dims[3] {
		t.Errorf("page %v x %v in a %v x %v window: it must fit without scrolling", dims[0], dims[1], dims[2], dims[3])
	}
	stamp := text(t, bctx, chromedp.CSS("header span"))
	saveScreenshot(t, bctx)

	// The script refreshes the page in place: the time in the header moves.
	natstest.Eventually(t, 30*time.Second, "the page refreshed itself", func() bool {
		next, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("header span")))
		return err == nil && next != stamp
	})
	if still := text(t, bctx, chromedp.CSS("#provider-broken td.breaker")); !strings.Contains(still, "open") {
		t.Errorf("after the refresh the breaker cell is %q", still)
	}
}

// text returns the visible text of the element sel selects.
func text[S chromedp.Selectable](t *testing.T, bctx context.Context, sel S) string {
	t.Helper()
	s, err := chromedp.Run(bctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("text of %v: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// saveScreenshot writes the viewport to docs/status.png when
// RELAY_UPDATE_SCREENSHOT=1.
func saveScreenshot(t *testing.T, bctx context.Context) {
	t.Helper()
	if os.Getenv("RELAY_UPDATE_SCREENSHOT") != "1" {
		return
	}
	png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	out := filepath.Join("..", "..", "docs", "status.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}

// TestStatusJSON checks /status.json of a running relay (no browser
// needed): the open breaker with its half-open time, the parked request,
// the routes' targets and weights, the jobs and the NATS streams; and
// that the endpoints refuse a request without the admin token.
func TestStatusJSON(t *testing.T) {
	p := statusRelay(t)
	r := p.statusJSON()
	if providerField(r, "broken", "half_open_at") == nil {
		t.Errorf("broken provider has no half_open_at: %v", r["providers"])
	}
	if got := rowField(r, "routes", "model", "claude-sonnet", "targets"); fmt.Sprint(got) !=
		"[map[model:claude-sonnet-4-5 provider:sim weight:3] map[model:claude-sonnet-4-5 provider:slow weight:1]]" {
		t.Errorf("claude-sonnet targets %v", got)
	}
	if got := rowField(r, "routes", "model", "claude-sonnet", "requests"); got != float64(9) {
		t.Errorf("claude-sonnet answered %v requests in the window, want 9", got)
	}
	if got := laneField(r, "interactive", "wait_p99_seconds"); got == nil {
		t.Error("interactive lane has no p99 wait though requests parked and were served")
	}
	jobs, ok := r["jobs"].(map[string]any)
	if !ok || jobs["dead_letters"] != float64(1) || jobs["callbacks_given_up_since_start"] != float64(1) {
		t.Errorf("jobs section %v: want 1 dead letter, given up here since start", r["jobs"])
	}
	keys, _ := r["keys"].(map[string]any)
	if day := time.Now().UTC().Format("2006-01-02"); keys["day"] != day {
		t.Errorf("keys day %v, want %s: %v", keys["day"], day, keys)
	}
	for _, k := range []struct {
		key      string
		requests float64
	}{{"key0", 10}, {"key1", 2}, {"key2", 1}} {
		if got := keyField(r, k.key, "requests"); !atLeast(got, k.requests) {
			t.Errorf("key %s: %v requests today, want at least %v", k.key, got, k.requests)
		}
		for _, f := range []string{"input_tokens", "output_tokens", "spend_usd"} {
			if got := keyField(r, k.key, f); !atLeast(got, 0) || got == float64(0) {
				t.Errorf("key %s: %s %v, want > 0 (priced calls): %v", k.key, f, got, keys)
			}
		}
	}
	nats, _ := r["nats"].(map[string]any)
	if got := rowField(nats, "streams", "name", "RELAY_JOBS", "replicas"); got != float64(1) {
		t.Errorf("RELAY_JOBS stream: replicas %v; streams %v", got, nats["streams"])
	}
	for _, path := range []string{"/status", "/status.json"} {
		resp, err := httpClient.Get("http://" + p.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", path, resp.StatusCode)
		}
	}

	// A restarted relay (same store, new ports) still shows the dead
	// letter and the keys' usage today: both are read from JetStream.
	p.signal(syscall.SIGTERM)
	p.waitExit(20 * time.Second)
	q := newProc(t, relayOpts{admin: true}, p.dir)
	cfg, err := os.ReadFile(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	q.writeConfig(strings.NewReplacer(p.addr, q.addr, p.admin, q.admin, p.sim, q.sim).Replace(string(cfg)))
	q.run()
	q.waitReady()
	r = q.statusJSON()
	jobs, _ = r["jobs"].(map[string]any)
	if jobs["dead_letters"] != float64(1) || jobs["callbacks_given_up_since_start"] != float64(0) {
		t.Errorf("after a restart: jobs %v; want the dead letter still counted, none given up since start", jobs)
	}
	if got := keyField(r, "key0", "requests"); !atLeast(got, 10) {
		t.Errorf("after a restart: key0 %v requests today, want at least 10", got)
	}
}
