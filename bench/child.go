package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// stopTimeout is how long a child may take to exit after SIGTERM before it
// is killed.
const stopTimeout = 10 * time.Second

// child is one subprocess of the bench: a simulated upstream, a proxy, nginx
// or the relay. It runs in its own process group, so a Ctrl-C in the terminal
// reaches only the bench, which then stops its children in order; and it gets
// deathSig should the bench die without stopping it.
type child struct {
	name    string
	addr    string // host:port it serves on
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	err     error         // exit status, valid once done is closed
}

// startChild starts path with args, its output going to logPath.
func startChild(name, addr, logPath string, deathSig syscall.Signal, path string, args ...string) (*child, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, addr: addr, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

// PID returns the child's process id.
func (c *child) PID() int { return c.cmd.Process.Pid }

// URL returns the child's base URL.
func (c *child) URL() string { return "http://" + c.addr }

// signal sends SIGTERM, unless the child already exited.
func (c *child) terminate() {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
}

// wait waits for the child to exit until deadline, then kills its process
// group (nginx's workers included) and waits for good.
func (c *child) wait(deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-t.C:
	}
	_ = syscall.Kill(-c.PID(), syscall.SIGKILL)
	<-c.done
	return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", c.name, stopTimeout)
}

// logTail returns the last bytes of the child's output, for error messages.
func (c *child) logTail() string {
	data, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	const n = 2048
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// waitReady polls GET c.URL()+path until it answers 200, the child exits,
// ctx ends or timeout passes.
func (c *child) waitReady(ctx context.Context, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL()+path, nil)
		if err != nil {
			return fmt.Errorf("%s readiness: %w", c.name, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before ready (%v); output:\n%s", c.name, c.err, c.logTail())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s within %v: %w; output:\n%s", c.name, path, timeout, ctx.Err(), c.logTail())
		case <-tick.C:
		}
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. Another process could take it before the child binds it; the child's
// readiness check then fails loudly rather than measuring the wrong server.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find free port: %w", err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

// stopAll sends SIGTERM to every child, newest first, then waits for all of
// them with one shared deadline, killing those that outlive it.
func stopAll(children []*child) error {
	for i := len(children) - 1; i >= 0; i-- {
		children[i].terminate()
	}
	deadline := time.Now().Add(stopTimeout)
	var errs []error
	for i := len(children) - 1; i >= 0; i-- {
		errs = append(errs, children[i].wait(deadline))
	}
	return errors.Join(errs...)
}
