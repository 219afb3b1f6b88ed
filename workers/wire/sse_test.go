package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func readAll(t *testing.T, in string) ([]Event, error) {
	t.Helper()
	er := NewEventReader(strings.NewReader(in))
	var out []Event
	for {
		ev, err := er.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		ev.Raw = append([]byte(nil), ev.Raw...)
		ev.Data = append([]byte(nil), ev.Data...)
		out = append(out, ev)
	}
}

func TestEventReader(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		names   []string
		data    []string
		wantErr error
	}{
		{name: "anthropic", in: "event: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {}\n\n",
			names: []string{"message_start", "ping"}, data: []string{`{"a":1}`, `{}`}},
		{name: "openai", in: "data: {\"x\":1}\n\ndata: [DONE]\n\n", names: []string{"", ""}, data: []string{`{"x":1}`, "[DONE]"}},
		{name: "crlf", in: "event: e\r\ndata: d\r\n\r\n", names: []string{"e"}, data: []string{"d"}},
		{name: "multi-line data", in: "data: a\ndata: b\n\n", names: []string{""}, data: []string{"a\nb"}},
		{name: "comment", in: ": keepalive\n\ndata: x\n\n", names: []string{"", ""}, data: []string{"", "x"}},
		{name: "no space", in: "event:e\ndata:d\n\n", names: []string{"e"}, data: []string{"d"}},
		{name: "leading blank lines", in: "\n\ndata: x\n\n", names: []string{""}, data: []string{"x"}},
		{name: "missing final blank line", in: "data: x\n", wantErr: io.ErrUnexpectedEOF},
		{name: "cut mid-event", in: "data: x\n\nevent: y\ndata: {\"partial", names: []string{""}, data: []string{"x"}, wantErr: io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := readAll(t, tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error = %v; want %v", err, tc.wantErr)
			}
			if len(evs) != len(tc.names) {
				t.Fatalf("got %d events; want %d", len(evs), len(tc.names))
			}
			var raw []byte
			for i, ev := range evs {
				if ev.Name != tc.names[i] || string(ev.Data) != tc.data[i] {
					t.Errorf("event %d = %q %q; want %q %q", i, ev.Name, ev.Data, tc.names[i], tc.data[i])
				}
				raw = append(raw, ev.Raw...)
			}
			if tc.wantErr == nil && !strings.HasSuffix(tc.in, string(raw)) {
				t.Errorf("raw events %q are not the input %q", raw, tc.in)
			}
		})
	}
}

func TestEventReaderLongLine(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	evs, err := readAll(t, "data: "+long+"\n\n")
	if err != nil || len(evs) != 1 || string(evs[0].Data) != long {
		t.Fatalf("long event: %d events, err %v", len(evs), err)
	}
}

func TestAppendEvent(t *testing.T) {
	got := AppendEvent(nil, "message_stop", []byte(`{"type":"message_stop"}`))
	if want := "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"; string(got) != want {
		t.Errorf("AppendEvent = %q; want %q", got, want)
	}
	if got := AppendEvent(nil, "", []byte("a\nb")); string(got) != "data: a\ndata: b\n\n" {
		t.Errorf("AppendEvent multi-line = %q", got)
	}
}

func FuzzEventReader(f *testing.F) {
	f.Add([]byte("event: message_start\ndata: {\"a\":1}\n\n: c\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: a\r\ndata: b\r\n\r\n"))
	f.Add([]byte("event: x\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		er := NewEventReader(bytes.NewReader(in))
		for i := 0; i < 10000; i++ {
			ev, err := er.Next()
			if err != nil {
				return
			}
			// A re-encoded event reads back the same (CR is a line end, so
			// data holding one cannot round-trip).
			if ev.Name != "" && !strings.ContainsAny(ev.Name, "\r\n") && !bytes.Contains(ev.Data, []byte("\r")) {
				enc := AppendEvent(nil, ev.Name, ev.Data)
				back, err := NewEventReader(bytes.NewReader(enc)).Next()
				if err != nil || back.Name != ev.Name || !bytes.Equal(back.Data, ev.Data) {
					t.Fatalf("round trip of %q %q = %q %q, %v", ev.Name, ev.Data, back.Name, back.Data, err)
				}
			}
		}
	})
}
