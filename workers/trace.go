package workers

// This file owns the spans (OpenTelemetry) and log lines of upstream
// calls: per attempt an internal "relay.attempt" span and, beneath it, a
// client span for the upstream call named and attributed after the GenAI
// semantic conventions ("chat <model>", gen_ai.*), whose context goes
// upstream as traceparent, sampled or not. Spans go to the global tracer
// provider, a no-op unless cmd/relay set one.

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/relaygw/relay/workers/wire"
)

// tracerName names the workers' tracer.
const tracerName = "github.com/relaygw/relay/workers"

// traceContext writes traceparent/tracestate upstream (W3C Trace Context).
var traceContext = propagation.TraceContext{}

// attemptTrace is one attempt's spans and start.
type attemptTrace struct {
	attempt, upstream trace.Span
	start             time.Time
	n                 int
}

// providerName is the gen_ai.provider.name of a provider of format f.
func providerName(f Format) string {
	if f == FormatAnthropic {
		return "anthropic"
	}
	return "openai"
}

// startAttempt starts attempt n's spans for a call of t; the returned
// context carries the upstream call's span.
func startAttempt(ctx context.Context, req *Request, t *target, n int) (context.Context, *attemptTrace) {
	tr := otel.Tracer(tracerName)
	at := &attemptTrace{start: time.Now(), n: n}
	ctx, at.attempt = tr.Start(ctx, "relay.attempt", trace.WithAttributes(
		attribute.String("relay.provider", t.ProviderName),
		attribute.Int("relay.attempt", n),
	))
	attrs := []attribute.KeyValue{
		attribute.String("gen_ai.operation.name", "chat"),
		attribute.String("gen_ai.provider.name", providerName(t.Format)),
		attribute.String("gen_ai.request.model", t.Model),
		attribute.String("relay.provider", t.ProviderName),
		attribute.Bool("relay.stream", req.Fields.Stream),
	}
	if req.Fields.MaxTokens > 0 {
		attrs = append(attrs, attribute.Int("gen_ai.request.max_tokens", req.Fields.MaxTokens))
	}
	ctx, at.upstream = tr.Start(ctx, "chat "+t.Model, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return ctx, at
}

// upstreamHeader returns h with the traceparent and tracestate of ctx's
// span context whenever it is valid (a copy: h is shared by the request's
// attempts), else h. As W3C Trace Context and OpenTelemetry propagate: a
// span that is not sampled passes on its context with the sampled flag
// off (00), and with tracing off (a no-op tracer provider) the span
// context is the caller's, so its traceparent and tracestate go upstream
// unchanged.
func upstreamHeader(ctx context.Context, h http.Header) http.Header {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return h
	}
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	traceContext.Inject(ctx, propagation.HeaderCarrier(out))
	return out
}

// endAttempt logs the attempt (a failure at warn, unless the client went
// away or the request itself was invalid; an answer at debug) and ends its
// spans; a stream's upstream span ends with the stream.
func (r *Router) endAttempt(ctx context.Context, at *attemptTrace, resp *Response, fail *Failure) {
	ms := float64(time.Since(at.start).Microseconds()) / 1000
	if fail != nil {
		if ctx.Err() == nil && fail.Kind != FailInvalidRequest {
			r.log.LogAttrs(ctx, slog.LevelWarn, "upstream attempt failed",
				slog.Int("attempt", at.n), slog.String("provider", fail.Provider), slog.String("kind", fail.Kind.String()),
				slog.Int("status", fail.Status), slog.Float64("duration_ms", ms), slog.String("error", fail.Err.Error()))
		}
		for _, s := range []trace.Span{at.upstream, at.attempt} {
			if fail.Status != 0 {
				s.SetAttributes(attribute.Int("http.response.status_code", fail.Status))
			}
			s.SetAttributes(attribute.String("error.type", fail.Kind.String()))
			s.SetStatus(codes.Error, fail.Err.Error())
			s.End()
		}
		return
	}
	r.log.LogAttrs(ctx, slog.LevelDebug, "upstream attempt",
		slog.Int("attempt", at.n), slog.String("provider", resp.Provider), slog.Int("status", resp.StatusCode),
		slog.Float64("duration_ms", ms))
	for _, s := range []trace.Span{at.upstream, at.attempt} {
		s.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode),
			attribute.String("gen_ai.response.model", resp.UpstreamModel))
	}
	at.attempt.End()
	if resp.Stream == nil {
		endUpstream(at.upstream, resp.Usage)
		return
	}
	done := resp.Stream.onDone
	resp.Stream.onDone = func(u wire.Usage, broken bool) {
		if done != nil {
			done(u, broken)
		}
		if broken {
			at.upstream.SetStatus(codes.Error, "stream broken")
		}
		endUpstream(at.upstream, u)
	}
}

// endUpstream records usage on the upstream call's span and ends it.
func endUpstream(span trace.Span, u wire.Usage) {
	if u.Known {
		span.SetAttributes(attribute.Int("gen_ai.usage.input_tokens", u.Input),
			attribute.Int("gen_ai.usage.output_tokens", u.Output))
	}
	span.End()
}
