package metering

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/gateway/status"
)

const adminToken = "relay-admin-canary-token-41c9e2"

// TestAdminUsage: GET /admin/usage needs the admin token (the status
// page's auth), answers every key's usage by day and model, and filters by
// key; bad input gets a clear 4xx.
func TestAdminUsage(t *testing.T) {
	srv := natstest.Start(t)
	m := startMeter(t, openStore(t, natstest.JetStream(t, srv)), prometheus.NewRegistry())
	m.Record(call("team-a", "claude-x", ModeSync, usage))
	m.Record(call("team-b", "claude-x", ModeBatch, usage))
	if err := m.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	token := adminToken
	mux := http.NewServeMux()
	mux.Handle("/admin/usage", AdminHandler(m, status.NewAuth(func() string { return token }).AllowAdminAPI))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)

	get := func(method, path, auth string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), method, ts.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(b), adminToken) {
			t.Errorf("%s %s: the answer holds the admin token", method, path)
		}
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, method, path, auth string
		status                   int
		has                      string
	}{
		{"no token", "GET", "/admin/usage", "", 401, "Bearer"},
		{"wrong token", "GET", "/admin/usage", "Bearer not-the-token-at-all", 401, "Bearer"},
		{"wrong scheme", "GET", "/admin/usage", "Basic " + adminToken, 401, "Bearer"},
		{"every key", "GET", "/admin/usage", "Bearer " + adminToken, 200, `"key":"team-b"`},
		{"one key", "GET", "/admin/usage?key=team-a", "Bearer " + adminToken, 200, `"key":"team-a"`},
		{"bad date", "GET", "/admin/usage?from=last-week", "Bearer " + adminToken, 400, "not a date"},
		{"wrong method", "POST", "/admin/usage", "Bearer " + adminToken, 405, "method"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.method, tc.path, tc.auth)
			if code != tc.status || !strings.Contains(body, tc.has) {
				t.Errorf("%d %s; want %d with %q", code, body, tc.status, tc.has)
			}
		})
	}
	_, body := get("GET", "/admin/usage?key=team-a", "Bearer "+adminToken)
	var rep Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Keys) != 1 || rep.Keys[0].Key != "team-a" || rep.Total.Requests != 1 || rep.Keys[0].Days[0].Models[0].Model != "claude-x" {
		t.Errorf("key=team-a: %+v", rep)
	}
	token = ""
	if code, body := get("GET", "/admin/usage", "Bearer "+adminToken); code != 503 || !strings.Contains(body, "admin.token") {
		t.Errorf("without admin.token: %d %s; want 503 (as the keys API)", code, body)
	}
}
