package gateway

import (
	"crypto/sha256"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestRuntimeKeys authenticates configuration keys and runtime keys: a
// rotated secret only within its grace period, a runtime key shadowed by a
// configuration key of the same name never, and a replaced table at once.
func TestRuntimeKeys(t *testing.T) {
	sum := func(s string) [32]byte { return sha256.Sum256([]byte(s)) }
	now := time.Now()
	var rt atomic.Pointer[keyTable]
	st := newState(Config{Keys: []Key{{Name: "file", SHA256: sum("file-secret")}}}, &rt)
	rt.Store(newKeyTable([]Key{
		{Name: "api", SHA256: sum("api-new"), Grace: &GraceSecret{SHA256: sum("api-old"), Until: now.Add(time.Hour)}},
		{Name: "expired", SHA256: sum("exp-new"), Grace: &GraceSecret{SHA256: sum("exp-old"), Until: now.Add(-time.Second)}},
		{Name: "file", SHA256: sum("shadowed")},
	}))
	cases := []struct {
		secret string
		want   string // key name; "" refused
	}{
		{"file-secret", "file"},
		{"api-new", "api"},
		{"api-old", "api"},
		{"exp-new", "expired"},
		{"exp-old", ""},
		{"shadowed", ""},
		{"api-ne", ""},
		{"", ""},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/v1/models", nil)
		if tc.secret != "" {
			r.Header.Set("x-api-key", tc.secret)
		}
		k, aerr := st.authenticate(r)
		switch {
		case tc.want == "" && aerr == nil:
			t.Errorf("%q: authenticated as %q, want refused", tc.secret, k.Name)
		case tc.want != "" && (aerr != nil || k.Name != tc.want):
			t.Errorf("%q: got %v, %v; want key %q", tc.secret, k, aerr, tc.want)
		}
	}
	rt.Store(newKeyTable(nil)) // revoked everywhere at once
	r := httptest.NewRequest("GET", "/v1/models", nil)
	r.Header.Set("Authorization", "Bearer api-new")
	if k, aerr := st.authenticate(r); aerr == nil {
		t.Fatalf("revoked key still authenticated as %q", k.Name)
	}
}
