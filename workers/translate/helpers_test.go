package translate

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// decodeJSON decodes b with numbers kept exact.
func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if dec.More() {
		t.Fatalf("decode %s: trailing data", b)
	}
	return v
}

// assertJSONEqual fails unless got and want are the same JSON value.
func assertJSONEqual(t *testing.T, name string, got []byte, want string) {
	t.Helper()
	if !json.Valid(got) {
		t.Fatalf("%s produced invalid JSON: %s", name, got)
	}
	g, w := decodeJSON(t, got), decodeJSON(t, []byte(want))
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s = %s\nwant %s", name, indent(got), indent([]byte(want)))
	}
}

func indent(b []byte) string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return string(b)
	}
	return buf.String()
}

// testDepth is the nesting limit the conversions get in tests: the
// configured default.
const testDepth = 128
