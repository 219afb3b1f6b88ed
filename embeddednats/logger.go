package embeddednats

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// LevelTrace is the slog level nats-server trace logs (protocol traffic)
// are written at. Trace logs are produced only when the logger in
// Options.Logger is enabled for this level.
const LevelTrace = slog.LevelDebug - 4

var _ server.Logger = (*slogLogger)(nil)

// payloadWarning starts nats-server's start-up warning about a max
// payload over 8 MB, which the relay needs for large request bodies.
const payloadWarning = "Maximum payloads over "

// slogLogger adapts a *slog.Logger to nats-server's server.Logger. Fatalf
// logs at error level and never exits the process; the last fatal message is
// kept so that Start can report why the server did not come up. It is safe
// for concurrent use.
type slogLogger struct {
	l     *slog.Logger
	debug bool
	trace bool

	mu        sync.Mutex
	lastFatal string
	writeErr  string // the first store write error since JetStream (re)started
}

// newSlogLogger wraps l. Debug and trace are enabled only if l is enabled for
// the matching level.
func newSlogLogger(l *slog.Logger) *slogLogger {
	l = l.With(slog.String("component", "nats-server"))
	ctx := context.Background()
	return &slogLogger{
		l:     l,
		debug: l.Enabled(ctx, slog.LevelDebug),
		trace: l.Enabled(ctx, LevelTrace),
	}
}

// log formats and writes one record if l is enabled for level.
func (sl *slogLogger) log(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if !sl.l.Enabled(ctx, level) {
		return
	}
	sl.l.Log(ctx, level, fmt.Sprintf(format, v...))
}

// Noticef logs at info level.
func (sl *slogLogger) Noticef(format string, v ...any) { sl.log(slog.LevelInfo, format, v) }

// Warnf logs at warn level.
func (sl *slogLogger) Warnf(format string, v ...any) {
	if strings.HasPrefix(format, payloadWarning) {
		// The relay sizes the payload to its largest request body on
		// purpose (Options.MaxPayload): not a problem to warn about.
		sl.log(slog.LevelDebug, format, v)
		return
	}
	sl.noteWriteErr(format, v)
	sl.log(slog.LevelWarn, format, v)
}

// Errorf logs at error level.
func (sl *slogLogger) Errorf(format string, v ...any) {
	sl.noteWriteErr(format, v)
	sl.log(slog.LevelError, format, v)
}

// Debugf logs at debug level.
func (sl *slogLogger) Debugf(format string, v ...any) { sl.log(slog.LevelDebug, format, v) }

// Tracef logs at LevelTrace.
func (sl *slogLogger) Tracef(format string, v ...any) { sl.log(LevelTrace, format, v) }

// Fatalf logs at error level with fatal=true and records the message. It
// does not exit: only main may end the process.
func (sl *slogLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	sl.mu.Lock()
	sl.lastFatal = msg
	sl.mu.Unlock()
	sl.l.LogAttrs(context.Background(), slog.LevelError, msg, slog.Bool("fatal", true))
}

// fatal returns the last message passed to Fatalf, or "".
func (sl *slogLogger) fatal() string {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.lastFatal
}

// writeErrMarks are what nats-server's log lines about failed store writes
// contain (a stream's filestore then refuses every later write until
// JetStream restarts; a full disk may also disable JetStream).
var writeErrMarks = []string{"write error", "no space left", "out of space", "permission denied while writing",
	"disabling JetStream"}

// noteWriteErr keeps the first store write error the server logs.
func (sl *slogLogger) noteWriteErr(format string, v []any) {
	msg := fmt.Sprintf(format, v...)
	for _, m := range writeErrMarks {
		if strings.Contains(msg, m) {
			sl.mu.Lock()
			if sl.writeErr == "" {
				sl.writeErr = msg
			}
			sl.mu.Unlock()
			return
		}
	}
}

// storeWriteErr returns the write error noted, or "".
func (sl *slogLogger) storeWriteErr() string {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.writeErr
}

// clearWriteErr forgets the write error noted (JetStream restarts).
func (sl *slogLogger) clearWriteErr() {
	sl.mu.Lock()
	sl.writeErr = ""
	sl.mu.Unlock()
}
