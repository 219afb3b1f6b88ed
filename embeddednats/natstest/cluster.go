package natstest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats"
)

// FreeAddr returns a 127.0.0.1 address with a port that was free a
// moment ago (for servers that must know their peers' ports up front).
// The port is picked at random below the kernel's ephemeral range, which
// outgoing connections draw from: a port from ":0" is in that range, and
// between its check and the server's bind another test's connection may
// take it (seen as "address already in use" under load). Ports handed out
// are not handed out again in this process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	lo, hi := quietPorts()
	for range 64 {
		p := lo + rand.IntN(hi-lo)
		if _, taken := handedOut.LoadOrStore(p, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		return ln.Addr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// handedOut holds the ports FreeAddr returned.
var handedOut sync.Map

// quietPorts returns a port range below the ephemeral range (Linux's
// ip_local_port_range, default 32768-60999).
func quietPorts() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				hi = n
			}
		}
	}
	return hi - 10000, hi
}

// StartCluster starts n in-process servers that form one JetStream
// cluster (routes on loopback, no client port), waits until it has a
// meta leader, and shuts them down when the test ends.
func StartCluster(t testing.TB, n int) []*embeddednats.Server {
	t.Helper()
	routes := make([]string, n)
	for i := range routes {
		routes[i] = FreeAddr(t)
	}
	out := make([]*embeddednats.Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		dir := t.TempDir()
		wg.Go(func() {
			out[i], errs[i] = embeddednats.Start(t.Context(), embeddednats.Options{
				ServerName: fmt.Sprintf("n%d", i+1), StoreDir: dir,
				Cluster: &embeddednats.ClusterOptions{Name: "natstest", Listen: routes[i], Routes: routes},
			})
		})
	}
	wg.Wait()
	for i, s := range out {
		if errs[i] != nil {
			t.Fatalf("natstest: start node %d: %v", i+1, errs[i])
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			_ = s.Shutdown(ctx)
		})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i, s := range out {
		if err := s.WaitJetStream(ctx); err != nil {
			t.Fatalf("natstest: node %d: %v", i+1, err)
		}
	}
	// Every node known to the meta layer: a stream on all of them can be
	// placed.
	js := JetStream(t, out[0])
	Eventually(t, 30*time.Second, "an R"+fmt.Sprint(n)+" stream placeable", func() bool {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NATSTEST_PROBE", Replicas: n, Storage: jetstream.FileStorage})
		return err == nil
	})
	if err := js.DeleteStream(ctx, "NATSTEST_PROBE"); err != nil {
		t.Fatalf("natstest: delete probe stream: %v", err)
	}
	return out
}

// dialable reports whether addr accepts a TCP connection.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
