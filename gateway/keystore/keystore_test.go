package keystore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/gateway/keystore"
	"github.com/relaygw/relay/gateway/status"
	"github.com/relaygw/relay/lanes/assets"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const adminToken = "keystore-test-admin-token-7c1f"

// testConfig is the running configuration the admin API checks keys
// against: two lanes, two routes, one key from the file.
// propagation bounds how long a change may take to reach another relay
// in these tests. The promise is a second, and the tests log what they
// see (20–80 ms here); the bound allows for a loaded CI machine, as
// speed is shown by figures, not by timed assertions.
const propagation = 5 * time.Second

func testConfig() *configs.Config {
	return &configs.Config{
		Lanes:  []configs.Lane{{Name: "interactive"}, {Name: "batch"}},
		Routes: []configs.Route{{Model: "claude-sonnet"}, {Model: "gpt-*"}},
		Keys: []configs.Key{{Name: "file-key", Key: "file-key-secret-never-shown", Lanes: []string{"interactive"},
			DefaultLane: "interactive", Routes: []string{"*"}}},
		Prices: []configs.Price{{Model: "claude-*", Input: 3, Output: 15}},
	}
}

// relay is one relay's part of the key store: a store on its own NATS
// connection, its watcher feeding a gateway, and its admin API.
type relay struct {
	store  *keystore.Store
	gw     *gateway.Server
	admin  *httptest.Server
	logs   *syncBuffer
	reg    *prometheus.Registry
	recs   atomic.Pointer[[]keystore.Record]
	cfg    *configs.Config
	token  atomic.Pointer[string]
	js     jetstream.JetStream
	stopWG sync.WaitGroup
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newRelay starts a relay's key store over js, until the test ends.
func newRelay(t *testing.T, js jetstream.JetStream) *relay {
	t.Helper()
	return newRelayR(t, js, 1)
}

// newRelayR is newRelay with the bucket declared with replicas.
func newRelayR(t *testing.T, js jetstream.JetStream, replicas int) *relay {
	t.Helper()
	r := &relay{cfg: testConfig(), logs: &syncBuffer{}, reg: prometheus.NewRegistry(), js: js}
	tok := adminToken
	r.token.Store(&tok)
	log := slog.New(slog.NewJSONHandler(r.logs, nil))
	store, err := keystore.Open(t.Context(), assets.New(js, assets.Options{Replicas: replicas}))
	if err != nil {
		t.Fatal(err)
	}
	r.store = store
	r.gw = gateway.New(gateway.Config{Lanes: []gateway.Lane{{Name: "interactive"}, {Name: "batch"}}}, gateway.Options{}, gateway.Deps{})
	ctx, cancel := context.WithCancel(context.Background())
	r.stopWG.Add(1)
	go func() {
		defer r.stopWG.Done()
		err := store.Watch(ctx, func(recs []keystore.Record) {
			r.recs.Store(&recs)
			r.gw.SetRuntimeKeys(keystore.GatewayKeys(recs, r.cfg, time.Now()))
		}, func(name string, err error) { t.Errorf("bad record %s: %v", name, err) })
		if err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); r.stopWG.Wait() })
	mux := http.NewServeMux()
	keystore.NewAdmin(keystore.AdminOptions{Store: store, Auth: status.NewAuth(func() string { return *r.token.Load() }),
		Config: func() *configs.Config { return r.cfg }, Logger: log, Registry: r.reg}).Register(mux)
	r.admin = httptest.NewServer(mux)
	t.Cleanup(r.admin.Close)
	return r
}

// call sends an admin request with token (none when "") and returns the
// status and body.
func (r *relay) call(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, r.admin.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// admin is call with the admin token, expecting want.
func (r *relay) adminOK(t *testing.T, method, path, body string, want int) map[string]any {
	t.Helper()
	code, b := r.call(t, method, path, adminToken, body)
	if code != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, code, want, b)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(b), &m); err != nil {
		t.Fatalf("%s %s: %v: %s", method, path, err, b)
	}
	return m
}

// authCode is the gateway's status for a request with secret.
func (r *relay) authCode(t *testing.T, secret string) int {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
	req.Header.Set("x-api-key", secret)
	w := httptest.NewRecorder()
	r.gw.Handler().ServeHTTP(w, req)
	return w.Code
}

