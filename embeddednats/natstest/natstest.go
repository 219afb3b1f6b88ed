// Package natstest is the repository's shared test-helper package: it
// starts embedded NATS servers with JetStream for tests, and owns the one
// poller every test waits with (Eventually, in eventually.go).
//
// Every helper goes through embeddednats.Start, so tests also exercise the
// production embedding code. Each call starts its own server with a fresh
// temporary store directory and registers shutdown with t.Cleanup; callers
// need not (but may) shut servers down themselves. Servers log nowhere.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats"
)

// shutdownTimeout bounds the shutdown registered with t.Cleanup.
const shutdownTimeout = 10 * time.Second

// The user StartTCP configures with every right on the client port, since
// the port always requires authentication. Connect with [Auth].
const (
	// User is the name of StartTCP's user.
	User = "natstest"
	// Password is the password of StartTCP's user.
	Password = "natstest-password"
)

// Auth returns the nats.go option that logs in as StartTCP's user.
func Auth() nats.Option { return nats.UserInfo(User, Password) }

// Start starts an in-process-only server (no TCP listener) and shuts it
// down when the test ends. Connect to it with Server.Connect.
func Start(t testing.TB) *embeddednats.Server {
	t.Helper()
	return start(t, "")
}

// StartTCP starts a server that also listens on a random 127.0.0.1 port,
// reported by Server.ClientURL, and shuts it down when the test ends.
// Outside clients log in as User with every right (see Auth).
func StartTCP(t testing.TB) *embeddednats.Server {
	t.Helper()
	return StartWith(t, embeddednats.Options{
		Listen: "127.0.0.1:0",
		Users:  []embeddednats.User{{Name: User, Password: Password, Publish: []string{">"}, Subscribe: []string{">"}}},
	})
}

// start runs embeddednats.Start with test defaults and registers shutdown.
func start(t testing.TB, listen string) *embeddednats.Server {
	t.Helper()
	return StartWith(t, embeddednats.Options{Listen: listen})
}

// StartWith starts a server with opts, a fresh temporary StoreDir when
// opts has none, and shuts it down when the test ends.
func StartWith(t testing.TB, opts embeddednats.Options) *embeddednats.Server {
	t.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	s, err := embeddednats.Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("natstest: start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("natstest: shutdown: %v", err)
		}
	})
	return s
}

// JetStream connects to s in-process and returns a JetStream handle. The
// connection is closed when the test ends, before s is shut down if s was
// started by this package earlier in the same test.
func JetStream(t testing.TB, s *embeddednats.Server) jetstream.JetStream {
	t.Helper()
	nc, err := s.Connect()
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return js
}
