package embeddednats_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
)

// deadAddr returns a loopback address that refuses connections.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return addr
}

func TestConnect(t *testing.T) {
	s := natstest.StartTCP(t)
	dead := "nats://" + deadAddr(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		url     string
		wantErr bool
	}{
		{name: "single url", url: s.ClientURL()},
		{name: "seed list with a dead seed", url: dead + "," + s.ClientURL()},
		{name: "unreachable", url: dead, wantErr: true},
		{name: "cancelled context", ctx: cancelled, url: s.ClientURL(), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				c, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				ctx = c
			}
			nc, err := embeddednats.Connect(ctx, tt.url, natstest.Auth())
			if tt.wantErr {
				if err == nil {
					nc.Close()
					t.Fatalf("Connect(%q) = nil error; want error", tt.url)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect(%q): %v", tt.url, err)
			}
			defer nc.Close()
			if got, want := nc.Opts.Name, embeddednats.ClientName; got != want {
				t.Errorf("Connect(%q) name = %q; want %q", tt.url, got, want)
			}
			if got, want := nc.Opts.MaxReconnect, -1; got != want {
				t.Errorf("Connect(%q) MaxReconnect = %d; want %d", tt.url, got, want)
			}
			roundTrip(t, nc, nc)
		})
	}
}
