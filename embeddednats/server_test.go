package embeddednats_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
)

// roundTrip subscribes on sub, publishes on pub and checks the message
// arrives.
func roundTrip(t *testing.T, sub, pub *nats.Conn) {
	t.Helper()
	s, err := sub.SubscribeSync("relay.test.ping")
	if err != nil {
		t.Fatalf("SubscribeSync: %v", err)
	}
	defer func() { _ = s.Unsubscribe() }()
	if err := sub.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := pub.Publish("relay.test.ping", []byte("pong")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	msg, err := s.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("NextMsg: %v", err)
	}
	if got, want := string(msg.Data), "pong"; got != want {
		t.Errorf("message data = %q; want %q", got, want)
	}
}

func TestStart(t *testing.T) {
	tests := []struct {
		name    string
		start   func(testing.TB) *embeddednats.Server
		wantURL bool
	}{
		{name: "in-process only", start: natstest.Start, wantURL: false},
		{name: "tcp random port", start: natstest.StartTCP, wantURL: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.start(t)
			if !s.Ready() {
				t.Errorf("Ready() = false; want true")
			}
			nc, err := s.Connect()
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer nc.Close()
			if got, want := nc.Opts.Name, embeddednats.ClientName; got != want {
				t.Errorf("connection name = %q; want %q", got, want)
			}
			roundTrip(t, nc, nc)

			url := s.ClientURL()
			if !tt.wantURL {
				if url != "" {
					t.Errorf("ClientURL() = %q; want empty", url)
				}
				return
			}
			if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":0") {
				t.Fatalf("ClientURL() = %q; want nats://127.0.0.1:<port>", url)
			}
			ext, err := nats.Connect(url, natstest.Auth())
			if err != nil {
				t.Fatalf("nats.Connect(%q): %v", url, err)
			}
			defer ext.Close()
			roundTrip(t, ext, nc)
		})
	}
}

func TestJetStreamFileStream(t *testing.T) {
	s := natstest.Start(t)
	js := natstest.JetStream(t, s)
	ctx := t.Context()

	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "TEST",
		Subjects: []string{"test.>"},
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	ack, err := js.Publish(ctx, "test.one", []byte("hello"))
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	msg, err := st.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatalf("GetMsg(%d): %v", ack.Sequence, err)
	}
	if got, want := string(msg.Data), "hello"; got != want {
		t.Errorf("GetMsg(%d) data = %q; want %q", ack.Sequence, got, want)
	}
}

func TestRestartKeepsData(t *testing.T) {
	opts := embeddednats.Options{ServerName: "relay-restart", StoreDir: t.TempDir()}
	payloads := []string{"a", "b", "c"}

	run := func(f func(js jetstream.JetStream)) {
		t.Helper()
		s, err := embeddednats.Start(t.Context(), opts)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}()
		nc, err := s.Connect()
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatalf("jetstream.New: %v", err)
		}
		f(js)
	}

	run(func(js jetstream.JetStream) {
		_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
			Name: "KEEP", Subjects: []string{"keep.>"}, Storage: jetstream.FileStorage,
		})
		if err != nil {
			t.Fatalf("CreateStream: %v", err)
		}
		for _, p := range payloads {
			if _, err := js.Publish(t.Context(), "keep.x", []byte(p)); err != nil {
				t.Fatalf("Publish(%q): %v", p, err)
			}
		}
	})
	run(func(js jetstream.JetStream) {
		st, err := js.Stream(t.Context(), "KEEP")
		if err != nil {
			t.Fatalf("Stream(KEEP) after restart: %v", err)
		}
		for i, want := range payloads {
			seq := uint64(i + 1)
			msg, err := st.GetMsg(t.Context(), seq)
			if err != nil {
				t.Fatalf("GetMsg(%d) after restart: %v", seq, err)
			}
			if got := string(msg.Data); got != want {
				t.Errorf("GetMsg(%d) data = %q; want %q", seq, got, want)
			}
		}
	})
}

