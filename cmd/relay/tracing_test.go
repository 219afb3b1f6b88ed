package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace/noop"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats/natstest"
)

// otlpReceiver is a real OTLP/HTTP traces endpoint: it decodes each
// protobuf export request and keeps its spans.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
	bad   []string
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	rc := &otlpReceiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		rc.mu.Lock()
		defer rc.mu.Unlock()
		switch {
		case err != nil:
			rc.bad = append(rc.bad, err.Error())
		case r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf":
			rc.bad = append(rc.bad, r.URL.Path+" "+r.Header.Get("Content-Type"))
		case proto.Unmarshal(b, &req) != nil:
			rc.bad = append(rc.bad, "undecodable export request")
		}
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				rc.spans = append(rc.spans, ss.GetSpans()...)
			}
		}
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// span returns the first span received named name, or nil.
func (rc *otlpReceiver) span(name string) *tracepb.Span {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, s := range rc.spans {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

func spanAttr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// TestSetupTracingExportsAndShutsDown: setupTracing exports spans over
// OTLP/HTTP protobuf to a real receiver, flushes them on shutdown, and
// leaves no goroutine behind.
func TestSetupTracingExportsAndShutsDown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rc := newOTLPReceiver(t)
	defer otel.SetTracerProvider(noop.NewTracerProvider())
	stop, err := setupTracing(context.Background(), configs.Tracing{OTLPEndpoint: rc.URL + "/v1/traces", SampleRatio: 1},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(context.Background(), "unit")
	span.End()
	if err := stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rc.span("unit") == nil {
		t.Fatalf("receiver got no span named unit (bad requests: %v)", rc.bad)
	}
	rc.Close() // before goleak looks
}

// TestSetupTracingOff: without an endpoint nothing is installed.
func TestSetupTracingOff(t *testing.T) {
	before := otel.GetTracerProvider()
	stop, err := setupTracing(context.Background(), configs.Tracing{SampleRatio: 1}, slog.New(slog.DiscardHandler))
	if err != nil || stop(context.Background()) != nil {
		t.Fatal(err)
	}
	if otel.GetTracerProvider() != before {
		t.Error("tracing off changed the global tracer provider")
	}
}

// TestServeTracesToOTLP runs the relay binary with tracing on against a
// real OTLP/HTTP receiver: a request's server span and its upstream
// call's GenAI span arrive, flushed at the latest by the shutdown. Its
// log shows no NATS banner or payload warning.
func TestServeTracesToOTLP(t *testing.T) {
	rc := newOTLPReceiver(t)
	p := newProc(t, relayOpts{grace: "2s", tokenInterval: "1ms"}, "")
	p.writeConfig(p.config([]string{canaryKey}, false) +
		"tracing: {otlp_endpoint: " + rc.URL + "/v1/traces, sample_ratio: 1}\n")
	p.run()
	p.waitReady()
	if code := p.message(canaryKey); code != http.StatusOK {
		t.Fatalf("POST /v1/messages = %d", code)
	}
	p.signal(syscall.SIGTERM)
	if code := p.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	natstest.Eventually(t, 5*time.Second, "spans at the receiver", func() bool {
		return rc.span("POST /v1/messages") != nil
	})
	srv := rc.span("POST /v1/messages")
	if got := spanAttr(srv, "gen_ai.request.model"); got != "claude-sonnet" {
		t.Errorf("server span gen_ai.request.model %q; want claude-sonnet", got)
	}
	call := rc.span("chat claude-sonnet-4-5")
	if call == nil {
		t.Fatalf("no upstream call span (bad requests: %v)", rc.bad)
	}
	if got := spanAttr(call, "gen_ai.provider.name"); got != "anthropic" {
		t.Errorf("upstream span gen_ai.provider.name %q; want anthropic", got)
	}
	if string(call.GetTraceId()) != string(srv.GetTraceId()) {
		t.Error("upstream span not in the request's trace")
	}
	logs := p.stderr.String()
	for _, bad := range []string{"Maximum payloads", "Starting nats-server", `"component":"nats-server","level":"INFO"`} {
		if strings.Contains(logs, bad) {
			t.Errorf("log holds %q:\n%s", bad, logs)
		}
	}
	for _, l := range p.logLines() {
		if l["component"] == "nats-server" && (l["level"] == "INFO" || l["level"] == "DEBUG") {
			t.Errorf("NATS logged below warn: %v", l)
		}
	}
}
