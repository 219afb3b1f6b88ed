package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// readyTimeout bounds how long a child may take to become ready;
// clusterReadyTimeout a relay of a cluster, which waits for a majority of
// nodes and for JetStream to place its assets (slow on a loaded machine).
const (
	readyTimeout        = 30 * time.Second
	clusterReadyTimeout = 90 * time.Second
)

// lab owns the temporary directory and every subprocess of one scenario run.
// Its methods are safe for concurrent use (the cluster scenario starts
// relays at once). Close stops the children and removes the directory;
// the caller must call it.
type lab struct {
	dir  string
	self string // the bench binary, re-executed for _upstream and _proxy

	mu       sync.Mutex
	root     string // module root, where the relay is built
	relayBin string // prebuilt relay, or "" to build on first use
	children []*child
	seq      int
}

// newLab creates the temporary directory. relayBin may name a prebuilt relay.
func newLab(relayBin string) (*lab, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find bench binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "relay-bench-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	return &lab{dir: dir, self: self, relayBin: relayBin}, nil
}

// Close stops every child and removes the temporary directory.
func (l *lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := stopAll(l.children)
	l.children = nil
	if rerr := os.RemoveAll(l.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("remove temp dir: %w", rerr))
	}
	return err
}

func (l *lab) path(name string) string { return filepath.Join(l.dir, name) }

// start starts one child and waits (up to readyTimeout) until GET
// readyPath answers 200.
func (l *lab) start(ctx context.Context, name, addr, readyPath string, deathSig syscall.Signal, bin string, args ...string) (*child, error) {
	return l.startWithin(ctx, readyTimeout, name, addr, readyPath, deathSig, bin, args...)
}

// startWithin is start waiting up to wait for readiness.
func (l *lab) startWithin(ctx context.Context, wait time.Duration, name, addr, readyPath string, deathSig syscall.Signal, bin string, args ...string) (*child, error) {
	l.mu.Lock()
	l.seq++
	c, err := startChild(name, addr, l.path(fmt.Sprintf("%02d-%s.log", l.seq, name)), deathSig, bin, args...)
	if err == nil {
		l.children = append(l.children, c)
	}
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, readyPath, wait); err != nil {
		return nil, err
	}
	return c, nil
}

// upstreamOptions configures a simulated upstream subprocess.
type upstreamOptions struct {
	Latency       time.Duration
	TokenInterval time.Duration
	RPS           float64 // hard requests-per-second limit; 0 means none
}

// startUpstream starts a simulated upstream (bench _upstream).
func (l *lab) startUpstream(ctx context.Context, name string, o upstreamOptions) (*child, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"_upstream", "-listen", addr, "-latency", o.Latency.String(), "-token-interval", o.TokenInterval.String()}
	if o.RPS > 0 {
		args = append(args, "-rps", strconv.FormatFloat(o.RPS, 'g', -1, 64))
	}
	return l.start(ctx, name, addr, "/_sim/stats", syscall.SIGKILL, l.self, args...)
}

// startProxy starts the bare httputil.ReverseProxy (bench _proxy) in front of
// target (a base URL).
func (l *lab) startProxy(ctx context.Context, target string) (*child, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return l.start(ctx, "bare", addr, "/_sim/stats", syscall.SIGKILL, l.self, "_proxy", "-listen", addr, "-target", target)
}

// startRelay writes cfg to the temp dir and runs relay serve with it.
func (l *lab) startRelay(ctx context.Context, cfg relayConfig) (*child, error) {
	bin, err := l.relay(ctx)
	if err != nil {
		return nil, err
	}
	data, err := cfg.YAML()
	if err != nil {
		return nil, err
	}
	path := l.path("relay.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("write relay config: %w", err)
	}
	return l.start(ctx, "relay", cfg.Listen, "/readyz", syscall.SIGTERM, bin, "serve", "--config", path)
}

// relay returns the relay binary, building ./cmd/relay on first use.
func (l *lab) relay(ctx context.Context) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.relayBin != "" {
		return l.relayBin, nil
	}
	if l.root == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		l.root = root
	}
	bin := l.path("relay")
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/relay")
	cmd.Dir = l.root
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build relay in %s: %w\n%s", l.root, err, out.String())
	}
	l.relayBin = bin
	return bin, nil
}

// moduleRoot walks up from the working directory to the directory holding
// go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	return findUp(dir, "go.mod")
}

// findUp returns the first directory at or above dir that holds name.
func findUp(dir, name string) (string, error) {
	for {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find module root: no %s at or above the working directory", name)
		}
		dir = parent
	}
}

// newControlClient returns the client for control requests: few
// connections, no proxy from the environment.
func newControlClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 5 * time.Second}
}

// control sends a control request (POST /_sim/fault, POST /_sim/latency,
// GET /_sim/stats) to a simulated upstream and returns the response body.
func control(ctx context.Context, client *http.Client, method, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, fmt.Errorf("control %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("control %s: %w", url, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("control %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
