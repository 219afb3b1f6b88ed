package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// Canary secrets: none may ever show in the relay's logs or metrics.
const (
	canaryKey      = "relay-canary-key-7f3a9c1e5b"
	canaryKey2     = "relay-canary-key-second-42d8e6"
	canaryUpstream = "upstream-canary-secret-91c0aa"
)

// syncBuffer is a bytes.Buffer safe for a writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// relayOpts shapes the configuration a test relay runs with.
type relayOpts struct {
	grace         string // shutdown_grace
	tokenInterval string // simulator.token_interval
	admin         bool   // serve admin_listen
	keyBudget     string // every client key's budget (YAML flow), "" for none
}

// relayProc is a `relay serve` subprocess on loopback ports.
type relayProc struct {
	t       *testing.T
	opts    relayOpts
	dir     string // working directory, config and NATS store
	cfgPath string
	addr    string // API listener
	admin   string // admin listener, "" when off
	sim     string // simulator listener
	cmd     *exec.Cmd
	stderr  *syncBuffer
	done    chan struct{} // closed when the process has been waited for
	exited  time.Time
	waitErr error
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string { return natstest.FreeAddr(t) }

// config renders the configuration with the given client keys; broken
// adds a problem that validation rejects.
func (p *relayProc) config(keys []string, broken bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\n", p.addr)
	if p.admin != "" {
		fmt.Fprintf(&b, "admin_listen: %s\n", p.admin)
	}
	fmt.Fprintf(&b, "shutdown_grace: %s\n", p.opts.grace)
	fmt.Fprintf(&b, "nats:\n  listen: \"\"\n  store_dir: %s\n", filepath.Join(p.dir, "nats"))
	fmt.Fprintf(&b, "simulator: {listen: %s, latency: 1ms, token_interval: %s}\n", p.sim, p.opts.tokenInterval)
	ptype := "anthropic"
	if broken {
		ptype = "not-a-provider-type"
	}
	fmt.Fprintf(&b, "providers:\n  - name: sim\n    type: %s\n    base_url: http://%s\n    api_key: %s\n", ptype, p.sim, canaryUpstream)
	b.WriteString("routes:\n  - model: claude-sonnet\n    targets:\n      - {provider: sim, model: claude-sonnet-4-5}\n")
	b.WriteString("keys:\n")
	for i, k := range keys {
		fmt.Fprintf(&b, "  - name: key%d\n    key: %s\n", i, k)
	}
	b.WriteString("log: {level: info}\n")
	return b.String()
}

// writeConfig replaces the configuration file the way editors and
// Kubernetes do: write a temporary file in the same directory, then
// rename it over the old one.
func (p *relayProc) writeConfig(body string) {
	p.t.Helper()
	tmp, err := os.CreateTemp(p.dir, ".relay-*.yaml.tmp")
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := tmp.WriteString(body); err != nil {
		p.t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), p.cfgPath); err != nil {
		p.t.Fatal(err)
	}
}

// newProc describes a `relay serve` process on fresh loopback ports (and
// an admin port when opts.admin) working in dir, a new temporary
// directory when "", on the configuration dir/relay.yaml. It is the one
// constructor of relayProc; run starts the process.
func newProc(t *testing.T, opts relayOpts, dir string) *relayProc {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	p := &relayProc{t: t, opts: opts, dir: dir, cfgPath: filepath.Join(dir, "relay.yaml"),
		addr: freePort(t), sim: freePort(t), stderr: &syncBuffer{}, done: make(chan struct{})}
	if opts.admin {
		p.admin = freePort(t)
	}
	return p
}

// startRelay starts `relay serve` with one client key, canaryKey, and does
// not wait for it to be ready. The process is killed at test end if it
// is still running.
func startRelay(t *testing.T, opts relayOpts) *relayProc {
	t.Helper()
	p := newProc(t, opts, "")
	p.writeConfig(p.config([]string{canaryKey}, false))
	p.run()
	return p
}