// TestKeysAcrossRelays: a key created through one relay's admin API
// works on another relay sharing the JetStream within a second; a patch
// reaches it; a rotation keeps the old secret for its grace period and
// then drops it; a revoke is refused everywhere within a second.
func TestKeysAcrossRelays(t *testing.T) {
	srv := natstest.Start(t)
	a, b := newRelay(t, natstest.JetStream(t, srv)), newRelay(t, natstest.JetStream(t, srv))

	start := time.Now()
	created := a.adminOK(t, "POST", "/admin/keys", `{"name":"team-b","lanes":["interactive"],"routes":["claude-sonnet"],"rpm":60}`, 201)
	secret, _ := created["key"].(string)
	if !strings.HasPrefix(secret, keystore.SecretPrefix) || len(secret) < 40 {
		t.Fatalf("create answered key %q", secret)
	}
	natstest.Eventually(t, propagation, "new key works on the other relay", func() bool { return b.authCode(t, secret) == 200 })
	t.Logf("created on a, accepted on b after %v", time.Since(start))

	a.adminOK(t, "PATCH", "/admin/keys/team-b", `{"lanes":["interactive","batch"],"budget":{"usd":5,"period":"day"}}`, 200)
	natstest.Eventually(t, propagation, "patch reaches the other relay", func() bool {
		recs := b.recs.Load()
		for _, k := range keystore.GatewayKeys(*recs, b.cfg, time.Now()) {
			if k.Name == "team-b" && len(k.Lanes) == 2 && k.Budget != nil && k.Budget.USD == 5 && k.Limits.RPM == 60 {
				return true
			}
		}
		return false
	})

	rot := a.adminOK(t, "POST", "/admin/keys/team-b/rotate", `{"grace":"1500ms"}`, 200)
	fresh, _ := rot["key"].(string)
	if fresh == "" || fresh == secret || rot["previous_valid_until"] == nil {
		t.Fatalf("rotate answered %v", rot)
	}
	natstest.Eventually(t, propagation, "rotated secret works on the other relay", func() bool { return b.authCode(t, fresh) == 200 })
	if code := b.authCode(t, secret); code != 200 {
		t.Fatalf("old secret within its grace period: %d, want 200", code)
	}
	natstest.Eventually(t, 5*time.Second, "old secret refused after its grace period", func() bool { return b.authCode(t, secret) == 401 })
	natstest.Eventually(t, 2*time.Second, "watcher drops the expired secret", func() bool {
		for _, k := range keystore.GatewayKeys(*b.recs.Load(), b.cfg, time.Now()) {
			if k.Name == "team-b" {
				return k.Grace == nil
			}
		}
		return false
	})

	start = time.Now()
	a.adminOK(t, "DELETE", "/admin/keys/team-b", "", 200)
	natstest.Eventually(t, propagation, "revoked key refused on the other relay", func() bool { return b.authCode(t, fresh) == 401 })
	t.Logf("revoked on a, refused on b after %v", time.Since(start))
	if code := a.authCode(t, fresh); code != 401 {
		t.Fatalf("revoked key on its own relay: %d", code)
	}
	shown := b.adminOK(t, "GET", "/admin/keys/team-b", "", 200)
	if shown["revoked"] != true {
		t.Fatalf("revoked key shows %v", shown)
	}
	// A revoked name is not reused, and a revoked key does not change.
	a.adminOK(t, "POST", "/admin/keys", `{"name":"team-b"}`, 409)
	a.adminOK(t, "POST", "/admin/keys/team-b/rotate", "", 409)
	a.adminOK(t, "PATCH", "/admin/keys/team-b", `{"rpm":1}`, 409)
	for action, want := range map[string]float64{"create": 1, "update": 1, "rotate": 1, "revoke": 1} {
		if got := a.changes(t, action); got != want {
			t.Errorf("relay_admin_key_changes_total{action=%q} = %v, want %v", action, got, want)
		}
	}
}

