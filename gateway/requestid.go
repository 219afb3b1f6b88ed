package gateway

// This file owns a request's id and the context every log line and span
// about it is written with (requestContext, the first middleware).

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/logctx"
)

// maxRequestIDLen bounds a client's own x-request-id.
const maxRequestIDLen = 128

// saneRequestID reports whether a client's x-request-id may be kept: 1 to
// 128 characters of [A-Za-z0-9._:-], so it is safe in headers, logs and
// JSON and cannot forge log fields or split headers.
func saneRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// requestIDFor returns the id of r: the client's own x-request-id when it
// is sane (one value only), else a fresh one.
func requestIDFor(r *http.Request) string {
	if v := r.Header["X-Request-Id"]; len(v) == 1 && saneRequestID(v[0]) {
		return v[0]
	}
	return newRequestID()
}

// requestIDOf returns the id requestContext gave c's request (a fresh one
// for a request that did not pass it).
func requestIDOf(c echo.Context) string {
	if id := logctx.RequestIDOf(c.Request().Context()); id != "" {
		return id
	}
	return requestIDFor(c.Request())
}

// untracked are the paths of probes and scrapes: no request id, log
// context or span.
var untracked = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// requestContext starts every API request: it settles the request's id
// and puts it in the request's context, so every log line about the
// request (attempts, retries, parking) carries it, and starts the
// request's span (tracing.go), which it ends with the answer's status.
// Errors a handler returns are answered here, so the span sees them.
func (s *Server) requestContext(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if untracked[r.URL.Path] {
			return next(c)
		}
		id := requestIDFor(r)
		ctx := logctx.With(r.Context(), slog.String(logctx.RequestID, id))
		ctx, span := startRequestSpan(ctx, c, id)
		c.SetRequest(r.WithContext(ctx))
		if err := next(c); err != nil {
			c.Error(err)
		}
		endRequestSpan(span, c.Response().Status)
		return nil
	}
}

// jobContext returns ctx naming job j in every log line (job_id, the
// request_id of its submission and, for a batch item, batch_id), and the
// headers its upstream calls start with: the submission's x-request-id.
func jobContext(ctx context.Context, j *jobs.Job) (context.Context, http.Header) {
	h := http.Header{}
	attrs := make([]slog.Attr, 0, 3)
	if j.RequestID != "" {
		attrs = append(attrs, slog.String(logctx.RequestID, j.RequestID))
		h["X-Request-Id"] = []string{j.RequestID}
	}
	attrs = append(attrs, slog.String(logctx.JobID, j.ID))
	if j.BatchID != "" {
		attrs = append(attrs, slog.String(logctx.BatchID, j.BatchID))
	}
	return logctx.With(ctx, attrs...), h
}
