package gateway_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/simupstream"
)

// recordSpans makes the global tracer provider record into an in-memory
// exporter for the rest of the test.
func recordSpans(t *testing.T) *tracetest.InMemoryExporter {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = tp.Shutdown(context.Background())
	})
	return exp
}

// spansOf returns the ended spans of trace id, by name.
func spansOf(exp *tracetest.InMemoryExporter, id trace.TraceID) map[string][]tracetest.SpanStub {
	out := map[string][]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() == id {
			out[s.Name] = append(out[s.Name], s)
		}
	}
	return out
}

// attrs returns a span's attributes by key.
func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

// TestTracingParkedRequest: a request arriving with a traceparent, parked
// and then served, is one trace continuing the caller's: a server span
// with GenAI and relay attributes, a park span, an attempt span and the
// upstream call's client span, whose context went upstream.
func TestTracingParkedRequest(t *testing.T) {
	exp := recordSpans(t)
	r := newRelay(t, laneSetup(300*time.Millisecond)...)
	a := anthropicHeaders(canaryKey)
	first := r.postAsync(context.Background(), "first", "/v1/messages", a, claudeBody)
	natstest.Eventually(t, 5*time.Second, "the first request upstream", func() bool { return r.Anthropic.Stats().InFlight == 1 })
	const tid, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	b := anthropicHeaders(canaryKey)
	b["traceparent"] = "00-" + tid + "-" + parent + "-01"
	rep := recvReply(t, r.postAsync(context.Background(), "parked", "/v1/messages", b, claudeBody))
	recvReply(t, first)
	if rep.status != http.StatusOK || rep.header.Get("X-Relay-Queue-Ms") == "0" {
		t.Fatalf("parked request: %d, queue %s ms; want 200 after parking", rep.status, rep.header.Get("X-Relay-Queue-Ms"))
	}
	id, _ := trace.TraceIDFromHex(tid)
	var spans map[string][]tracetest.SpanStub
	natstest.Eventually(t, 5*time.Second, "the request's spans", func() bool {
		spans = spansOf(exp, id)
		return len(spans["POST /v1/messages"]) == 1
	})
	srv := spans["POST /v1/messages"][0]
	if srv.Parent.SpanID().String() != parent || srv.SpanKind != trace.SpanKindServer {
		t.Errorf("server span parent %s kind %v; want the caller's %s, server", srv.Parent.SpanID(), srv.SpanKind, parent)
	}
	sa := attrs(srv)
	for k, want := range map[attribute.Key]string{"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet",
		"relay.lane": "interactive", "relay.mode": "queued"} {
		if got := sa[k].AsString(); got != want {
			t.Errorf("server span %s = %q; want %q", k, got, want)
		}
	}
	if sa["gen_ai.response.model"].AsString() == "" || sa["gen_ai.usage.output_tokens"].AsInt64() <= 0 ||
		sa["relay.queue_wait_ms"].AsInt64() <= 0 || sa["http.response.status_code"].AsInt64() != 200 {
		t.Errorf("server span attributes %v; want response model, output tokens, queue wait and status", sa)
	}
	park, att := spans["relay.park"], spans["relay.attempt"]
	if len(park) != 1 || park[0].Parent.SpanID() != srv.SpanContext.SpanID() {
		t.Fatalf("park spans %v; want one child of the server span", park)
	}
	if len(att) != 1 || att[0].Parent.SpanID() != srv.SpanContext.SpanID() {
		t.Fatalf("attempt spans %d; want one child of the server span", len(att))
	}
	var call tracetest.SpanStub
	for name, ss := range spans {
		if len(name) > 5 && name[:5] == "chat " {
			call = ss[0]
		}
	}
	ca := attrs(call)
	if call.Parent.SpanID() != att[0].SpanContext.SpanID() || call.SpanKind != trace.SpanKindClient ||
		ca["gen_ai.provider.name"].AsString() != "anthropic" || ca["gen_ai.usage.input_tokens"].AsInt64() <= 0 {
		t.Errorf("upstream span %q kind %v attrs %v; want a client child of the attempt with GenAI attributes", call.Name, call.SpanKind, ca)
	}
	// The upstream got the client span's context.
	want := "00-" + tid + "-" + call.SpanContext.SpanID().String() + "-01"
	var sent bool
	for _, u := range r.Anthropic.Requests() {
		sent = sent || u.Header.Get("Traceparent") == want
	}
	if !sent {
		t.Errorf("no upstream call with traceparent %s", want)
	}
}

