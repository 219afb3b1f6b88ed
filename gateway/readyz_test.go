package gateway_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/workerstest"
)

// TestReadyzReason: /readyz answers 200 while Ready is nil, and 503 with
// Ready's reason in its body otherwise.
func TestReadyzReason(t *testing.T) {
	router, err := workerstest.Router(workers.RouterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		dispatcher gateway.Dispatcher
		ready      func() error
		code       int
		body       string
	}{
		{"ready", router, func() error { return nil }, http.StatusOK, "ok\n"},
		{"no Ready", router, nil, http.StatusOK, "ok\n"},
		{"job store down", router, func() error { return errors.New("job store unavailable: stream RELAY_JOBS missing") },
			http.StatusServiceUnavailable, "not ready: job store unavailable: stream RELAY_JOBS missing\n"},
		{"no configuration", nil, nil, http.StatusServiceUnavailable, "not ready: no configuration\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := gateway.New(gateway.Config{Dispatcher: tt.dispatcher}, gateway.Options{}, gateway.Deps{Ready: tt.ready})
			srv := httptest.NewServer(gw.Handler())
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("/readyz body: %v", err)
			}
			if resp.StatusCode != tt.code || !strings.EqualFold(string(b), tt.body) {
				t.Errorf("/readyz = %d %q; want %d %q", resp.StatusCode, b, tt.code, tt.body)
			}
		})
	}
}
