package embeddednats

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"
)

func TestSlogLogger(t *testing.T) {
	tests := []struct {
		name      string
		call      func(*slogLogger)
		wantLevel string
		wantFatal bool
	}{
		{name: "notice", call: func(l *slogLogger) { l.Noticef("msg %d", 1) }, wantLevel: "level=INFO"},
		{name: "warn", call: func(l *slogLogger) { l.Warnf("msg %d", 1) }, wantLevel: "level=WARN"},
		{name: "error", call: func(l *slogLogger) { l.Errorf("msg %d", 1) }, wantLevel: "level=ERROR"},
		{name: "fatal does not exit", call: func(l *slogLogger) { l.Fatalf("msg %d", 1) }, wantLevel: "level=ERROR", wantFatal: true},
		{name: "debug", call: func(l *slogLogger) { l.Debugf("msg %d", 1) }, wantLevel: "level=DEBUG"},
		{name: "trace", call: func(l *slogLogger) { l.Tracef("msg %d", 1) }, wantLevel: "level=DEBUG-4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := newSlogLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: LevelTrace})))
			tt.call(l)
			out := buf.String()
			if !strings.Contains(out, tt.wantLevel+" ") || !strings.Contains(out, `msg="msg 1"`) {
				t.Errorf("log output = %q; want %s and msg=\"msg 1\"", out, tt.wantLevel)
			}
			if !strings.Contains(out, "component=nats-server") {
				t.Errorf("log output = %q; want component=nats-server", out)
			}
			if got := l.fatal() != ""; got != tt.wantFatal {
				t.Errorf("fatal recorded = %v; want %v", got, tt.wantFatal)
			}
		})
	}
}

func TestSlogLoggerLevels(t *testing.T) {
	tests := []struct {
		name      string
		level     slog.Level
		wantDebug bool
		wantTrace bool
		wantLines int // of Debugf+Tracef+Noticef
	}{
		{name: "info", level: slog.LevelInfo, wantLines: 1},
		{name: "debug", level: slog.LevelDebug, wantDebug: true, wantLines: 2},
		{name: "trace", level: LevelTrace, wantDebug: true, wantTrace: true, wantLines: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := newSlogLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tt.level})))
			if l.debug != tt.wantDebug || l.trace != tt.wantTrace {
				t.Errorf("newSlogLogger(level %s) debug, trace = %v, %v; want %v, %v", tt.level, l.debug, l.trace, tt.wantDebug, tt.wantTrace)
			}
			l.Debugf("d")
			l.Tracef("t")
			l.Noticef("n")
			if got := strings.Count(buf.String(), "\n"); got != tt.wantLines {
				t.Errorf("lines logged at level %s = %d; want %d (%q)", tt.level, got, tt.wantLines, buf.String())
			}
		})
	}
}

func TestSlogLoggerDiscard(t *testing.T) {
	l := newSlogLogger(slog.New(slog.DiscardHandler))
	if l.debug || l.trace {
		t.Errorf("discard logger debug, trace = %v, %v; want false, false", l.debug, l.trace)
	}
	l.Fatalf("boom %s", "x")
	if got, want := l.fatal(), "boom x"; got != want {
		t.Errorf("fatal() = %q; want %q", got, want)
	}
}

func TestClientURL(t *testing.T) {
	tests := []struct {
		name string
		addr net.Addr
		want string
	}{
		{name: "loopback v4", addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4222}, want: "nats://127.0.0.1:4222"},
		{name: "unspecified v4", addr: &net.TCPAddr{IP: net.IPv4zero, Port: 4222}, want: "nats://127.0.0.1:4222"},
		{name: "unspecified v6", addr: &net.TCPAddr{IP: net.IPv6unspecified, Port: 4222}, want: "nats://[::1]:4222"},
		{name: "nil ip", addr: &net.TCPAddr{Port: 4222}, want: "nats://127.0.0.1:4222"},
		{name: "not tcp", addr: &net.UnixAddr{Name: "x", Net: "unix"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clientURL(tt.addr); got != tt.want {
				t.Errorf("clientURL(%v) = %q; want %q", tt.addr, got, tt.want)
			}
		})
	}
}

func TestSplitListen(t *testing.T) {
	tests := []struct {
		name     string
		addr     string
		wantHost string
		wantPort int
		wantErr  bool
	}{
		{name: "explicit", addr: "127.0.0.1:4222", wantHost: "127.0.0.1", wantPort: 4222},
		{name: "random port", addr: "127.0.0.1:0", wantHost: "127.0.0.1", wantPort: -1},
		{name: "all interfaces", addr: ":4222", wantHost: "", wantPort: 4222},
		{name: "no port", addr: "127.0.0.1", wantErr: true},
		{name: "named port", addr: "127.0.0.1:nats", wantErr: true},
		{name: "negative port", addr: "127.0.0.1:-1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port, err := splitListen(tt.addr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("splitListen(%q) error = %v; want error %v", tt.addr, err, tt.wantErr)
			}
			if err == nil && (host != tt.wantHost || port != tt.wantPort) {
				t.Errorf("splitListen(%q) = %q, %d; want %q, %d", tt.addr, host, port, tt.wantHost, tt.wantPort)
			}
		})
	}
}
