package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPeek(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		want    Fields
		wantErr string
	}{
		{name: "anthropic", body: `{"model":"claude-sonnet","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			want: Fields{Model: "claude-sonnet", MaxTokens: 1024, Stream: true}},
		{name: "openai with usage", body: `{"messages":[],"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":5}`,
			want: Fields{Model: "gpt-4o", MaxTokens: 5, Stream: true, IncludeUsage: true, HasStreamOptions: true}},
		{name: "nested model ignored", body: `{"metadata":{"model":"x"},"model":"real","tools":[{"model":"y"}]}`,
			want: Fields{Model: "real"}},
		{name: "escaped model", body: `{"model":"a\"b\u00e9"}`, want: Fields{Model: "a\"bé"}},
		{name: "whitespace", body: " \n{ \"model\" : \"m\" , \"stream\" : false }\n", want: Fields{Model: "m"}},
		{name: "stream not bool", body: `{"model":"m","stream":"yes"}`, want: Fields{Model: "m"}},
		{name: "negative max_tokens", body: `{"model":"m","max_tokens":-5}`, want: Fields{Model: "m"}},
		{name: "invalid", body: `{"model":"m"`, wantErr: "not valid JSON"},
		{name: "trailing garbage", body: `{"model":"m"} x`, wantErr: "not valid JSON"},
		{name: "array", body: `[{"model":"m"}]`, wantErr: "JSON object"},
		{name: "no model", body: `{"max_tokens":1}`, wantErr: "model: field required"},
		{name: "empty model", body: `{"model":""}`, wantErr: "model: field required"},
		{name: "model number", body: `{"model":1}`, wantErr: "must be a string"},
		{name: "model twice", body: `{"model":"a","model":"b"}`, wantErr: "more than once"},
		{name: "model twice escaped key", body: `{"model":"a","mod\u0065l":"b"}`, wantErr: "more than once"},
		{name: "empty", body: ``, wantErr: "not valid JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Peek([]byte(tc.body), 0)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Peek(%q) error = %v; want %q", tc.body, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Peek(%q): %v", tc.body, err)
			}
			got.modelStart, got.modelEnd = 0, 0
			if got != tc.want {
				t.Errorf("Peek(%q) = %+v; want %+v", tc.body, got, tc.want)
			}
		})
	}
	if _, err := Peek([]byte(`{}`), 0); !errors.Is(err, ErrNoModel) {
		t.Errorf("Peek({}) = %v; want ErrNoModel", err)
	}
}

func TestRewriteModel(t *testing.T) {
	cases := []struct {
		name, body, model, want string
	}{
		{"rename", `{"model":"a","x":1}`, "claude-sonnet-4-5", `{"model":"claude-sonnet-4-5","x":1}`},
		{"keeps bytes", `{ "x" : [1, 2] , "model" :"a" ,"y":{"model":"z"}}`, "b", `{ "x" : [1, 2] , "model" :"b" ,"y":{"model":"z"}}`},
		{"escapes", `{"model":"a"}`, "q\"\\<\n\xff", `{"model":"q\"\\<\n\ufffd"}`},
		{"escaped original", `{"model":"a\u0062"}`, "c", `{"model":"c"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Peek([]byte(tc.body), 0)
			if err != nil {
				t.Fatal(err)
			}
			got := RewriteModel(nil, []byte(tc.body), f, tc.model)
			if string(got) != tc.want {
				t.Errorf("RewriteModel(%q, %q) = %s; want %s", tc.body, tc.model, got, tc.want)
			}
		})
	}
	t.Run("same model is no copy", func(t *testing.T) {
		body := []byte(`{"model":"a"}`)
		f, _ := Peek(body, 0)
		if got := RewriteModel(nil, body, f, "a"); &got[0] != &body[0] {
			t.Errorf("RewriteModel with the same model copied the body")
		}
	})
}

func TestAskUsage(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"adds stream_options", `{"model":"m","stream":true}`, `{"stream_options":{"include_usage":true},"model":"m","stream":true}`},
		{"leaves stream_options", `{"model":"m","stream":true,"stream_options":{}}`, `{"model":"m","stream":true,"stream_options":{}}`},
		{"leaves non-streams", ` {"model":"m"}`, ` {"model":"m"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Peek([]byte(tc.body), 0)
			if err != nil {
				t.Fatal(err)
			}
			got := AskUsage(nil, []byte(tc.body), f)
			if string(got) != tc.want {
				t.Errorf("AskUsage(%s) = %s; want %s", tc.body, got, tc.want)
			}
			if g, err := Peek(got, 0); err != nil || (f.Stream && !f.HasStreamOptions && !g.IncludeUsage) {
				t.Errorf("Peek(AskUsage) = %+v, %v", g, err)
			}
		})
	}
}

func FuzzPeek(f *testing.F) {
	for _, s := range []string{
		`{"model":"claude-sonnet","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"gpt-4o","stream_options":{"include_usage":true}}`,
		`{"model":"a\"b","model2":"x"}`, `{"model":1}`, `[]`, `{`, `{"model":"m","x":"\ud800"}`,
		`{"model":"m","x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`,
		`{"model":"m","x":"` + strings.Repeat(`\"[`, 200) + `"}`, strings.Repeat(`{"a":`, 300),
	} {
		f.Add([]byte(s), "renamed-model")
	}
	f.Fuzz(func(t *testing.T, body []byte, model string) {
		fields, err := Peek(body, 0)
		if errors.Is(err, ErrTooDeep) != (refDepth(body) > FallbackMaxDepth) {
			t.Fatalf("Peek error %v; reference depth %d", err, refDepth(body))
		}
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("Peek accepted invalid JSON %q", body)
		}
		if model == "" {
			return
		}
		orig := append([]byte(nil), body...)
		out := RewriteModel(nil, body, fields, model)
		if !bytes.Equal(body, orig) {
			t.Fatalf("RewriteModel modified its input")
		}
		again, err := Peek(out, 0)
		if err != nil {
			t.Fatalf("rewritten body %q does not peek: %v", out, err)
		}
		// A new model is written as valid UTF-8; the same model leaves
		// the body as it was.
		wantModel := validUTF8(model)
		if model == fields.Model {
			wantModel = fields.Model
		}
		if again.Model != wantModel {
			t.Fatalf("rewritten model = %q; want %q", again.Model, wantModel)
		}
		if again.Stream != fields.Stream || again.MaxTokens != fields.MaxTokens || again.IncludeUsage != fields.IncludeUsage {
			t.Fatalf("rewrite changed fields: %+v -> %+v", fields, again)
		}
	})
}

var benchBody = []byte(`{"model":"claude-sonnet","max_tokens":1024,"stream":true,"system":"` + strings.Repeat("You are helpful. ", 200) +
	`","messages":[{"role":"user","content":"` + strings.Repeat("hello world ", 500) + `"}],"metadata":{"user_id":"u1"}}`)

func BenchmarkPeek(b *testing.B) {
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Peek(benchBody, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRewriteModel(b *testing.B) {
	f, err := Peek(benchBody, 0)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, len(benchBody)+64)
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		dst = RewriteModel(dst, benchBody, f, "claude-sonnet-4-5-20250929")
	}
}

// validUTF8 replaces each byte of s that is not valid UTF-8 with U+FFFD,
// as AppendString does.
func validUTF8(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
