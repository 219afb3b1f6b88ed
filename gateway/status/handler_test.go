package status

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
)

const testToken = "status-test-token-0123456789"

// fakeSources stand in for the owners' snapshot methods.
type fakeSources struct{}

func (fakeSources) Snapshot() []lanes.LaneState {
	return []lanes.LaneState{{Name: "interactive", Depth: 3, MaxDepth: 10, MaxWait: 30 * time.Second, DispatchRate: 1}}
}

func (fakeSources) ProviderStates() []actor.State {
	return []actor.State{{Name: "up", Breaker: actor.BreakerOpen, BreakerOpenAt: time.Now().Add(10 * time.Second),
		MaxConcurrency: 4, Requests: actor.BucketState{PerMinute: 60, Available: 12},
		InputTokens: actor.BucketState{Available: math.Inf(1)}, OutputTokens: actor.BucketState{Available: math.Inf(1)}}}
}

func (fakeSources) RouteInfos() []workers.RouteInfo {
	return []workers.RouteInfo{{Model: "m", Targets: []workers.TargetInfo{{Provider: "up", Model: "m-1", Weight: 2}}}}
}

// statusServer serves the status endpoints with token as admin.token.
func statusServer(t *testing.T, token *atomic.Pointer[string]) *httptest.Server {
	t.Helper()
	f := fakeSources{}
	c := NewCollector(Sources{Lanes: f, Providers: f, Routes: f, Version: "test"})
	mux := http.NewServeMux()
	NewHandler(c, NewAuth(func() string { return *token.Load() }), nil).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// send makes one request without following redirects.
func send(t *testing.T, method, u string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func login(t *testing.T, srv *httptest.Server, token string, hdr map[string]string) *http.Response {
	t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for k, v := range hdr {
		h[k] = v
	}
	resp, _ := send(t, http.MethodPost, srv.URL+"/status/login", h, url.Values{"token": {token}}.Encode())
	return resp
}

func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == CookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", CookieName, resp.Header)
	return nil
}

func TestStatusAuth(t *testing.T) {
	var token atomic.Pointer[string]
	tok := testToken
	token.Store(&tok)
	srv := statusServer(t, &token)
	good := sessionCookie(t, login(t, srv, testToken, nil))
	forged := session(testToken, time.Now().Add(30*24*time.Hour)) // signed, but longer than a login
	wrongKey := session("another-token-of-some-length", time.Now().Add(time.Hour))
	tests := []struct {
		name string
		path string
		hdr  map[string]string
		want int
		body string
	}{
		{"page without credentials shows the login form", "/status", nil, 401, `name="token"`},
		{"json without credentials", "/status.json", nil, 401, "Bearer"},
		{"page with bearer", "/status", map[string]string{"Authorization": "Bearer " + testToken}, 200, `id="provider-up"`},
		{"json with bearer", "/status.json", map[string]string{"Authorization": "Bearer " + testToken}, 200, `"breaker": "open"`},
		{"wrong bearer", "/status.json", map[string]string{"Authorization": "Bearer nope"}, 401, ""},
		{"basic auth is not bearer", "/status.json", map[string]string{"Authorization": "Basic " + testToken}, 401, ""},
		{"token in the query is ignored", "/status?token=" + testToken, nil, 401, `name="token"`},
		{"session cookie", "/status", map[string]string{"Cookie": good.Name + "=" + good.Value}, 200, `id="lane-interactive"`},
		{"session cookie for json", "/status.json", map[string]string{"Cookie": good.Name + "=" + good.Value}, 200, `"depth": 3`},
		{"cookie holding the token itself", "/status", map[string]string{"Cookie": CookieName + "=" + testToken}, 401, ""},
		{"cookie lasting too long", "/status", map[string]string{"Cookie": CookieName + "=" + forged}, 401, ""},
		{"cookie signed with another token", "/status", map[string]string{"Cookie": CookieName + "=" + wrongKey}, 401, ""},
		{"tampered expiry", "/status", map[string]string{"Cookie": CookieName + "=9" + good.Value}, 401, ""},
		{"asset", "/status/assets/status.js", nil, 200, "DOMParser"},
		{"no other asset", "/status/assets/page.html", nil, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := send(t, http.MethodGet, srv.URL+tc.path, tc.hdr, "")
			if resp.StatusCode != tc.want || !strings.Contains(body, tc.body) {
				t.Fatalf("GET %s: %d, want %d with %q; body:\n%.400s", tc.path, resp.StatusCode, tc.want, tc.body, body)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
			}
		})
	}
}