// TestTracingJob: a job is traced from its submission to its callback, in
// the submitter's trace: the run, its wait on the lane, the attempt and
// the upstream call, and the callback delivery.
func TestTracingJob(t *testing.T) {
	exp := recordSpans(t)
	hooks := make(chan http.Header, 1)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hooks <- r.Header.Clone()
	}))
	t.Cleanup(rcv.Close)
	r := newRelay(t, withUpstreams(simupstream.Options{Record: 16}), withLanes(100),
		withJobs(jobs.Options{Workers: 1, CallbackWorkers: 1}))
	const tid = "0af7651916cd43dd8448eb211c80319c"
	code, _, j := r.doJSON(t, "POST", "/v1/jobs", canaryKey, map[string]string{"traceparent": "00-" + tid + "-b7ad6b7169203331-01"},
		`{"endpoint":"/v1/messages","body":`+jobBody+`,"callback_url":"`+rcv.URL+`/hook"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs = %d %v", code, j)
	}
	select {
	case <-hooks:
	case <-time.After(20 * time.Second):
		t.Fatal("no callback")
	}
	id, _ := trace.TraceIDFromHex(tid)
	var spans map[string][]tracetest.SpanStub
	natstest.Eventually(t, 10*time.Second, "the job's spans", func() bool {
		spans = spansOf(exp, id)
		return len(spans["relay.job.callback"]) == 1 && len(spans["relay.job.run"]) == 1
	})
	for _, name := range []string{"POST /v1/jobs", "relay.job.run", "relay.park", "relay.attempt", "relay.job.callback"} {
		if len(spans[name]) == 0 {
			t.Errorf("no %s span in the job's trace; spans: %v", name, keys(spans))
		}
	}
	run := spans["relay.job.run"][0]
	if run.Parent.SpanID() != spans["POST /v1/jobs"][0].SpanContext.SpanID() {
		t.Errorf("run span's parent is not the submission's span")
	}
	if got := attrs(run)["relay.job_id"].AsString(); got != j["id"] {
		t.Errorf("run span relay.job_id %q; want %v", got, j["id"])
	}
	if got := attrs(spans["relay.job.callback"][0])["relay.callback.outcome"].AsString(); got != jobs.CallbackDelivered {
		t.Errorf("callback span outcome %q; want delivered", got)
	}
}

func keys(m map[string][]tracetest.SpanStub) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestTracePropagatedUpstream: a caller's trace context goes upstream
// whenever it is valid, as W3C Trace Context and OpenTelemetry propagate
// it, for a request and for a job (whose upstream call gets no client
// headers, only the stored trace context): an unsampled one (flags 00)
// with tracing on continues in the same trace, still unsampled, under the
// relay's upstream span; with tracing off (a no-op tracer provider) the
// incoming traceparent and tracestate reach the upstream unchanged.
func TestTracePropagatedUpstream(t *testing.T) {
	const tid, parent, state = "5cf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8", "vendor=opaque"
	tests := []struct {
		name    string
		job     bool
		tracing bool
		flags   string
		// exact: the upstream gets the incoming traceparent as is (else the
		// same trace and flags with the relay's own span id).
		exact bool
	}{
		{name: "request unsampled, tracing on", tracing: true, flags: "00"},
		{name: "request unsampled, tracing off", flags: "00", exact: true},
		{name: "request sampled, tracing off", flags: "01", exact: true},
		{name: "job unsampled, tracing on", job: true, tracing: true, flags: "00"},
		{name: "job unsampled, tracing off", job: true, flags: "00", exact: true},
		{name: "job sampled, tracing off", job: true, flags: "01", exact: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var exp *tracetest.InMemoryExporter
			if tt.tracing {
				exp = recordSpans(t)
			} else {
				otel.SetTracerProvider(noop.NewTracerProvider())
			}
			opts := []relayOption{withUpstreams(simupstream.Options{Record: 16})}
			if tt.job {
				opts = append(opts, withLanes(100), withJobs(jobs.Options{Workers: 1}))
			}
			r := newRelay(t, opts...)
			incoming := "00-" + tid + "-" + parent + "-" + tt.flags
			h := anthropicHeaders(canaryKey)
			h["traceparent"], h["tracestate"] = incoming, state
			if tt.job {
				code, _, j := r.doJSON(t, "POST", "/v1/jobs", canaryKey, map[string]string{"traceparent": incoming, "tracestate": state},
					`{"endpoint":"/v1/messages","body":`+jobBody+`}`)
				if code != http.StatusAccepted {
					t.Fatalf("POST /v1/jobs = %d %v; want 202", code, j)
				}
				natstest.Eventually(t, 10*time.Second, "the job's upstream call", func() bool { return len(r.Anthropic.Requests()) > 0 })
			} else if rep := recvReply(t, r.postAsync(context.Background(), tt.name, "/v1/messages", h, claudeBody)); rep.status != http.StatusOK {
				t.Fatalf("POST /v1/messages = %d; want 200", rep.status)
			}
			up := r.Anthropic.Requests()
			if len(up) != 1 {
				t.Fatalf("%d upstream requests; want 1", len(up))
			}
			got := up[0].Header.Get("Traceparent")
			parts := strings.Split(got, "-")
			switch {
			case tt.exact && got != incoming:
				t.Errorf("upstream traceparent %q; want the incoming %q", got, incoming)
			case len(parts) != 4 || parts[1] != tid || parts[3] != tt.flags:
				t.Errorf("upstream traceparent %q; want trace %s with flags %s", got, tid, tt.flags)
			case !tt.exact && parts[2] == parent:
				t.Errorf("upstream traceparent %q has the caller's span id; want the relay's upstream span", got)
			}
			if got := up[0].Header.Get("Tracestate"); got != state {
				t.Errorf("upstream tracestate %q; want %q", got, state)
			}
			if exp != nil {
				id, _ := trace.TraceIDFromHex(tid)
				if s := spansOf(exp, id); len(s) != 0 {
					t.Errorf("unsampled trace exported spans %v; want none", keys(s))
				}
			}
		})
	}
}
