package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// Hot reload tests: each runs a real `relay serve` with its simulator,
// rewrites the configuration file the way an editor or the kubelet does,
// and polls until the change shows (or, for a refused file, does not).

const (
	reloadOK  = `relay_config_reloads_total{result="success"}`
	reloadErr = `relay_config_reloads_total{result="failure"}`
)

// reloadConfig renders a configuration whose listeners, NATS store and
// simulator are p's, with keys as client keys, followed by body (lanes,
// providers, routes) in which SIM stands for the simulator's address.
func (p *relayProc) reloadConfig(keys []string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\n", p.addr)
	fmt.Fprintf(&b, "shutdown_grace: %s\n", p.opts.grace)
	fmt.Fprintf(&b, "nats:\n  listen: \"\"\n  store_dir: %s\n", filepath.Join(p.dir, "nats"))
	fmt.Fprintf(&b, "simulator: {listen: %s, latency: 1ms, token_interval: %s}\n", p.sim, p.opts.tokenInterval)
	b.WriteString("keys:\n")
	for i, k := range keys {
		fmt.Fprintf(&b, "  - name: key%d\n    key: %s\n", i, k)
		if p.opts.keyBudget != "" {
			fmt.Fprintf(&b, "    budget: %s\n", p.opts.keyBudget)
		}
	}
	b.WriteString("log: {level: info}\n")
	b.WriteString(strings.ReplaceAll(body, "SIM", p.sim))
	return b.String()
}

// startServe starts `relay serve --config cfgPath` in dir on fresh
// loopback ports; write must create the configuration file from the
// process description it is given (before the process starts). The
// process is killed at test end if it is still running. It waits until
// the relay is ready.
func startServe(t *testing.T, opts relayOpts, dir, cfgPath string, write func(p *relayProc)) *relayProc {
	t.Helper()
	p := newProc(t, opts, dir)
	p.cfgPath = cfgPath
	write(p)
	p.run()
	p.waitReady()
	return p
}

// startReloadRelay starts a relay whose relay.yaml in its own temporary
// directory holds p.reloadConfig(keys, body).
func startReloadRelay(t *testing.T, opts relayOpts, keys []string, body string) *relayProc {
	t.Helper()
	dir := t.TempDir()
	return startServe(t, opts, dir, filepath.Join(dir, "relay.yaml"), func(p *relayProc) {
		p.writeConfig(p.reloadConfig(keys, body))
	})
}

