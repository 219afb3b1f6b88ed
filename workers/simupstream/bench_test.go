package simupstream_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/relaygw/relay/workers/simupstream"
)

// discardWriter is a minimal http.ResponseWriter and http.Flusher, so the
// benchmark measures the handler rather than a recorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (d *discardWriter) Header() http.Header { return d.h }

func (d *discardWriter) Write(b []byte) (int, error) {
	d.n += len(b)
	return len(b), nil
}

func (d *discardWriter) WriteHeader(status int) { d.status = status }

func (d *discardWriter) Flush() {}

// rewindBody is a request body that can be read again after Reset.
type rewindBody struct{ bytes.Reader }

func (*rewindBody) Close() error { return nil }

func BenchmarkHandler(b *testing.B) {
	// A realistic prompt: a system prompt and a few turns, about 2 KB.
	turn := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 10)
	anthropic := `{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"You are helpful. ` + turn + `",` +
		`"messages":[{"role":"user","content":"` + turn + `"},{"role":"assistant","content":[{"type":"text","text":"` + turn + `"}]},` +
		`{"role":"user","content":"` + turn + `"}]}`
	openai := `{"model":"gpt-4o","max_completion_tokens":1024,"messages":[{"role":"system","content":"You are helpful. ` + turn + `"},` +
		`{"role":"user","content":"` + turn + `"},{"role":"assistant","content":"` + turn + `"},{"role":"user","content":"` + turn + `"}]}`
	streamOf := func(body string) string {
		return strings.Replace(body, `{`, `{"stream":true,"stream_options":{"include_usage":true},`, 1)
	}
	tests := []struct {
		name, path, body string
	}{
		{"anthropic", "/v1/messages", anthropic},
		{"openai", "/v1/chat/completions", openai},
		{"anthropic-stream", "/v1/messages", streamOf(anthropic)},
		{"openai-stream", "/v1/chat/completions", streamOf(openai)},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			s := simupstream.New(simupstream.Options{})
			defer func() {
				if err := s.Close(); err != nil {
					b.Errorf("Close: %v", err)
				}
			}()
			h := s.Handler()
			body := []byte(tc.body)
			rb := &rewindBody{}
			req, err := http.NewRequest(http.MethodPost, "http://sim"+tc.path, rb)
			if err != nil {
				b.Fatalf("NewRequest: %v", err)
			}
			req.Header.Set("Content-Type", "application/json")
			w := &discardWriter{h: make(http.Header)}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				rb.Reset(body)
				clear(w.h)
				h.ServeHTTP(w, req)
			}
			if w.status != http.StatusOK || w.n == 0 {
				b.Fatalf("reply = %d, %d bytes; want 200", w.status, w.n)
			}
		})
	}
}
