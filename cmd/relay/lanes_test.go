package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes"
)

// laneConfig is a configuration with lanes and a simulated upstream behind
// a provider with one concurrency slot, so that concurrent requests park.
// natsYAML is the nats section's body.
func laneConfig(addr, sim, natsYAML string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nshutdown_grace: 5s\n", addr)
	fmt.Fprintf(&b, "nats: %s\n", natsYAML)
	fmt.Fprintf(&b, "simulator: {listen: %s, latency: 300ms, token_interval: 1ms}\n", sim)
	b.WriteString("lanes:\n  - {name: interactive, max_depth: 100, max_wait: 30s}\n  - {name: batch, max_depth: 100, max_wait: 1h, min_share: 0.1}\n")
	fmt.Fprintf(&b, "providers:\n  - name: sim\n    type: anthropic\n    base_url: http://%s\n    api_key: %s\n    max_concurrency: 1\n", sim, canaryUpstream)
	b.WriteString("routes:\n  - model: claude-sonnet\n    targets:\n      - {provider: sim, model: claude-sonnet-4-5}\n")
	fmt.Fprintf(&b, "keys:\n  - name: key0\n    key: %s\n", canaryKey)
	b.WriteString("log: {level: info}\n")
	return b.String()
}

// launch starts `relay serve` in dir with the configuration in dir/relay.yaml
// (written by the caller), listening on addr with its simulator on sim,
// and waits until it is ready.
func launch(t *testing.T, dir, addr, sim string) *relayProc {
	t.Helper()
	p := newProc(t, relayOpts{}, dir)
	p.addr, p.sim = addr, sim
	p.run()
	p.waitReady()
	return p
}

// parkSome sends n concurrent requests through the one slot, checks that
// some were parked (relay_lane_depth) while check runs, and that all are
// served.
func (p *relayProc) parkSome(n int, check func()) {
	p.t.Helper()
	codes := make(chan int, n)
	for range n {
		go func() { codes <- p.messageAsync() }()
	}
	natstest.Eventually(p.t, 10*time.Second, "requests parked", func() bool {
		return p.metric(`relay_lane_depth{lane="interactive"}`) > 0
	})
	if check != nil {
		check()
	}
	for range n {
		if code := <-codes; code != 200 {
			p.t.Errorf("parked request: status %d", code)
		}
	}
}

// messageAsync is message for any goroutine: it returns 0 on failure.
func (p *relayProc) messageAsync() int {
	return p.send(context.Background(), httpClient, "claude-sonnet")
}

// send posts a small Anthropic request for model with canaryKey through
// client and returns the status (0 when no answer came).
func (p *relayProc) send(ctx context.Context, client *http.Client, model string) int {
	return p.sendAs(ctx, client, canaryKey, model)
}

// sendAs is send with key.
func (p *relayProc) sendAs(ctx context.Context, client *http.Client, key, model string) int {
	body := `{"model":"` + model + `","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.addr+"/v1/messages", strings.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("x-api-key", key)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// stopClean asks the relay to stop and checks that it exits cleanly.
func (p *relayProc) stopClean() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.waitExit(15 * time.Second); code != 0 {
		p.t.Fatalf("relay exited with %d", code)
	}
}

// TestServeRestartWithLanes starts the relay twice on the same store_dir:
// the second run finds RELAY_LANES (and the rest of JetStream) there and
// starts cleanly, and parks and serves again.
func TestServeRestartWithLanes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr, sim := freePort(t), freePort(t)
	cfg := laneConfig(addr, sim, fmt.Sprintf("{listen: \"\", store_dir: %s}", filepath.Join(dir, "nats")))
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := launch(t, dir, addr, sim)
	p.parkSome(4, nil)
	p.stopClean()

	p2 := launch(t, dir, addr, sim)
	if code := p2.messageAsync(); code != http.StatusOK {
		t.Fatalf("after restart: status %d", code)
	}
	p2.parkSome(4, nil)
	for _, m := range p2.logLines() {
		if m["level"] == "ERROR" || (m["level"] == "WARN" && strings.Contains(fmt.Sprint(m["msg"]), "lane")) {
			t.Errorf("second run logged %v", m)
		}
	}
	p2.stopClean()
}

// natsServer is a nats-server process built from the module graph, with
// JetStream on its own store directory, on a fixed loopback port: it can
// be stopped and started again as the same server.
type natsServer struct {
	t         *testing.T
	bin, addr string
	storeDir  string
	out       *syncBuffer
	cmd       *exec.Cmd
	done      chan struct{}
}

// startNATSServer builds nats-server (skipping the test when it cannot)
// and starts it; it is stopped when the test ends.
func startNATSServer(t *testing.T) *natsServer {
	t.Helper()
	tmp := t.TempDir()
	n := &natsServer{t: t, bin: filepath.Join(tmp, "nats-server"), addr: freePort(t), storeDir: filepath.Join(tmp, "js"), out: &syncBuffer{}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", n.bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Skipf("cannot build nats-server from the module graph: %v\n%s", err, out)
	}
	n.start()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("nats-server output:\n%s", n.out.String())
		}
	})
	return n
}

// start runs the server and waits until it accepts connections.
func (n *natsServer) start() {
	n.t.Helper()
	_, port, err := net.SplitHostPort(n.addr)
	if err != nil {
		n.t.Fatal(err)
	}
	n.cmd = exec.Command(n.bin, "-js", "-sd", n.storeDir, "-a", "127.0.0.1", "-p", port)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(n.cmd, n.done)
	natstest.Eventually(n.t, 15*time.Second, "nats-server accepting", func() bool { return !refused(n.addr) })
}

// stop ends the server (SIGTERM, then SIGKILL after 10 s) and waits; it
// does nothing when the server is not running.
func (n *natsServer) stop() {
	if n.done == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	n.done = nil
}

// TestServeExternalNATS runs the relay against a separately started
// nats-server process built from the module graph (nats.url): parked
// requests show in RELAY_LANES on that server, and requests are served.
func TestServeExternalNATS(t *testing.T) {
	t.Parallel()
	ns := startNATSServer(t)
	natsAddr := ns.addr
	url := "nats://" + natsAddr

	dir := t.TempDir()
	addr, sim := freePort(t), freePort(t)
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(laneConfig(addr, sim, "{url: "+url+"}")), 0o600); err != nil {
		t.Fatal(err)
	}
	p := launch(t, dir, addr, sim)
	if p.findLog(map[string]string{"msg": "connected to external NATS"}) == nil {
		t.Error("relay did not log its connection to the external NATS server")
	}

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	msgs := func() uint64 { return natstest.StreamMsgs(t, js, lanes.StreamName, "") }
	p.parkSome(4, func() {
		natstest.Eventually(t, 10*time.Second, "parked requests in "+lanes.StreamName, func() bool { return msgs() > 0 })
	})
	natstest.Eventually(t, 10*time.Second, lanes.StreamName+" empty after dispatch", func() bool { return msgs() == 0 })
	p.stopClean()
}
