package natstest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats"
)

// FreeAddr returns a 127.0.0.1 address with a port that was free a
// moment ago (for servers that must know their peers' ports up front).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
