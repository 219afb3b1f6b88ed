// Package logctx carries log attributes in a context, so every log line
// about one request or job names it (request_id, job_id) however deep the
// code that writes it: the gateway adds them when a request arrives, the
// job runner when a job runs, and Handler writes them on each record
// logged with that context (slog's ...Context methods and LogAttrs).
package logctx

import (
	"context"
	"log/slog"
)

// Attribute names used across the relay's logs.
const (
	// RequestID names the request id attribute: the client's own
	// x-request-id when it is a sane token, else one the relay made.
	RequestID = "request_id"
	// JobID names the job id attribute.
	JobID = "job_id"
	// BatchID names the message batch id attribute (a batch item's job
	// lines carry it too).
	BatchID = "batch_id"
)

type ctxKey struct{}

// With returns ctx carrying attrs after those ctx already carries.
func With(ctx context.Context, attrs ...slog.Attr) context.Context {
	if len(attrs) == 0 {
		return ctx
	}
	prev := Attrs(ctx)
	all := make([]slog.Attr, 0, len(prev)+len(attrs))
	all = append(append(all, prev...), attrs...)
	return context.WithValue(ctx, ctxKey{}, all)
}

// Attrs returns the attributes ctx carries; the caller must not modify them.
func Attrs(ctx context.Context) []slog.Attr {
	if ctx == nil {
		return nil
	}
	a, _ := ctx.Value(ctxKey{}).([]slog.Attr)
	return a
}

// RequestIDOf returns the request id ctx carries, or "".
func RequestIDOf(ctx context.Context) string {
	for _, a := range Attrs(ctx) {
		if a.Key == RequestID {
			return a.Value.String()
		}
	}
	return ""
}

// Handler wraps h: each record gets the attributes its context carries,
// first among its own.
func Handler(h slog.Handler) slog.Handler {
	if _, ok := h.(*handler); ok {
		return h
	}
	return &handler{h: h}
}

type handler struct{ h slog.Handler }

func (c *handler) Enabled(ctx context.Context, l slog.Level) bool { return c.h.Enabled(ctx, l) }

func (c *handler) Handle(ctx context.Context, r slog.Record) error {
	if attrs := Attrs(ctx); len(attrs) > 0 {
		nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		nr.AddAttrs(attrs...)
		r.Attrs(func(a slog.Attr) bool {
			nr.AddAttrs(a)
			return true
		})
		r = nr
	}
	return c.h.Handle(ctx, r)
}

func (c *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &handler{h: c.h.WithAttrs(attrs)}
}

func (c *handler) WithGroup(name string) slog.Handler {
	return &handler{h: c.h.WithGroup(name)}
}