func TestShutdown(t *testing.T) {
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		wantErr error
	}{
		{
			name: "live context",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 10*time.Second)
			},
			wantErr: nil,
		},
		{
			name: "cancelled context returns early",
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			wantErr: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := embeddednats.Start(t.Context(), embeddednats.Options{StoreDir: t.TempDir()})
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			ctx, cancel := tt.ctx()
			defer cancel()
			begin := time.Now()
			err = s.Shutdown(ctx)
			// With a done context the shutdown may still have finished
			// first (an idle server stops in microseconds): then nil is
			// the right answer too.
			if (tt.wantErr == nil && err != nil) || (tt.wantErr != nil && err != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("first Shutdown() = %v; want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				if d := time.Since(begin); d > time.Second {
					t.Errorf("first Shutdown() took %s with a done context; want it bounded", d)
				}
			}
			for i := range 2 {
				wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := s.Shutdown(wctx); err != nil {
					t.Errorf("Shutdown() call %d = %v; want nil", i+2, err)
				}
				wcancel()
			}
			if s.Ready() {
				t.Errorf("Ready() after Shutdown = true; want false")
			}
		})
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	jsBlocked := t.TempDir()
	if err := os.WriteFile(filepath.Join(jsBlocked, "jetstream"), []byte("x"), 0o600); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen: %v", err)
	}
	defer busy.Close()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		opts    embeddednats.Options
		wantIs  error  // checked with errors.Is when non-nil
		wantSub string // substring of the error message
	}{
		{name: "empty store dir", opts: embeddednats.Options{}, wantIs: embeddednats.ErrInvalidOptions, wantSub: "store dir is required"},
		{name: "negative ready timeout", opts: embeddednats.Options{StoreDir: dir, ReadyTimeout: -time.Second}, wantIs: embeddednats.ErrInvalidOptions, wantSub: "ready timeout"},
		{name: "negative sync interval", opts: embeddednats.Options{StoreDir: dir, SyncInterval: -time.Second}, wantIs: embeddednats.ErrInvalidOptions, wantSub: "sync interval"},
		{name: "server name with space", opts: embeddednats.Options{StoreDir: dir, ServerName: "re lay"}, wantIs: embeddednats.ErrInvalidOptions, wantSub: "server name"},
		{name: "listen without port", opts: embeddednats.Options{StoreDir: dir, Listen: "127.0.0.1"}, wantIs: embeddednats.ErrInvalidOptions, wantSub: "listen"},
		{name: "listen port out of range", opts: embeddednats.Options{StoreDir: dir, Listen: "127.0.0.1:70000"}, wantIs: embeddednats.ErrInvalidOptions, wantSub: "listen"},
		{name: "store dir under regular file", opts: embeddednats.Options{StoreDir: filepath.Join(file, "js")}, wantSub: "store dir"},
		{name: "jetstream dir is a regular file", opts: embeddednats.Options{StoreDir: jsBlocked}, wantSub: "start server"},
		{name: "listen address in use", opts: embeddednats.Options{StoreDir: t.TempDir(), Listen: busy.Addr().String()}, wantSub: "start server"},
		{name: "cancelled context", ctx: cancelled, opts: embeddednats.Options{StoreDir: dir}, wantIs: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			s, err := embeddednats.Start(ctx, tt.opts)
			if err == nil {
				_ = s.Shutdown(context.Background())
				t.Fatalf("Start(%+v) = nil error; want error", tt.opts)
			}
			t.Logf("Start error: %v", err)
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Start(%+v) = %v; want errors.Is %v", tt.opts, err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("Start(%+v) = %q; want it to contain %q", tt.opts, err, tt.wantSub)
			}
		})
	}
}

// TestNoStdout checks that the server never prints, with or without a
// logger, and that logs reach the logger when one is given. It swaps
// os.Stdout and os.Stderr, so it must not run in parallel.
func TestNoStdout(t *testing.T) {
	tests := []struct {
		name    string
		withLog bool
	}{
		{name: "nil logger", withLog: false},
		{name: "slog logger", withLog: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			opts := embeddednats.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"}
			if tt.withLog {
				opts.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: embeddednats.LevelTrace}))
			}
			out := captureStdio(t, func() {
				s, err := embeddednats.Start(t.Context(), opts)
				if err != nil {
					t.Errorf("Start: %v", err)
					return
				}
				if nc, err := s.Connect(); err == nil {
					roundTrip(t, nc, nc)
					nc.Close()
				} else {
					t.Errorf("Connect: %v", err)
				}
				if err := s.Shutdown(context.Background()); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			})
			if out != "" {
				t.Errorf("server wrote to stdout/stderr: %q", out)
			}
			logs := buf.String()
			if tt.withLog && !strings.Contains(logs, "Starting nats-server") {
				t.Errorf("logger output = %q; want it to contain %q", logs, "Starting nats-server")
			}
			if tt.withLog && !strings.Contains(logs, "level=DEBUG-4") {
				t.Errorf("logger output has no trace records; want some with a trace-enabled logger")
			}
		})
	}
}

// captureStdio runs f with os.Stdout and os.Stderr redirected to a file and
// returns what was written.
func captureStdio(t *testing.T, f func()) string {
	t.Helper()
	tmp, err := os.CreateTemp(t.TempDir(), "stdio")
	if err != nil {
		t.Fatalf("CreateTemp: %v", err)
	}
	defer tmp.Close()
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = tmp, tmp
	func() {
		defer func() { os.Stdout, os.Stderr = stdout, stderr }()
		f()
	}()
	b, err := os.ReadFile(tmp.Name())
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	return string(b)
}