func TestStatusLogin(t *testing.T) {
	var token atomic.Pointer[string]
	tok := testToken
	token.Store(&tok)
	srv := statusServer(t, &token)

	resp := login(t, srv, testToken, map[string]string{"Origin": srv.URL, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/status" {
		t.Fatalf("login: %d to %q, want 303 to /status", resp.StatusCode, resp.Header.Get("Location"))
	}
	c := sessionCookie(t, resp)
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || strings.Contains(c.Value, testToken) {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/ and not the token", c)
	}

	for _, tc := range []struct {
		name  string
		token string
		hdr   map[string]string
		want  int
	}{
		{"wrong token", "wrong", nil, 401},
		{"cross-site origin", testToken, map[string]string{"Origin": "http://evil.example"}, 403},
		{"cross-site fetch", testToken, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"same-site, other origin", testToken, map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
		{"opaque origin without fetch metadata", testToken, map[string]string{"Origin": "null"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if resp := login(t, srv, tc.token, tc.hdr); resp.StatusCode != tc.want {
				t.Errorf("login: %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}

	t.Run("logout drops the cookie", func(t *testing.T) {
		resp, _ := send(t, http.MethodPost, srv.URL+"/status/logout", nil, "")
		if c := sessionCookie(t, resp); c.MaxAge >= 0 || c.Value != "" {
			t.Errorf("logout cookie %+v", c)
		}
	})

	t.Run("a new token ends every session", func(t *testing.T) {
		next := "the-next-admin-token-after-reload"
		token.Store(&next)
		resp, _ := send(t, http.MethodGet, srv.URL+"/status", map[string]string{"Cookie": c.Name + "=" + c.Value}, "")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("old session after token change: %d, want 401", resp.StatusCode)
		}
		token.Store(&tok)
	})

	t.Run("failed logins are throttled", func(t *testing.T) {
		got := 0
		for range 30 {
			if login(t, srv, "guess", nil).StatusCode == http.StatusTooManyRequests {
				got++
			}
		}
		if got == 0 {
			t.Error("30 wrong logins in a row: none refused with 429")
		}
	})
}

func TestStatusDisabledWithoutToken(t *testing.T) {
	var token atomic.Pointer[string]
	empty := ""
	token.Store(&empty)
	srv := statusServer(t, &token)
	for _, path := range []string{"/status", "/status.json"} {
		resp, body := send(t, http.MethodGet, srv.URL+path, map[string]string{"Authorization": "Bearer "}, "")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "admin.token") {
			t.Errorf("GET %s without admin.token: %d %q, want 403 naming admin.token", path, resp.StatusCode, body)
		}
	}
	if resp := login(t, srv, "", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("login without admin.token: %d, want 403", resp.StatusCode)
	}
}

// TestStatusJSONShape: the JSON carries every section the page shows,
// with the estimate computed from depth and dispatch rate.
func TestStatusJSONShape(t *testing.T) {
	var token atomic.Pointer[string]
	tok := testToken
	token.Store(&tok)
	srv := statusServer(t, &token)
	_, body := send(t, http.MethodGet, srv.URL+"/status.json", map[string]string{"Authorization": "Bearer " + testToken}, "")
	var r Report
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("decode: %v\n%s", err, body)
	}
	if len(r.Lanes) != 1 || r.Lanes[0].EstWait != 3 || r.Lanes[0].WaitP50 != nil {
		t.Errorf("lanes %+v: want est. wait 3s (3 parked at 1/s) and no p50 without a window", r.Lanes)
	}
	if len(r.Providers) != 1 || r.Providers[0].HalfOpenAt == nil || *r.Providers[0].Requests.Available != 12 || r.Providers[0].InputTokens.Available != nil {
		t.Errorf("providers %+v", r.Providers)
	}
	if len(r.Routes) != 1 || r.Routes[0].Targets[0].Weight != 2 || r.Routes[0].ErrorRate != nil {
		t.Errorf("routes %+v", r.Routes)
	}
	if r.Jobs != nil || r.NATS != nil || r.Keys != nil {
		t.Errorf("sections without a source are present: %+v %+v %+v", r.Jobs, r.NATS, r.Keys)
	}
}
