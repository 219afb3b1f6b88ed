package translate

import (
	"encoding/json"
	"testing"
)

func TestAppendString(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{name: "plain", in: "hello"},
		{name: "empty", in: ""},
		{name: "quotes and backslash", in: `say "hi" \ bye`},
		{name: "control characters", in: "a\nb\rc\td\x00e\x1f"},
		{name: "unicode", in: "héllo 世界 🎉"},
		{name: "invalid utf8", in: "a\xffb\xc3"},
		{name: "line separators", in: "a\u2028b\u2029c"},
		{name: "html", in: "<a href='x'>&amp;</a>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendString(nil, tt.in)
			if !json.Valid(got) {
				t.Fatalf("appendString(%q) = %s; not valid JSON", tt.in, got)
			}
			var back string
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatalf("unmarshal %s: %v", got, err)
			}
			want, _ := json.Marshal(tt.in) // encoding/json also replaces invalid UTF-8
			var wantBack string
			_ = json.Unmarshal(want, &wantBack)
			if back != wantBack {
				t.Errorf("appendString(%q) decodes to %q; want %q", tt.in, back, wantBack)
			}
		})
	}
}

func TestSplitDataURL(t *testing.T) {
	tests := []struct {
		name, in, media, data string
		ok                    bool
	}{
		{name: "png", in: "data:image/png;base64,iVBOR", media: "image/png", data: "iVBOR", ok: true},
		{name: "not base64", in: "data:text/plain,hello"},
		{name: "http", in: "https://example.com/a.png"},
		{name: "empty", in: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			media, data, ok := splitDataURL(tt.in)
			if media != tt.media || data != tt.data || ok != tt.ok {
				t.Errorf("splitDataURL(%q) = %q, %q, %v; want %q, %q, %v", tt.in, media, data, ok, tt.media, tt.data, tt.ok)
			}
		})
	}
}
