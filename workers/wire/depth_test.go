package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// refDepth is the reference CheckDepth: the deepest nesting of brackets
// outside strings, one byte at a time, closers at depth 0 ignored.
func refDepth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case (c == ']' || c == '}') && depth > 0:
			depth--
		}
	}
	return deepest
}

// decoderDepth is the nesting of valid JSON as encoding/json's tokenizer
// sees it.
func decoderDepth(t testing.TB, b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // a number too large for float64 is still valid JSON
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return deepest
		}
		if err != nil {
			t.Fatalf("Token(%q): %v", b, err)
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
			deepest = max(deepest, depth)
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
}

func TestCheckDepth(t *testing.T) {
	cases := []struct {
		name string
		body string
		want int // the depth; CheckDepth(body, want) passes, want-1 fails
	}{
		{name: "scalar", body: `"x"`, want: 0},
		{name: "empty object", body: `{}`, want: 1},
		{name: "flat", body: `{"a":[1,2],"b":{"c":3}}`, want: 2},
		{name: "brackets in string", body: `{"a":"[[[[{{{{"}`, want: 1},
		{name: "escaped quote", body: `{"a":"\"[[[["}`, want: 1},
		{name: "escaped backslash", body: `{"a":"\\"}[[`, want: 2},
		{name: "three backslashes", body: `["\\\"[[" , [[]]]`, want: 3},
		{name: "stray closers", body: `]]]]}}}}[[[`, want: 3},
		{name: "unclosed", body: strings.Repeat(`{"a":`, 40), want: 40},
		{name: "mixed", body: strings.Repeat(`[{"a":`, 20) + "1" + strings.Repeat(`}]`, 20), want: 40},
		{name: "unterminated string", body: `["[[[[`, want: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := refDepth([]byte(tc.body)); got != tc.want {
				t.Fatalf("refDepth = %d; want %d", got, tc.want)
			}
			if err := CheckDepth([]byte(tc.body), max(tc.want, 1)); err != nil {
				t.Errorf("CheckDepth(%d) = %v; want nil", tc.want, err)
			}
			if tc.want < 2 {
				return
			}
			err := CheckDepth([]byte(tc.body), tc.want-1)
			var de *DepthError
			if !errors.As(err, &de) || de.Max != tc.want-1 || !errors.Is(err, ErrTooDeep) {
				t.Fatalf("CheckDepth(%d) = %v; want a DepthError", tc.want-1, err)
			}
			if !strings.Contains(err.Error(), "limit of") {
				t.Errorf("error %q does not name the limit", err)
			}
		})
	}
	if err := CheckDepth(bytes.Repeat([]byte("["), FallbackMaxDepth), 0); err != nil {
		t.Errorf("fallback limit: %v", err)
	}
	if err := CheckDepth(bytes.Repeat([]byte("["), FallbackMaxDepth+1), 0); !errors.Is(err, ErrTooDeep) {
		t.Errorf("fallback limit + 1: %v", err)
	}
}

// TestCheckDepthHuge checks a few million levels end quickly and without
// growing the stack.
func TestCheckDepthHuge(t *testing.T) {
	cases := []struct {
		name    string
		body    []byte
		wantErr bool
	}{
		{"arrays", bytes.Repeat([]byte("["), 4<<20), true},
		{"objects", bytes.Repeat([]byte(`{"a":`), 1<<20), true},
		{"escaped in string", append([]byte(`{"x":"`), bytes.Repeat([]byte(`\"[{`), 1<<20)...), false},
		{"backslash runs", append([]byte(`["`), bytes.Repeat([]byte(`\\\\`), 1<<20)...), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDepth(tc.body, 2)
			if (err != nil) != tc.wantErr {
				t.Fatalf("CheckDepth = %v; want error %v", err, tc.wantErr)
			}
		})
	}
}

// FuzzCheckDepth compares CheckDepth, and a DepthScanner fed in two
// chunks, with the reference, and with encoding/json on valid JSON.
func FuzzCheckDepth(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":[1,{"b":"[\"]"}]}`, `"\\"[`, `]]][[[`, `["\\\\\"[[`, `{"a":"\`,
		strings.Repeat("[", 300), strings.Repeat(`{"a":`, 20) + "1" + strings.Repeat("}", 20),
	} {
		f.Add([]byte(s), uint8(4), uint16(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, limit uint8, split uint16) {
		m := int(limit%32) + 1
		want := refDepth(b)
		err := CheckDepth(b, m)
		if (err == nil) != (want <= m) {
			t.Fatalf("CheckDepth(%q, %d) = %v; reference depth %d", b, m, err, want)
		}
		if err != nil && !errors.Is(err, ErrTooDeep) {
			t.Fatalf("CheckDepth error %v is not ErrTooDeep", err)
		}
		at := int(split) % (len(b) + 1)
		s := DepthScanner{Max: m}
		cerr := s.Scan(b[:at])
		if cerr == nil {
			cerr = s.Scan(b[at:])
		}
		if (cerr == nil) != (err == nil) {
			t.Fatalf("chunked at %d: %v; whole: %v (input %q)", at, cerr, err, b)
		}
		if json.Valid(b) {
			if got := decoderDepth(t, b); got != want {
				t.Fatalf("encoding/json depth %d; reference %d (input %q)", got, want, b)
			}
		}
	})
}

// BenchmarkCheckDepth measures the per-request cost of the depth check on
// a typical body and on a bracket-heavy one.
func BenchmarkCheckDepth(b *testing.B) {
	structured := []byte(`{"model":"m","messages":[` + strings.Repeat(`{"role":"user","content":[{"type":"text","text":"hi"}]},`, 2000) +
		`{"role":"user","content":"x"}],"tools":[]}`)
	for _, bc := range []struct {
		name string
		body []byte
	}{
		{"typical", benchBody},
		{"structured", structured},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := CheckDepth(bc.body, 128); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
