package gateway

// This file owns the gateway's spans (OpenTelemetry): one per API request,
// continuing an incoming W3C traceparent, with a child span for each wait
// on a lane ("relay.park"); workers adds the attempts and upstream calls
// beneath them. Spans go to the global tracer provider, a no-op unless
// cmd/relay set one (tracing.otlp_endpoint). Attributes follow the
// OpenTelemetry GenAI semantic conventions (gen_ai.*), with the relay's
// own under relay.*.

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
)

// tracerName names the gateway's tracer.
const tracerName = "github.com/relaygw/relay/gateway"

// traceContext reads an incoming traceparent/tracestate (W3C Trace
// Context), whatever the global propagator is.
var traceContext = propagation.TraceContext{}

// startRequestSpan starts the server span of the request c carries,
// continuing its traceparent.
func startRequestSpan(ctx context.Context, c echo.Context, requestID string) (context.Context, trace.Span) {
	r := c.Request()
	ctx = traceContext.Extract(ctx, propagation.HeaderCarrier(r.Header))
	route := c.Path()
	if route == "" {
		route = r.URL.Path
	}
	return otel.Tracer(tracerName).Start(ctx, r.Method+" "+route,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("http.route", route),
			attribute.String("relay.request_id", requestID),
		))
}

// endRequestSpan records the answer's status on span and ends it.
func endRequestSpan(span trace.Span, status int) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// traceAnswer records what the upstream answer says on the request's span.
func traceAnswer(ctx context.Context, resp *workers.Response) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.String("gen_ai.response.model", resp.UpstreamModel))
}

// traceExchange records a proxied request's outcome on its span: the
// GenAI attributes, and the relay's own (lane, queue wait, attempts).
func traceExchange(ctx context.Context, x *exchange) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(
		attribute.String("gen_ai.operation.name", "chat"),
		attribute.String("gen_ai.request.model", x.route),
		attribute.String("relay.api", x.format.String()),
		attribute.String("relay.key", x.keyName),
		attribute.String("relay.provider", x.provider),
		attribute.String("relay.lane", x.lane.Name),
		attribute.String("relay.mode", x.mode),
		attribute.Int64("relay.queue_wait_ms", x.queued.Milliseconds()),
		attribute.Int("relay.attempts", x.attempts),
		attribute.Bool("relay.stream", x.stream),
	)
	if x.req.Fields.MaxTokens > 0 {
		span.SetAttributes(attribute.Int("gen_ai.request.max_tokens", x.req.Fields.MaxTokens))
	}
	if x.usage.Known {
		span.SetAttributes(attribute.Int("gen_ai.usage.input_tokens", x.usage.Input),
			attribute.Int("gen_ai.usage.output_tokens", x.usage.Output))
	}
	if x.err != nil {
		span.SetStatus(codes.Error, x.err.Error())
	}
}

// startPark logs that x is parked on its lane and starts the park span,
// which endPark ends.
func (s *Server) startPark(x *exchange) {
	ctx := x.c.Request().Context()
	s.log.LogAttrs(ctx, slog.LevelDebug, "parked", slog.String("lane", x.lane.Name),
		slog.String("route", x.route), slog.Int("reparks", x.reparks))
	_, x.park = otel.Tracer(tracerName).Start(ctx, "relay.park",
		trace.WithAttributes(attribute.String("relay.lane", x.lane.Name), attribute.String("gen_ai.request.model", x.route)))
}

// endPark logs and ends x's wait on its lane: waited long, with err when
// no capacity came.
func (s *Server) endPark(x *exchange, waited time.Duration, err error) {
	if x.park == nil {
		return
	}
	attrs := []slog.Attr{slog.String("lane", x.lane.Name), slog.Int64("queue_ms", waited.Milliseconds())}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	s.log.LogAttrs(x.c.Request().Context(), slog.LevelDebug, "left lane", attrs...)
	if x.park.IsRecording() {
		x.park.SetAttributes(attribute.Int64("relay.queue_wait_ms", waited.Milliseconds()))
		if err != nil && !errors.Is(err, context.Canceled) {
			x.park.SetStatus(codes.Error, err.Error())
		}
	}
	x.park.End()
	x.park = nil
}

// startJobPark starts the span of job j's wait on its lane.
func startJobPark(ctx context.Context, j *jobs.Job) trace.Span {
	_, span := otel.Tracer(tracerName).Start(ctx, "relay.park",
		trace.WithAttributes(attribute.String("relay.lane", j.Lane), attribute.String("gen_ai.request.model", j.Model)))
	return span
}

// endJobPark ends a job's wait on its lane: waited long, with err when no
// capacity came.
func endJobPark(span trace.Span, waited time.Duration, err error) {
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64("relay.queue_wait_ms", waited.Milliseconds()))
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}
