package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestNATSMaxPayload(t *testing.T) {
	tests := []struct {
		maxBody int64
		want    int32
	}{
		{maxBody: 8, want: 9 << 20},
		{maxBody: 8 << 20, want: 9 << 20},
		{maxBody: 32 << 20, want: 33 << 20},
		{maxBody: 63 << 20, want: 64 << 20},
		{maxBody: 1 << 40, want: 64 << 20},
	}
	for _, tt := range tests {
		if got := natsMaxPayload(tt.maxBody); got != tt.want {
			t.Errorf("natsMaxPayload(%d) = %d; want %d", tt.maxBody, got, tt.want)
		}
	}
}

func TestNATSLogger(t *testing.T) {
	tests := []struct {
		level      string
		wantNotice bool
	}{
		{level: "info", wantNotice: false},
		{level: "warn", wantNotice: false},
		{level: "debug", wantNotice: true},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			var buf bytes.Buffer
			l := natsLogger(newLogger(&buf, tt.level)).With("component", "nats-server")
			l.Info("Starting nats-server")
			l.Warn("a warning")
			l.Log(context.Background(), slog.LevelDebug, "debug line")
			out := buf.String()
			if got := strings.Contains(out, "Starting nats-server"); got != tt.wantNotice {
				t.Errorf("notice logged = %v; want %v\n%s", got, tt.wantNotice, out)
			}
			if !strings.Contains(out, "a warning") {
				t.Errorf("warning not logged:\n%s", out)
			}
		})
	}
}
