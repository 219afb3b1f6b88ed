package jobs

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// TestJobRefAttrs: a line about a job names it job_id, with request_id and
// batch_id only when the job has them, each once, before the line's own.
func TestJobRefAttrs(t *testing.T) {
	tests := []struct {
		name string
		ref  jobRef
		want map[string]any
	}{
		{name: "job only", ref: (&Job{ID: "job_1"}).ref(), want: map[string]any{"job_id": "job_1"}},
		{name: "with request", ref: (&message{ID: "job_2", RequestID: "r2"}).ref(),
			want: map[string]any{"job_id": "job_2", "request_id": "r2"}},
		{name: "batch item", ref: (&callbackMsg{ID: "job_3", BatchID: "msgbatch_3"}).ref(),
			want: map[string]any{"job_id": "job_3", "batch_id": "msgbatch_3"}},
		{name: "all", ref: (&Job{ID: "job_4", RequestID: "r4", BatchID: "msgbatch_4"}).ref(),
			want: map[string]any{"job_id": "job_4", "request_id": "r4", "batch_id": "msgbatch_4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			slog.New(slog.NewJSONHandler(&buf, nil)).Warn("m", tt.ref.attrs("error", "boom")...)
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %v; want %v (%s)", k, got[k], v, strings.TrimSpace(buf.String()))
				}
			}
			for _, k := range []string{"request_id", "batch_id"} {
				if _, ok := tt.want[k]; !ok && got[k] != nil {
					t.Errorf("%s = %v; want none", k, got[k])
				}
			}
			if got["error"] != "boom" || strings.Index(buf.String(), `"job_id"`) > strings.Index(buf.String(), `"error"`) {
				t.Errorf("line %s; want job_id first, then the line's own error", strings.TrimSpace(buf.String()))
			}
		})
	}
}
