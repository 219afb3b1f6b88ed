package main

import (
	"context"
	"log/slog"

	"github.com/relaygw/relay/embeddednats"
)

// natsLogger returns the logger of the embedded NATS server: log's, but
// only warnings and errors unless log is enabled for debug. The server's
// notices (its start-up banner, listeners, JetStream details) are routine;
// with log.level debug they are all logged, with its debug lines.
func natsLogger(log *slog.Logger) *slog.Logger {
	if log.Enabled(context.Background(), slog.LevelDebug) {
		return log
	}
	return slog.New(minLevel{Handler: log.Handler(), min: slog.LevelWarn})
}

// minLevel is a handler that drops records below min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{Handler: h.Handler.WithAttrs(attrs), min: h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{Handler: h.Handler.WithGroup(name), min: h.min}
}

// natsPayloadHeadroom is what a job message adds to its request body: the
// job's fields, the JSON around the body, and the NATS headers.
const natsPayloadHeadroom = 1 << 20

// natsMaxPayload sizes the embedded server's max payload to fit the
// largest request body (max_body_bytes) as a job, plus headroom; at least
// 8 MiB, at most NATS's ceiling (64 MiB).
func natsMaxPayload(maxBodyBytes int64) int32 {
	n := max(maxBodyBytes, 8<<20) + natsPayloadHeadroom
	return int32(min(n, embeddednats.MaxPayload))
}
