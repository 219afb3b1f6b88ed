package natstest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// nats-server processes for tests: the binary is built once per test
// process from the module graph (the version go.mod pins), so tests need
// nothing installed besides Go.

var build struct {
	once sync.Once
	bin  string
	err  error
}

// ServerBinary builds nats-server from the module graph once per test
// process into a temporary directory and returns its path; it skips the
// test when it cannot be built (no module cache and no network).
func ServerBinary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "natstest-bin-")
		if err != nil {
			build.err = err
			return
		}
		build.bin = filepath.Join(dir, "nats-server")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", build.bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
			build.err = fmt.Errorf("%w\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Skipf("natstest: cannot build nats-server from the module graph: %v", build.err)
	}
	return build.bin
}

// Process is a nats-server process with JetStream, on fixed loopback
// ports and its own store directory, so it can be killed and started
// again as the same node.
type Process struct {
	t          testing.TB
	bin        string
	args       []string
	ClientAddr string // host:port of the client listener
	Name       string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *lockedBuffer
}

// ProcessCluster starts n nats-server processes forming one JetStream
// cluster on loopback and waits until each accepts clients and the
// cluster has a meta leader. They are stopped when the test ends; their
// output is logged when it failed.
func ProcessCluster(t testing.TB, n int) []*Process {
	t.Helper()
	bin := ServerBinary(t)
	routes := make([]string, n)
	for i := range routes {
		routes[i] = "nats-route://" + FreeAddr(t)
	}
	ps := make([]*Process, n)
	for i := range n {
		client := FreeAddr(t)
		host, port, _ := strings.Cut(client, ":")
		p := &Process{t: t, bin: bin, ClientAddr: client, Name: fmt.Sprintf("n%d", i+1), out: &lockedBuffer{}}
		p.args = []string{"-js", "-sd", t.TempDir(), "-a", host, "-p", port, "-n", p.Name,
			"--cluster_name", "natstest", "--cluster", routes[i], "--routes", strings.Join(routes, ",")}
		ps[i] = p
		t.Cleanup(func() {
			p.Stop()
			if t.Failed() {
				t.Logf("nats-server %s output:\n%s", p.Name, p.out.String())
			}
		})
	}
	for _, p := range ps {
		p.Start()
	}
	for _, p := range ps {
		p.WaitClients(30 * time.Second)
	}
	return ps
}

// URL returns the nats:// URL of the client listener.
func (p *Process) URL() string { return "nats://" + p.ClientAddr }

// Start runs the process (again, after Kill or Stop).
func (p *Process) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		return
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("natstest: start nats-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done
}

// WaitClients waits until the process accepts client connections.
func (p *Process) WaitClients(d time.Duration) {
	p.t.Helper()
	Eventually(p.t, d, "nats-server "+p.Name+" accepting clients", func() bool {
		return dialable(p.ClientAddr)
	})
}

// Kill ends the process with SIGKILL and waits for it.
func (p *Process) Kill() { p.end(syscall.SIGKILL) }

// Stop ends the process with SIGTERM (SIGKILL after 10 s) and waits.
func (p *Process) Stop() { p.end(syscall.SIGTERM) }

func (p *Process) end(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd, p.done = nil, nil
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