// run starts the relay process on p.cfgPath in p.dir; the test's cleanup
// kills it if it is still running and shows its stderr if the test failed.
func (p *relayProc) run() {
	t := p.t
	t.Helper()
	p.cmd = exec.Command(relayBin, "serve", "--config", p.cfgPath)
	p.cmd.Dir = p.dir
	p.cmd.Env = baseEnv()
	p.cmd.Stdout = io.Discard
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		p.exited = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("relay stderr:\n%s", p.stderr.String())
		}
	})
}

// startReady starts a relay and waits until /readyz answers 200.
func startReady(t *testing.T, opts relayOpts) *relayProc {
	t.Helper()
	p := startRelay(t, opts)
	p.waitReady()
	return p
}

// waitReady polls /readyz until 200, for at most 20 s.
func (p *relayProc) waitReady() {
	p.t.Helper()
	natstest.Eventually(p.t, 20*time.Second, "relay ready", func() bool {
		select {
		case <-p.done:
			p.t.Fatalf("relay exited before ready: %v", p.waitErr)
		default:
		}
		code, _ := p.get(p.addr, "/readyz")
		return code == http.StatusOK
	})
}

// signal sends sig to the relay.
func (p *relayProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// waitExit waits at most d for the process to end and returns its exit
// code (-1 when a signal ended it).
func (p *relayProc) waitExit(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("relay still running %v after being asked to stop", d)
	}
	var ee *exec.ExitError
	switch {
	case p.waitErr == nil:
		return 0
	case errors.As(p.waitErr, &ee):
		return ee.ExitCode()
	}
	p.t.Fatalf("wait: %v", p.waitErr)
	return -1
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// get fetches path from addr and returns the status and body; status 0
// means the request failed.
func (p *relayProc) get(addr, path string) (int, string) {
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// message sends a small non-streaming /v1/messages request with key and
// returns the status.
func (p *relayProc) message(key string) int {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+p.addr+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("x-api-key", key)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		p.t.Fatalf("POST /v1/messages: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// sseStream is a streaming /v1/messages response being read.
type sseStream struct {
	resp *http.Response
	r    *bufio.Reader
}

// stream starts a streaming /v1/messages request and reads its first
// event.
func (p *relayProc) stream(maxTokens int) *sseStream {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	p.t.Cleanup(cancel)
	body := fmt.Sprintf(`{"model":"claude-sonnet","max_tokens":%d,"stream":true,"messages":[{"role":"user","content":"hi"}]}`, maxTokens)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.addr+"/v1/messages", strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("x-api-key", canaryKey)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	tr := &http.Transport{DisableKeepAlives: true}
	p.t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		p.t.Fatalf("stream request: %v", err)
	}
	p.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, err := io.ReadAll(resp.Body)
		p.t.Fatalf("stream status %d: %s (%v)", resp.StatusCode, b, err)
	}
	s := &sseStream{resp: resp, r: bufio.NewReader(resp.Body)}
	if ev, err := s.next(); err != nil || ev != "message_start" {
		p.t.Fatalf("first event %q, %v; want message_start", ev, err)
	}
	return s
}

// next returns the name of the next event.
func (s *sseStream) next() (string, error) {
	for {
		line, err := s.r.ReadString('\n')
		if name, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "event: "); ok {
			return name, nil
		}
		if err != nil {
			return "", err
		}
	}
}

// rest reads the remaining events; it reports whether message_stop came
// and the read error that ended the stream, if any.
func (s *sseStream) rest() (sawStop bool, err error) {
	for {
		ev, err := s.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return sawStop, err
		}
		if ev == "message_stop" {
			sawStop = true
		}
	}
}

// logLines parses stderr as JSON lines, failing on any other line.
func (p *relayProc) logLines() []map[string]any {
	p.t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			p.t.Errorf("stderr line is not JSON: %q", line)
			continue
		}
		out = append(out, m)
	}
	return out
}