// TestKeysClusterR3: on a three-node JetStream cluster the bucket has
// three replicas, and a key created through a relay on one node works on
// a relay on another node within a second, and its revoke too.
func TestKeysClusterR3(t *testing.T) {
	nodes := natstest.StartCluster(t, 3)
	a := newRelayR(t, natstest.JetStream(t, nodes[0]), 3)
	b := newRelayR(t, natstest.JetStream(t, nodes[2]), 3)
	info, err := a.js.Stream(t.Context(), "KV_"+keystore.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().Config.Replicas; n != 3 {
		t.Fatalf("bucket replicas %d, want 3", n)
	}
	// A new cluster may still be electing the bucket's leader: the admin
	// API answers 503 (retry) until it has one.
	var created map[string]any
	natstest.Eventually(t, 30*time.Second, "bucket leader elected", func() bool {
		code, body := a.call(t, "POST", "/admin/keys", adminToken, `{"name":"r3"}`)
		if code == 201 {
			return json.Unmarshal([]byte(body), &created) == nil
		}
		if code != 503 {
			t.Fatalf("POST /admin/keys: %d %s; want 201 (or 503 while the cluster elects)", code, body)
		}
		return false
	})
	start := time.Now()
	secret := created["key"].(string)
	natstest.Eventually(t, propagation, "key works through another node", func() bool { return b.authCode(t, secret) == 200 })
	t.Logf("created through node 1, accepted through node 3 after %v", time.Since(start))
	start = time.Now()
	b.adminOK(t, "DELETE", "/admin/keys/r3", "", 200)
	natstest.Eventually(t, propagation, "revoke reaches another node", func() bool { return a.authCode(t, secret) == 401 })
	t.Logf("revoked through node 3, refused through node 1 after %v", time.Since(start))
}

// changes returns relay_admin_key_changes_total{action}.
func (r *relay) changes(t *testing.T, action string) float64 {
	t.Helper()
	fams, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "relay_admin_key_changes_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == action {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no relay_admin_key_changes_total{action=%q}", action)
	return 0
}

