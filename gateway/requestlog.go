package gateway

// This file owns the request log: one line per request, proxied or to the
// relay's own APIs (jobs, batches).

import (
	"context"
	"log/slog"
	"time"

	"github.com/relaygw/relay/workers/logctx"
	"github.com/relaygw/relay/workers/wire"
)

// requestLine is what a request's log line says. Fields that are empty
// for a kind of request are left out of its line.
type requestLine struct {
	requestID string
	api       string // the API format, or the relay's own API
	method    string // own APIs only, with path
	path      string
	key       string
	// proxied requests only, from route to queued.
	proxied  bool
	route    string
	model    string // the client's; logged when a pattern route served it
	provider string
	lane     string
	stream   bool
	attempts int
	mode     string
	queued   time.Duration

	status   int
	duration time.Duration
	reparks  int
	usage    wire.Usage
	err      error
}

// logRequest writes l: at warn for 5xx answers, else at info.
func (s *Server) logRequest(ctx context.Context, l *requestLine) {
	level := slog.LevelInfo
	if l.status >= 500 {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	if logctx.RequestIDOf(ctx) != l.requestID {
		// The context's attributes (logctx.Handler) name it otherwise.
		attrs = append(attrs, slog.String(logctx.RequestID, l.requestID))
	}
	attrs = append(attrs, slog.String("api", l.api))
	if l.method != "" {
		attrs = append(attrs, slog.String("method", l.method), slog.String("path", l.path))
	}
	attrs = append(attrs, slog.String("key", l.key))
	if l.proxied {
		attrs = append(attrs, slog.String("route", l.route))
		if l.route != "" && l.model != l.route {
			attrs = append(attrs, slog.String("model", logctx.Model(l.model)))
		}
		attrs = append(attrs, slog.String("provider", l.provider),
			slog.String("lane", l.lane), slog.Bool("stream", l.stream))
	}
	attrs = append(attrs, slog.Int("status", l.status))
	if l.proxied {
		attrs = append(attrs, slog.Int("attempts", l.attempts))
	}
	attrs = append(attrs, slog.Float64("duration_ms", float64(l.duration.Microseconds())/1000))
	if l.proxied {
		attrs = append(attrs, slog.String("mode", l.mode), slog.Int64("queue_ms", l.queued.Milliseconds()))
	}
	if l.reparks > 0 {
		attrs = append(attrs, slog.Int("reparks", l.reparks))
	}
	if l.usage.Known {
		attrs = append(attrs, slog.Int("input_tokens", l.usage.Input), slog.Int("output_tokens", l.usage.Output))
	}
	if l.err != nil {
		attrs = append(attrs, slog.String("error", l.err.Error()))
	}
	s.log.LogAttrs(ctx, level, "request", attrs...)
}