// findLog returns the first log line whose fields include every one of
// want, or nil.
func (p *relayProc) findLog(want map[string]string) map[string]any {
	p.t.Helper()
	for _, m := range p.logLines() {
		ok := true
		for k, v := range want {
			if fmt.Sprint(m[k]) != v {
				ok = false
				break
			}
		}
		if ok {
			return m
		}
	}
	return nil
}

// waitLog waits at most 5 s for a log line matching want (see findLog)
// and returns it: reload counts a result before it logs it. It fails the
// test, saying what, when none comes.
func (p *relayProc) waitLog(what string, want map[string]string) map[string]any {
	p.t.Helper()
	var m map[string]any
	natstest.Eventually(p.t, 5*time.Second, what, func() bool {
		m = p.findLog(want)
		return m != nil
	})
	return m
}

// metric returns the value of the sample named exactly series (name plus
// labels as exposed) on /metrics, or 0 when it is absent.
func (p *relayProc) metric(series string) float64 {
	p.t.Helper()
	code, body := p.get(p.addr, "/metrics")
	if code != http.StatusOK {
		p.t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				p.t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// refused reports whether a new TCP connection to addr is refused.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func TestServeShutdown(t *testing.T) {
	tests := []struct {
		name          string
		sig           os.Signal
		grace         string
		tokenInterval string
		maxTokens     int
		hupDuring     bool          // send SIGHUP while draining
		wantComplete  bool          // the in-flight stream ends with message_stop
		maxExit       time.Duration // from the signal to exit, generous
		wantLog       map[string]string
	}{
		{
			name: "sigterm_drains_stream", sig: syscall.SIGTERM,
			grace: "10s", tokenInterval: "200ms", maxTokens: 15,
			wantComplete: true, maxExit: 10*time.Second + 5*time.Second,
		},
		{
			name: "sigint_drains_stream", sig: syscall.SIGINT,
			grace: "10s", tokenInterval: "200ms", maxTokens: 15,
			wantComplete: true, maxExit: 10*time.Second + 5*time.Second,
		},
		{
			// SIGHUP's default action ends the process; while draining
			// it must be ignored, not kill the in-flight stream.
			name: "sighup_while_draining", sig: syscall.SIGTERM,
			grace: "10s", tokenInterval: "200ms", maxTokens: 15, hupDuring: true,
			wantComplete: true, maxExit: 10*time.Second + 5*time.Second,
		},
		{
			// The simulator sends 24 tokens 500 ms apart: 12 s, far past
			// the 1 s grace. serve logs the cut and still exits 0.
			name: "grace_cuts_stream", sig: syscall.SIGTERM,
			grace: "1s", tokenInterval: "500ms", maxTokens: 100,
			wantComplete: false, maxExit: 1*time.Second + 5*time.Second,
			wantLog: map[string]string{"level": "WARN", "msg": "in-flight requests cut at the end of the grace period"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startReady(t, relayOpts{grace: tt.grace, tokenInterval: tt.tokenInterval})
			s := p.stream(tt.maxTokens)

			type result struct {
				sawStop bool
				err     error
			}
			streamDone := make(chan result, 1)
			go func() {
				sawStop, err := s.rest()
				streamDone <- result{sawStop, err}
			}()

			sent := time.Now()
			p.signal(tt.sig)
			natstest.Eventually(t, 5*time.Second, "new connections refused after "+tt.sig.String(), func() bool { return refused(p.addr) })
			if tt.hupDuring {
				p.signal(syscall.SIGHUP)
			}

			code := p.waitExit(tt.maxExit)
			took := p.exited.Sub(sent)
			if code != 0 {
				t.Errorf("exit code %d (%v), want 0", code, p.waitErr)
			}
			t.Logf("exited %v after %v", code, took.Round(time.Millisecond))

			var res result
			select {
			case res = <-streamDone:
			case <-time.After(10 * time.Second):
				t.Fatal("stream still open 10s after the relay exited")
			}
			if res.sawStop != tt.wantComplete {
				t.Errorf("stream completed = %v (err %v), want %v", res.sawStop, res.err, tt.wantComplete)
			}
			if tt.wantComplete && res.err != nil {
				t.Errorf("stream read error: %v", res.err)
			}

			grace, err := time.ParseDuration(tt.grace)
			if err != nil {
				t.Fatal(err)
			}
			if p.findLog(map[string]string{"msg": "shutting down", "grace_s": fmt.Sprint(grace.Seconds())}) == nil {
				t.Errorf("no \"shutting down\" log line with grace_s %v", grace.Seconds())
			}
			if p.findLog(map[string]string{"msg": "stopped"}) == nil {
				t.Error(`no "stopped" log line`)
			}
			if tt.wantLog != nil && p.findLog(tt.wantLog) == nil {
				t.Errorf("no log line with %v", tt.wantLog)
			}
			if strings.Contains(p.stderr.String(), canaryKey) {
				t.Error("client key in the logs")
			}
		})
	}
}

// TestServeSIGHUPWhileStarting sends SIGHUP as soon as the relay logs its
// first line, before it is ready: the process must survive and serve.
// Whether the signal lands before the reloader starts depends on timing,
// so this guards against the regression without proving its absence.
func TestServeSIGHUPWhileStarting(t *testing.T) {
	t.Parallel()
	p := startRelay(t, relayOpts{grace: "2s", tokenInterval: "1ms"})
	// Poll tightly: the window before the reloader runs is short.
	deadline := time.Now().Add(20 * time.Second)
	for p.stderr.String() == "" {
		select {
		case <-p.done:
			t.Fatalf("relay exited: %v", p.waitErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no log line within 20s")
		}
		time.Sleep(time.Millisecond)
	}
	p.signal(syscall.SIGHUP)
	p.waitReady()
	if code := p.message(canaryKey); code != http.StatusOK {
		t.Errorf("request after early SIGHUP: %d", code)
	}
	p.signal(syscall.SIGTERM)
	if code := p.waitExit(15 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestServeOperations runs one relay through health, metrics, pprof,
// reloads and secret hygiene, in order.
func TestServeOperations(t *testing.T) {
	t.Parallel()
	p := startReady(t, relayOpts{grace: "2s", tokenInterval: "1ms", admin: true})
	const (
		okSeries  = `relay_config_reloads_total{result="success"}`
		errSeries = `relay_config_reloads_total{result="failure"}`
	)

	t.Run("health", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, body := p.get(p.addr, path); code != http.StatusOK {
				t.Errorf("%s: %d %s", path, code, body)
			}
		}
	})

	t.Run("requests", func(t *testing.T) {
		tests := []struct {
			name string
			key  string
			want int
		}{
			{name: "known_key", key: canaryKey, want: http.StatusOK},
			{name: "unknown_key", key: canaryKey2, want: http.StatusUnauthorized},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := p.message(tt.key); got != tt.want {
					t.Errorf("status %d, want %d", got, tt.want)
				}
			})
		}
	})

	t.Run("metrics", func(t *testing.T) {
		code, body := p.get(p.addr, "/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d", code)
		}
		for _, name := range []string{"relay_requests_total{", "go_goroutines ", "process_cpu_seconds_total "} {
			if !strings.Contains(body, "\n"+name) {
				t.Errorf("/metrics lacks %s", name)
			}
		}
	})

	t.Run("pprof", func(t *testing.T) {
		tests := []struct {
			name string
			addr string
			path string
			want int
		}{
			{name: "api_index", addr: p.addr, path: "/debug/pprof/", want: http.StatusNotFound},
			{name: "api_cmdline", addr: p.addr, path: "/debug/pprof/cmdline", want: http.StatusNotFound},
			{name: "api_goroutine", addr: p.addr, path: "/debug/pprof/goroutine", want: http.StatusNotFound},
			{name: "admin_index", addr: p.admin, path: "/debug/pprof/", want: http.StatusOK},
			{name: "admin_cmdline", addr: p.admin, path: "/debug/pprof/cmdline", want: http.StatusOK},
			{name: "admin_goroutine", addr: p.admin, path: "/debug/pprof/goroutine?debug=1", want: http.StatusOK},
			{name: "admin_no_api", addr: p.admin, path: "/metrics", want: http.StatusNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if code, body := p.get(tt.addr, tt.path); code != tt.want {
					t.Errorf("GET %s%s: %d, want %d\n%.300s", tt.addr, tt.path, code, tt.want, body)
				}
			})
		}
	})

	t.Run("reload_on_file_replace", func(t *testing.T) {
		before := p.metric(okSeries)
		p.writeConfig(p.config([]string{canaryKey, canaryKey2}, false))
		natstest.Eventually(t, 10*time.Second, "second key accepted", func() bool { return p.message(canaryKey2) == http.StatusOK })
		natstest.Eventually(t, 5*time.Second, okSeries+" incremented", func() bool { return p.metric(okSeries) >= before+1 })
		p.waitLog("a reload log line", map[string]string{"msg": "configuration reloaded", "trigger": "file change"})
		if got := p.message(canaryKey); got != http.StatusOK {
			t.Errorf("first key after reload: %d", got)
		}
	})

	t.Run("invalid_file_keeps_config", func(t *testing.T) {
		before := p.metric(errSeries)
		p.writeConfig(p.config([]string{canaryKey}, true))
		natstest.Eventually(t, 10*time.Second, errSeries+" incremented", func() bool { return p.metric(errSeries) >= before+1 })
		// The refused file dropped the second key; it must still work.
		for _, key := range []string{canaryKey, canaryKey2} {
			if got := p.message(key); got != http.StatusOK {
				t.Errorf("key after refused reload: %d, want 200", got)
			}
		}
		line := p.waitLog("a error log line for the refused reload", map[string]string{"level": "ERROR", "trigger": "file change"})
		if e := fmt.Sprint(line["error"]); !strings.Contains(e, "providers[0].type") {
			t.Errorf("error log lacks the problem path: %s", e)
		}
	})

	t.Run("sighup", func(t *testing.T) {
		errBefore := p.metric(errSeries)
		p.signal(syscall.SIGHUP) // the file is still invalid
		natstest.Eventually(t, 10*time.Second, "SIGHUP reload refused", func() bool { return p.metric(errSeries) >= errBefore+1 })
		p.waitLog("a error log line for the SIGHUP reload", map[string]string{"level": "ERROR", "trigger": "sighup"})

		// Fix the file, then let its own reload land before SIGHUP.
		okBefore := p.metric(okSeries)
		p.writeConfig(p.config([]string{canaryKey}, false))
		natstest.Eventually(t, 10*time.Second, "fixed file reloaded", func() bool { return p.message(canaryKey2) == http.StatusUnauthorized })
		natstest.Eventually(t, 5*time.Second, okSeries+" after fix", func() bool { return p.metric(okSeries) >= okBefore+1 })
		okBefore = p.metric(okSeries)
		p.signal(syscall.SIGHUP)
		natstest.Eventually(t, 10*time.Second, "SIGHUP reload", func() bool { return p.metric(okSeries) >= okBefore+1 })
		p.waitLog("a reload log line for SIGHUP", map[string]string{"msg": "configuration reloaded", "trigger": "sighup"})
		if got := p.message(canaryKey); got != http.StatusOK {
			t.Errorf("key after SIGHUP reload: %d", got)
		}
	})

	t.Run("no_secrets_exposed", func(t *testing.T) {
		_, metrics := p.get(p.addr, "/metrics")
		logs := p.stderr.String()
		for _, secret := range []string{canaryKey, canaryKey2, canaryUpstream} {
			if strings.Contains(logs, secret) {
				t.Errorf("logs hold %q", secret)
			}
			if strings.Contains(metrics, secret) {
				t.Errorf("/metrics holds %q", secret)
			}
		}
		p.logLines() // every line is JSON
	})

	t.Run("stop", func(t *testing.T) {
		p.signal(syscall.SIGTERM)
		if code := p.waitExit(15 * time.Second); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		if p.findLog(map[string]string{"msg": "stopped"}) == nil {
			t.Error(`no "stopped" log line`)
		}
	})
}
