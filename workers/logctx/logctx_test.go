package logctx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/relaygw/relay/workers/logctx"
)

func TestHandler(t *testing.T) {
	tests := []struct {
		name  string
		ctx   context.Context
		want  map[string]any
		count int // keys in the line
	}{
		{name: "no attributes", ctx: context.Background(), want: map[string]any{"msg": "m", "own": "x"}},
		{name: "request", ctx: logctx.With(context.Background(), slog.String(logctx.RequestID, "r1")),
			want: map[string]any{logctx.RequestID: "r1", "own": "x"}},
		{name: "request and job", ctx: logctx.With(logctx.With(context.Background(), slog.String(logctx.RequestID, "r1")),
			slog.String(logctx.JobID, "job_1")), want: map[string]any{logctx.RequestID: "r1", logctx.JobID: "job_1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := slog.New(logctx.Handler(slog.NewJSONHandler(&buf, nil))).With("with", 1)
			l.InfoContext(tt.ctx, "m", "own", "x")
			var m map[string]any
			if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if m[k] != v {
					t.Errorf("%s = %v; want %v (%s)", k, m[k], v, strings.TrimSpace(buf.String()))
				}
			}
			if m["with"] != float64(1) {
				t.Errorf("With attribute lost: %s", buf.String())
			}
		})
	}
	if got := logctx.RequestIDOf(logctx.With(context.Background(), slog.String(logctx.RequestID, "r9"))); got != "r9" {
		t.Errorf("RequestIDOf = %q", got)
	}
	if logctx.Handler(logctx.Handler(slog.DiscardHandler)) == nil {
		t.Error("nil handler")
	}
}

// TestModel: a model id is cut to MaxModel bytes on a rune boundary.
func TestModel(t *testing.T) {
	long := strings.Repeat("a", logctx.MaxModel-1) + "é" + "tail"
	tests := []struct{ in, want string }{
		{"claude-sonnet-4-5", "claude-sonnet-4-5"},
		{strings.Repeat("m", logctx.MaxModel), strings.Repeat("m", logctx.MaxModel)},
		{long, strings.Repeat("a", logctx.MaxModel-1)},
	}
	for _, tc := range tests {
		if got := logctx.Model(tc.in); got != tc.want {
			t.Errorf("Model(%.20q...) = %d bytes; want %d", tc.in, len(got), len(tc.want))
		}
	}
}
