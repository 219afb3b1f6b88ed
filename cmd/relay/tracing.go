package main

// Tracing: the OpenTelemetry tracer provider, set up from the tracing
// block of the configuration at start (not on reload) and shut down,
// flushing the spans it holds, last of everything on exit. The gateway,
// workers and lanes/jobs start their spans on the global provider, which
// stays a no-op when tracing is off.

import (
	"context"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/relaygw/relay/configs"
)

// setupTracing installs the global tracer provider that c asks for: spans
// batched and exported over OTLP/HTTP to c.OTLPEndpoint, new traces
// sampled at c.SampleRatio and a caller's traceparent followed. With no
// endpoint it changes nothing. The returned function flushes and stops
// the exporter.
func setupTracing(ctx context.Context, c configs.Tracing, log *slog.Logger) (func(context.Context) error, error) {
	if c.OTLPEndpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(c.OTLPEndpoint))
	if err != nil {
		return nil, fmt.Errorf("tracing: otlp exporter: %w", err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", "relay"),
		attribute.String("service.version", version),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
	)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing export failed", "error", err)
	}))
	log.Info("tracing on", "otlp_endpoint", c.OTLPEndpoint, "sample_ratio", c.SampleRatio)
	return func(ctx context.Context) error {
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("tracing: shutdown: %w", err)
		}
		return nil
	}, nil
}
