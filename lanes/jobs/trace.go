package jobs

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing: a job is traced from its submission to its callback. The
// submission's W3C trace context is stored in the job message, so the run
// ("relay.job.run") and each callback attempt ("relay.job.callback"),
// on whichever relay executes them, continue the submitter's trace. Spans
// go to the global tracer provider, a no-op unless cmd/relay set one
// (tracing.otlp_endpoint).

// tracerName names the tracer of this package.
const tracerName = "github.com/relaygw/relay/lanes/jobs"

// traceContext is the propagator for stored trace contexts: always W3C
// Trace Context, whatever the global propagator is.
var traceContext = propagation.TraceContext{}

// injectTrace returns ctx's trace context as a carrier to store, or nil
// when ctx has no valid span context.
func injectTrace(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c
}

// extractTrace returns ctx continuing the stored trace context carrier.
func extractTrace(ctx context.Context, carrier map[string]string) context.Context {
	if len(carrier) == 0 {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier(carrier))
}

// startRun starts the span of one run of the job m.
func startRun(ctx context.Context, m *message) (context.Context, trace.Span) {
	return otel.Tracer(tracerName).Start(extractTrace(ctx, m.Trace), "relay.job.run",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("relay.job_id", m.ID),
			attribute.String("relay.request_id", m.RequestID),
			attribute.String("relay.lane", m.Lane),
			attribute.String("gen_ai.request.model", m.Model),
		))
}

// startCallback starts the span of one callback delivery attempt.
func startCallback(ctx context.Context, cb *callbackMsg, attempt int) (context.Context, trace.Span) {
	return otel.Tracer(tracerName).Start(extractTrace(ctx, cb.Trace), "relay.job.callback",
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("relay.job_id", cb.ID),
			attribute.String("relay.request_id", cb.RequestID),
			attribute.Int("relay.callback.attempt", attempt),
		))
}

// endCallback records a callback attempt's result on span and ends it.
func endCallback(span trace.Span, res *CallbackResult) {
	span.SetAttributes(attribute.String("relay.callback.outcome", res.Outcome))
	if res.Status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.Status))
	}
	if res.Outcome != CallbackDelivered {
		msg := res.Outcome
		if res.Err != nil {
			msg = res.Err.Error()
		}
		span.SetStatus(codes.Error, msg)
	}
	span.End()
}