// TestAdminBadInput: every bad call gets a clear 4xx (or 503 with the
// API off) naming what is wrong, in the {"error": {type, message}} shape.
func TestAdminBadInput(t *testing.T) {
	srv := natstest.Start(t)
	r := newRelay(t, natstest.JetStream(t, srv))
	r.adminOK(t, "POST", "/admin/keys", `{"name":"exists"}`, 201)
	cases := []struct {
		name, method, path, token, body string
		code                            int
		typ, msg                        string
	}{
		{"no token", "GET", "/admin/keys", "", "", 401, "authentication_error", "admin token"},
		{"wrong token", "GET", "/admin/keys", "wrong-token-wrong-token", "", 401, "authentication_error", "admin token"},
		{"token prefix", "GET", "/admin/keys", adminToken[:len(adminToken)-1], "", 401, "authentication_error", "admin token"},
		{"token plus", "GET", "/admin/keys", adminToken + "x", "", 401, "authentication_error", "admin token"},
		{"unknown field", "POST", "/admin/keys", adminToken, `{"name":"x","rmp":5}`, 400, "invalid_request_error", `unknown field "rmp"`},
		{"unknown budget field", "POST", "/admin/keys", adminToken, `{"name":"x","budget":{"usd":1,"period":"day","dollars":2}}`, 400, "invalid_request_error", `"dollars"`},
		{"negative rpm", "POST", "/admin/keys", adminToken, `{"name":"x","rpm":-1}`, 400, "invalid_request_error", "rpm: must be >= 0"},
		{"negative concurrency", "POST", "/admin/keys", adminToken, `{"name":"x","max_concurrency":-3}`, 400, "invalid_request_error", "max_concurrency"},
		{"negative budget", "POST", "/admin/keys", adminToken, `{"name":"x","budget":{"usd":-1,"period":"day"}}`, 400, "invalid_request_error", "budget.usd"},
		{"bad period", "POST", "/admin/keys", adminToken, `{"name":"x","budget":{"tokens":10,"period":"week"}}`, 400, "invalid_request_error", "budget.period"},
		{"wrong type", "POST", "/admin/keys", adminToken, `{"name":"x","rpm":"fast"}`, 400, "invalid_request_error", "rpm: must be an integer"},
		{"no name", "POST", "/admin/keys", adminToken, `{"lanes":["batch"]}`, 400, "invalid_request_error", "name: must be set"},
		{"bad name", "POST", "/admin/keys", adminToken, `{"name":"a.b"}`, 400, "invalid_request_error", "name:"},
		{"unknown lane", "POST", "/admin/keys", adminToken, `{"name":"x","lanes":["vip"]}`, 400, "invalid_request_error", `lanes[0]: unknown lane "vip"`},
		{"default lane outside lanes", "POST", "/admin/keys", adminToken, `{"name":"x","lanes":["batch"],"default_lane":"interactive"}`, 400, "invalid_request_error", "default_lane"},
		{"unknown route", "POST", "/admin/keys", adminToken, `{"name":"x","routes":["claude-*"]}`, 400, "invalid_request_error", `routes[0]: unknown route "claude-*"`},
		{"not json", "POST", "/admin/keys", adminToken, `name=x`, 400, "invalid_request_error", "not valid JSON"},
		{"empty", "POST", "/admin/keys", adminToken, ``, 400, "invalid_request_error", "JSON object"},
		{"two values", "POST", "/admin/keys", adminToken, `{"name":"x"}{"name":"y"}`, 400, "invalid_request_error", "more than one"},
		{"too large", "POST", "/admin/keys", adminToken, `{"name":"x","routes":["` + strings.Repeat("a", 70<<10) + `"]}`, 413, "request_too_large", "larger than"},
		{"duplicate", "POST", "/admin/keys", adminToken, `{"name":"exists"}`, 409, "conflict_error", "exists"},
		{"file key name", "POST", "/admin/keys", adminToken, `{"name":"file-key"}`, 409, "conflict_error", "configuration file"},
		{"unknown key", "GET", "/admin/keys/nobody", adminToken, "", 404, "not_found_error", `"nobody"`},
		{"patch unknown key", "PATCH", "/admin/keys/nobody", adminToken, `{"rpm":1}`, 404, "not_found_error", `"nobody"`},
		{"patch file key", "PATCH", "/admin/keys/file-key", adminToken, `{"rpm":1}`, 409, "conflict_error", "read-only"},
		{"patch unknown field", "PATCH", "/admin/keys/exists", adminToken, `{"name":"other"}`, 400, "invalid_request_error", `unknown field "name"`},
		{"patch budget field", "PATCH", "/admin/keys/exists", adminToken, `{"budget":{"usd":1,"period":"day","x":1}}`, 400, "invalid_request_error", `"budget.x"`},
		{"patch negative", "PATCH", "/admin/keys/exists", adminToken, `{"output_tpm":-5}`, 400, "invalid_request_error", "output_tpm: must be >= 0"},
		{"rotate file key", "POST", "/admin/keys/file-key/rotate", adminToken, "", 409, "conflict_error", "read-only"},
		{"rotate grace too long", "POST", "/admin/keys/exists/rotate", adminToken, `{"grace":"999h"}`, 400, "invalid_request_error", "grace: must be between"},
		{"rotate grace negative", "POST", "/admin/keys/exists/rotate", adminToken, `{"grace":"-1s"}`, 400, "invalid_request_error", "grace"},
		{"rotate grace not duration", "POST", "/admin/keys/exists/rotate", adminToken, `{"grace":"tomorrow"}`, 400, "invalid_request_error", "not a duration"},
		{"revoke unknown", "DELETE", "/admin/keys/nobody", adminToken, "", 404, "not_found_error", `"nobody"`},
		{"revoke file key", "DELETE", "/admin/keys/file-key", adminToken, "", 409, "conflict_error", "read-only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := r.call(t, tc.method, tc.path, tc.token, tc.body)
			var e struct {
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("answer is not a JSON error: %q", body)
			}
			if code != tc.code || e.Error.Type != tc.typ || !strings.Contains(e.Error.Message, tc.msg) {
				t.Fatalf("%d %s %q; want %d %s containing %q", code, e.Error.Type, e.Error.Message, tc.code, tc.typ, tc.msg)
			}
		})
	}
	// A USD budget needs prices, as in the file.
	noPrices := *r.cfg
	noPrices.Prices = nil
	r.cfg = &noPrices
	if code, body := r.call(t, "POST", "/admin/keys", adminToken, `{"name":"x","budget":{"usd":1,"period":"day"}}`); code != 400 || !strings.Contains(body, "needs a prices table") {
		t.Errorf("USD budget without prices: %d %s; want 400 naming the prices table", code, body)
	}
	// Nothing bad was stored.
	list := r.adminOK(t, "GET", "/admin/keys", "", 200)
	if n := len(list["data"].([]any)); n != 2 {
		t.Fatalf("listed %d keys, want the file's and exists: %v", n, list)
	}
	// Without admin.token the API is off.
	empty := ""
	r.token.Store(&empty)
	code, body := r.call(t, "GET", "/admin/keys", "", "")
	if code != 503 || !strings.Contains(body, "admin.token") {
		t.Fatalf("API off: %d %s", code, body)
	}
}