// ask sends a small non-streaming /v1/messages request for model with
// canaryKey and the given extra headers, and returns the status and body.
func (p *relayProc) ask(model string, header map[string]string) (int, string) {
	p.t.Helper()
	body := fmt.Sprintf(`{"model":%q,"max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`, model)
	req, err := http.NewRequest(http.MethodPost, "http://"+p.addr+"/v1/messages", strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("x-api-key", canaryKey)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		p.t.Fatalf("POST /v1/messages: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("POST /v1/messages: read body: %v", err)
	}
	return resp.StatusCode, string(b)
}

// stop ends the relay with SIGTERM and checks it exits 0.
func (p *relayProc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.waitExit(15 * time.Second); code != 0 {
		p.t.Errorf("exit code %d, want 0", code)
	}
}

const (
	providerSim = `providers:
  - {name: sim, type: anthropic, base_url: "http://SIM", api_key: ` + canaryUpstream + `}
`
	routeSonnet = `  - model: claude-sonnet
    targets:
      - {provider: sim, model: claude-sonnet-4-5}
`
	routeHaiku = `  - model: claude-haiku
    targets:
      - {provider: sim, model: claude-haiku-4-5}
`
)

func TestReloadAddRoute(t *testing.T) {
	t.Parallel()
	keys := []string{canaryKey}
	p := startReloadRelay(t, relayOpts{grace: "2s", tokenInterval: "1ms"}, keys, providerSim+"routes:\n"+routeSonnet)

	if code, body := p.ask("claude-sonnet", nil); code != http.StatusOK {
		t.Fatalf("route A before reload: %d %s", code, body)
	}
	if code, body := p.ask("claude-haiku", nil); code != http.StatusNotFound {
		t.Fatalf("route B before reload: %d %s, want 404", code, body)
	}
	okBefore := p.metric(reloadOK)

	p.writeConfig(p.reloadConfig(keys, providerSim+"routes:\n"+routeSonnet+routeHaiku))
	natstest.Eventually(t, 10*time.Second, "route B served", func() bool {
		code, _ := p.ask("claude-haiku", nil)
		return code == http.StatusOK
	})
	if code, body := p.ask("claude-sonnet", nil); code != http.StatusOK {
		t.Errorf("route A after reload: %d %s", code, body)
	}
	natstest.Eventually(t, 5*time.Second, reloadOK+" incremented", func() bool { return p.metric(reloadOK) >= okBefore+1 })
	p.waitLog("a reload log line naming the file", map[string]string{"msg": "configuration reloaded", "trigger": "file change", "path": p.cfgPath})
	p.stop()
}

func TestReloadChangeLimit(t *testing.T) {
	t.Parallel()
	const capacity = `relay_provider_capacity{bucket="requests",provider="sim"}`
	keys := []string{canaryKey}
	// One lane whose requests wait at most 300 ms for capacity, so a
	// request the rpm limit refuses is answered quickly.
	withRPM := func(rpm int) string {
		return "lanes:\n  - {name: interactive, max_wait: 300ms}\n" +
			strings.Replace(providerSim, "api_key:", fmt.Sprintf("rpm: %d, api_key:", rpm), 1) +
			"routes:\n" + routeSonnet
	}
	p := startReloadRelay(t, relayOpts{grace: "2s", tokenInterval: "1ms"}, keys, withRPM(60))

	// rpm 60 holds one request and refills one a second: of three
	// back-to-back requests the first goes, and the next ones wait out
	// their 300 ms for nothing.
	if code, body := p.ask("claude-sonnet", nil); code != http.StatusOK {
		t.Fatalf("first request: %d %s", code, body)
	}
	refused := 0
	for range 2 {
		code, body := p.ask("claude-sonnet", nil)
		switch code {
		case http.StatusOK:
		case http.StatusTooManyRequests, 529:
			refused++
		default:
			t.Fatalf("request under rpm 60: %d %s", code, body)
		}
	}
	if refused == 0 {
		t.Fatal("rpm 60 refused none of three back-to-back requests")
	}
	if c := p.metric(capacity); c > 1 {
		t.Errorf("%s = %v under rpm 60, want <= 1", capacity, c)
	}

	p.writeConfig(p.reloadConfig(keys, withRPM(6000)))
	// rpm 6000 holds 100 requests and refills 100 a second.
	natstest.Eventually(t, 10*time.Second, capacity+" raised", func() bool { return p.metric(capacity) >= 50 })
	for i := range 20 {
		if code, body := p.ask("claude-sonnet", nil); code != http.StatusOK {
			t.Fatalf("request %d under rpm 6000: %d %s", i, code, body)
		}
	}
	if n := p.metric(reloadErr); n != 0 {
		t.Errorf("%s = %v, want 0", reloadErr, n)
	}
	p.stop()
}

func TestReloadRemoveProviderInFlight(t *testing.T) {
	t.Parallel()
	keys := []string{canaryKey}
	// Two providers on the same simulator; the route moves from old to new.
	const (
		providers = `providers:
  - {name: old, type: anthropic, base_url: "http://SIM", api_key: k-old}
  - {name: new, type: anthropic, base_url: "http://SIM", api_key: k-new}
`
		onlyNew = `providers:
  - {name: new, type: anthropic, base_url: "http://SIM", api_key: k-new}
`
		routeTo = `routes:
  - model: claude-sonnet
    targets:
      - {provider: %s, model: claude-sonnet-4-5}
`
		oldOK = `relay_upstream_attempts_total{outcome="200",provider="old"}`
		newOK = `relay_upstream_attempts_total{outcome="200",provider="new"}`
	)
	p := startReloadRelay(t, relayOpts{grace: "5s", tokenInterval: "200ms"}, keys, providers+fmt.Sprintf(routeTo, "old"))

	// 15 tokens 200 ms apart: the stream lasts about 3 s.
	s := p.stream(15)
	type result struct {
		sawStop bool
		err     error
		at      time.Time
	}
	streamDone := make(chan result, 1)
	go func() {
		sawStop, err := s.rest()
		streamDone <- result{sawStop, err, time.Now()}
	}()

	okBefore := p.metric(reloadOK)
	p.writeConfig(p.reloadConfig(keys, onlyNew+fmt.Sprintf(routeTo, "new")))
	natstest.Eventually(t, 5*time.Second, "reload of the config without the old provider", func() bool {
		return p.metric(reloadOK) >= okBefore+1
	})
	reloaded := time.Now()

	// New requests go to the new provider.
	if code, body := p.ask("claude-sonnet", nil); code != http.StatusOK {
		t.Fatalf("request after reload: %d %s", code, body)
	}
	if n := p.metric(newOK); n < 1 {
		t.Errorf("%s = %v after reload, want >= 1", newOK, n)
	}
	if code, body := p.get(p.addr, "/metrics"); code != http.StatusOK || strings.Contains(body, `relay_provider_inflight{provider="old"}`) {
		t.Errorf("/metrics still lists the removed provider (status %d)", code)
	}

	var res result
	select {
	case res = <-streamDone:
	case <-time.After(15 * time.Second):
		t.Fatal("in-flight stream not finished 15s after the reload")
	}
	if !res.sawStop || res.err != nil {
		t.Errorf("in-flight stream: message_stop %v, err %v; want a complete stream", res.sawStop, res.err)
	}
	if !res.at.After(reloaded) {
		t.Errorf("the stream ended before the reload was seen; the test proved nothing")
	}
	if n := p.metric(oldOK); n != 1 {
		t.Errorf("%s = %v, want 1 (the in-flight stream)", oldOK, n)
	}
	p.stop()
}

func TestReloadInvalidKeepsConfig(t *testing.T) {
	t.Parallel()
	keys := []string{canaryKey}
	p := startReloadRelay(t, relayOpts{grace: "2s", tokenInterval: "1ms"}, keys, providerSim+"routes:\n"+routeSonnet)
	errBefore := p.metric(reloadErr)

	// Parsable YAML, but the new route names a provider that does not
	// exist, and the file drops the key the client uses.
	broken := providerSim + "routes:\n" + routeSonnet + strings.Replace(routeHaiku, "provider: sim", "provider: nowhere", 1)
	p.writeConfig(p.reloadConfig([]string{canaryKey2}, broken))
	natstest.Eventually(t, 10*time.Second, reloadErr+" incremented", func() bool { return p.metric(reloadErr) >= errBefore+1 })

	if code, body := p.ask("claude-sonnet", nil); code != http.StatusOK {
		t.Errorf("old config after refused reload: %d %s", code, body)
	}
	if code, _ := p.ask("claude-haiku", nil); code != http.StatusNotFound {
		t.Errorf("route of the refused file: %d, want 404", code)
	}
	line := p.waitLog("a error log line for the refused reload", map[string]string{"level": "ERROR", "trigger": "file change"})
	if e := fmt.Sprint(line["error"]); !strings.Contains(e, "routes[1].targets[0].provider") {
		t.Errorf("error log lacks the YAML path routes[1].targets[0].provider: %s", e)
	}
	if got := fmt.Sprint(line["path"]); got != p.cfgPath {
		t.Errorf("error log path = %s, want %s", got, p.cfgPath)
	}
	if n := p.metric(reloadOK); n != 0 {
		t.Errorf("%s = %v, want 0", reloadOK, n)
	}
	p.stop()
}

// TestReloadKubernetesSymlinkSwap lays the configuration out as the
// kubelet does for a ConfigMap volume and updates it the same way:
//
//	DIR/..2026_01_01/relay.yaml
//	DIR/..data -> ..2026_01_01
//	DIR/relay.yaml -> ..data/relay.yaml
//
// An update writes a new timestamped directory, points ..data_tmp at it,
// renames ..data_tmp over ..data (atomic), and removes the old directory.
// relay.yaml itself is never touched.
func TestReloadKubernetesSymlinkSwap(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	dir := filepath.Join(work, "config")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := providerSim + "routes:\n" + routeSonnet
	version := func(name, cfg string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "relay.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	swap := func(name, old string) {
		t.Helper()
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
	p := startServe(t, relayOpts{grace: "2s", tokenInterval: "1ms"}, work, filepath.Join(dir, "relay.yaml"), func(p *relayProc) {
		version("..2026_01_01", p.reloadConfig([]string{canaryKey}, body))
		if err := os.Symlink("..2026_01_01", filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", "relay.yaml"), p.cfgPath); err != nil {
			t.Fatal(err)
		}
	})
	if code := p.message(canaryKey2); code != http.StatusUnauthorized {
		t.Fatalf("second key before the swap: %d, want 401", code)
	}

	// First update: add a key.
	version("..2026_01_02", p.reloadConfig([]string{canaryKey, canaryKey2}, body))
	swap("..2026_01_02", "..2026_01_01")
	natstest.Eventually(t, 10*time.Second, "second key accepted after the ..data swap", func() bool {
		return p.message(canaryKey2) == http.StatusOK
	})

	// Second update: remove it again; swaps keep being noticed.
	version("..2026_01_03", p.reloadConfig([]string{canaryKey}, body))
	swap("..2026_01_03", "..2026_01_02")
	natstest.Eventually(t, 10*time.Second, "second key refused after the second swap", func() bool {
		return p.message(canaryKey2) == http.StatusUnauthorized
	})
	if code := p.message(canaryKey); code != http.StatusOK {
		t.Errorf("first key after the swaps: %d", code)
	}
	if n := p.metric(reloadErr); n != 0 {
		t.Errorf("%s = %v, want 0", reloadErr, n)
	}
	p.stop()
}

// TestReloadInPlaceWrite rewrites the file in place, truncating it and
// writing the new content into the same inode, as shell redirection and
// vim with backupcopy=yes do. (Replacing it by a rename, as most editors
// do, is TestServeOperations/reload_on_file_replace.)
func TestReloadInPlaceWrite(t *testing.T) {
	t.Parallel()
	body := providerSim + "routes:\n" + routeSonnet
	p := startReloadRelay(t, relayOpts{grace: "2s", tokenInterval: "1ms"}, []string{canaryKey}, body)
	if code := p.message(canaryKey2); code != http.StatusUnauthorized {
		t.Fatalf("second key before the write: %d, want 401", code)
	}
	before, err := os.Stat(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	f, err := os.OpenFile(p.cfgPath, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(p.reloadConfig([]string{canaryKey, canaryKey2}, body)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("the file was replaced, not written in place")
	}

	natstest.Eventually(t, 10*time.Second, "second key accepted after the in-place write", func() bool {
		return p.message(canaryKey2) == http.StatusOK
	})
	p.waitLog("a reload log line", map[string]string{"msg": "configuration reloaded", "trigger": "file change"})
	p.stop()
}

// TestReloadLaneMaxWait: a reload that shortens a lane's max_wait reaches
// both copies of it: the request already parked on the lane gives up
// after the new wait, and the gateway tells a new one the new wait.
func TestReloadLaneMaxWait(t *testing.T) {
	t.Parallel()
	keys := []string{canaryKey}
	withWait := func(wait string) string {
		return "lanes:\n  - {name: interactive, max_wait: " + wait + "}\n" +
			strings.Replace(providerSim, "api_key:", "max_concurrency: 1, api_key:", 1) +
			"routes:\n" + routeSonnet
	}
	// The simulator sends a token a second: the one stream below holds
	// the provider's only slot for the whole test.
	p := startReloadRelay(t, relayOpts{grace: "2s", tokenInterval: "1s"}, keys, withWait("1m"))
	s := p.stream(2)

	parked := make(chan int, 1)
	go func() { parked <- p.messageAsync() }()
	natstest.Eventually(t, 10*time.Second, "request parked", func() bool {
		return p.metric(`relay_lane_depth{lane="interactive"}`) > 0
	})
	p.writeConfig(p.reloadConfig(keys, withWait("300ms")))
	natstest.Eventually(t, 10*time.Second, "reload", func() bool { return p.metric(reloadOK) >= 1 })
	select {
	case code := <-parked:
		if code != 529 {
			t.Errorf("parked request: status %d, want 529 once the new max_wait passed", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the parked request still waits 10s after max_wait went from 1m to 300ms")
	}
	if code, body := p.ask("claude-sonnet", nil); code != 529 || !strings.Contains(body, "within 300ms") {
		t.Errorf("request after the reload: %d %s; want 529 naming the new wait", code, body)
	}
	if n := p.metric(reloadErr); n != 0 {
		t.Errorf("%s = %v, want 0", reloadErr, n)
	}
	_ = s.resp.Body.Close()
	p.stop()
}