// TestAdminCanary: after creation, a key's secret appears in no answer
// of the API, no log line, no metric and no stored NATS message; the
// file's secret never does.
func TestAdminCanary(t *testing.T) {
	srv := natstest.Start(t)
	r := newRelay(t, natstest.JetStream(t, srv))
	created := r.adminOK(t, "POST", "/admin/keys", `{"name":"canary","budget":{"tokens":1000,"period":"total"}}`, 201)
	secret := created["key"].(string)
	natstest.Eventually(t, propagation, "key works", func() bool { return r.authCode(t, secret) == 200 })
	rot := r.adminOK(t, "POST", "/admin/keys/canary/rotate", "", 200)
	fresh := rot["key"].(string)
	natstest.Eventually(t, propagation, "rotated key works", func() bool { return r.authCode(t, fresh) == 200 })

	var answers []string
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/admin/keys", ""}, {"GET", "/admin/keys/canary", ""}, {"GET", "/admin/keys/file-key", ""},
		{"PATCH", "/admin/keys/canary", `{"rpm":5}`}, {"DELETE", "/admin/keys/canary", ""}, {"GET", "/admin/keys/canary", ""},
	} {
		_, b := r.call(t, c.method, c.path, adminToken, c.body)
		answers = append(answers, b)
	}
	secrets := map[string]string{"created secret": secret, "rotated secret": fresh, "file secret": "file-key-secret-never-shown",
		"created secret's tail": secret[len(keystore.SecretPrefix):]}
	// The stored record holds digests only: every message of every stream.
	var stored []string
	for name := range r.js.StreamNames(t.Context()).Name() {
		st, err := r.js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
			m, err := st.GetMsg(t.Context(), seq)
			if err != nil {
				continue // deleted by an update
			}
			stored = append(stored, string(m.Data)+string(m.Subject))
		}
	}
	if len(stored) == 0 {
		t.Fatal("no stored message to scan")
	}
	sum := sha256.Sum256([]byte(fresh))
	if !strings.Contains(strings.Join(stored, "\n"), hex.EncodeToString(sum[:])) {
		t.Fatalf("the stored record does not hold the current secret's digest: %v", stored)
	}
	metrics := gather(t, r.reg)
	for what, s := range secrets {
		for where, text := range map[string]string{"answers": strings.Join(answers, "\n"), "logs": r.logs.String(),
			"metrics": metrics, "NATS": strings.Join(stored, "\n")} {
			if strings.Contains(text, s) {
				t.Errorf("%s appears in %s", what, where)
			}
		}
	}
	if !strings.Contains(r.logs.String(), `"action":"rotate"`) || !strings.Contains(r.logs.String(), `"key":"canary"`) {
		t.Fatalf("admin changes not logged: %s", r.logs.String())
	}
}

// gather renders reg's metrics as text.
func gather(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range fams {
		b.WriteString(f.String())
	}
	return b.String()
}

// TestGatewayKeysConfigDrift: a stored key naming a lane or route the
// configuration no longer has keeps working without it.
func TestGatewayKeysConfigDrift(t *testing.T) {
	cfg := testConfig()
	recs := []keystore.Record{
		{Name: "k1", SHA256: strings.Repeat("ab", 32), Lanes: []string{"gone", "batch"}, DefaultLane: "gone", Routes: []string{"old-route"}},
		{Name: "k2", SHA256: strings.Repeat("cd", 32)},
		{Name: "file-key", SHA256: strings.Repeat("ef", 32)},
		{Name: "k3", SHA256: strings.Repeat("01", 32), Revoked: true},
	}
	got := keystore.GatewayKeys(recs, cfg, time.Now())
	if len(got) != 2 {
		t.Fatalf("got %d keys, want k1 and k2 (file-key shadowed, k3 revoked): %+v", len(got), got)
	}
	if k := got[0]; k.DefaultLane != "batch" || len(k.Lanes) != 1 || k.Lanes[0] != "batch" || k.Routes[0] != "old-route" {
		t.Fatalf("k1 after its lane went: %+v", k)
	}
	if k := got[1]; k.DefaultLane != "interactive" || len(k.Lanes) != 2 || k.Routes[0] != "*" {
		t.Fatalf("k2 defaults: %+v", k)
	}
}
