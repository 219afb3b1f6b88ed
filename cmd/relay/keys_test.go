package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/workers/simupstream"
)

// keysToken is the admin token of the keys tests.
const keysToken = "keys-test-admin-token-0b5e2d"

// keysRelayConfig is a relay with an admin listener, two lanes, the
// simulated upstream at sim and natsYAML as its nats section.
// keyPropagation bounds how long a key change may take to reach the other
// relay here: the promise is a second (the test logs what it sees); the
// bound allows for a loaded CI machine.
const keyPropagation = 5 * time.Second

func keysRelayConfig(addr, admin, sim, natsYAML string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nadmin_listen: %s\nadmin: {token: %s}\nshutdown_grace: 2s\n", addr, admin, keysToken)
	fmt.Fprintf(&b, "nats: %s\n", natsYAML)
	b.WriteString("lanes:\n  - {name: interactive, max_wait: 30s}\n  - {name: batch, max_wait: 1h}\n")
	fmt.Fprintf(&b, "providers:\n  - {name: sim, type: anthropic, base_url: %q, api_key: %s}\n", sim, canaryUpstream)
	b.WriteString("routes:\n  - {model: claude-sonnet, targets: [{provider: sim, model: claude-sonnet-4-5}]}\n")
	b.WriteString("  - {model: claude-haiku, targets: [{provider: sim, model: claude-haiku-4-5}]}\n")
	fmt.Fprintf(&b, "keys:\n  - {name: key0, key: %s}\nlog: {level: info}\n", canaryKey)
	return b.String()
}

// keysRelay is one relay of the keys tests.
type keysRelay struct {
	p     *relayProc
	dir   string
	admin string
}

// startKeysRelay writes cfg (from keysRelayConfig with the relay's
// addresses) and starts the relay.
func startKeysRelay(t *testing.T, sim string, natsYAML func(dir string) string) *keysRelay {
	t.Helper()
	r := &keysRelay{dir: t.TempDir(), admin: freePort(t)}
	addr := freePort(t)
	cfg := keysRelayConfig(addr, r.admin, sim, natsYAML(r.dir))
	if err := os.WriteFile(filepath.Join(r.dir, "relay.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r.p = launch(t, r.dir, addr, "")
	return r
}

// ask sends one small request with key (for model) and returns the status.
func (r *keysRelay) ask(key, model string) int {
	return r.p.sendAs(context.Background(), httpClient, key, model)
}

// keysCLI runs `relay keys args...` with env and returns stdout, stderr
// and the exit code.
func keysCLI(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return runRelay(t, t.TempDir(), env, append([]string{"keys"}, args...)...)
}

// natsLogin reports whether secret logs in as tenant name on url.
func natsLogin(url, name, secret string) bool {
	nc, err := nats.Connect(url, nats.Token(secret), nats.CustomInboxPrefix("_INBOX."+name), nats.MaxReconnects(0))
	if err != nil {
		return false
	}
	nc.Close()
	return true
}

// TestKeysTwoRelays drives `relay keys` against two real relays sharing
// one JetStream (the second on nats.url): a key created on one works on
// the other within a second, over HTTP and as a NATS tenant; a reload
// keeps it; rotation keeps the old secret for its grace period; a
// revoked key is refused on both within a second. Then the canary check:
// no secret made through the API appears in a log line, /metrics, a
// stored NATS message or an answer after the one that made it.
func TestKeysTwoRelays(t *testing.T) {
	t.Parallel()
	sim, err := simupstream.Start(context.Background(), "127.0.0.1:0", simupstream.Options{OutputTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	natsA := freePort(t)
	a := startKeysRelay(t, sim.URL(), func(dir string) string {
		return fmt.Sprintf("{listen: %s, store_dir: %s, users: [{user: observer, password: %s, publish: [\">\"], subscribe: [\">\"]}]}",
			natsA, filepath.Join(dir, "nats"), observerPassword)
	})
	b := startKeysRelay(t, sim.URL(), func(string) string {
		return fmt.Sprintf("{url: \"nats://%s\", user: observer, password: %s}", natsA, observerPassword)
	})
	env := []string{"RELAY_ADMIN_TOKEN=" + keysToken}
	var outputs []string // every CLI output after the secret's creation

	// Create on A, through the admin URL.
	out, errOut, code := keysCLI(t, env, "create", "team-b", "--admin-url", "http://"+a.admin, "--lanes", "interactive,batch",
		"--routes", "claude-sonnet", "--rpm", "600", "--budget-tokens", "1000000", "--budget-period", "month")
	if code != 0 {
		t.Fatalf("keys create: exit %d: %s", code, errOut)
	}
	created := time.Now()
	var view struct {
		Key    string `json:"key"`
		Source string `json:"source"`
		RPM    int    `json:"rpm"`
	}
	if err := json.Unmarshal([]byte(out), &view); err != nil || view.Key == "" || view.Source != "api" || view.RPM != 600 {
		t.Fatalf("keys create printed %q (%v)", out, err)
	}
	secret := view.Key
	natstest.Eventually(t, keyPropagation, "created key works on the other relay", func() bool { return b.ask(secret, "claude-sonnet") == 200 })
	t.Logf("created through A, served by B %v after the command returned", time.Since(created))
	if code := b.ask(secret, "claude-haiku"); code != http.StatusForbidden {
		t.Fatalf("route outside the key's routes: %d, want 403", code)
	}
	if !natsLogin("nats://"+natsA, "team-b", secret) {
		t.Fatal("created key does not log in as a NATS tenant")
	}

	// A reload keeps the store's keys.
	a.p.signal(syscall.SIGHUP)
	a.p.waitLog("reload", map[string]string{"msg": "configuration reloaded"})
	if code := a.ask(secret, "claude-sonnet"); code != 200 {
		t.Fatalf("after a reload: %d", code)
	}

	// List through B, its URL and token taken from its configuration.
	out, errOut, code = keysCLI(t, nil, "list", "--config", filepath.Join(b.dir, "relay.yaml"))
	if code != 0 || !strings.Contains(out, `"name": "team-b"`) || !strings.Contains(out, `"name": "key0"`) || !strings.Contains(out, `"source": "config"`) {
		t.Fatalf("keys list: exit %d: %s %s", code, out, errOut)
	}
	outputs = append(outputs, out, errOut)

	// Rotate on B: both secrets work on A during the grace period.
	out, errOut, code = keysCLI(t, env, "rotate", "team-b", "--admin-url", "http://"+b.admin, "--grace", "1h")
	if code != 0 {
		t.Fatalf("keys rotate: exit %d: %s", code, errOut)
	}
	var rot struct {
		Key   string `json:"key"`
		Until string `json:"previous_valid_until"`
	}
	if err := json.Unmarshal([]byte(out), &rot); err != nil || rot.Key == "" || rot.Key == secret || rot.Until == "" {
		t.Fatalf("keys rotate printed %q (%v)", out, err)
	}
	fresh := rot.Key
	natstest.Eventually(t, keyPropagation, "rotated secret works on the other relay", func() bool { return a.ask(fresh, "claude-sonnet") == 200 })
	if code := a.ask(secret, "claude-sonnet"); code != 200 {
		t.Fatalf("old secret in its grace period: %d", code)
	}
	if !natsLogin("nats://"+natsA, "team-b", secret) || !natsLogin("nats://"+natsA, "team-b", fresh) {
		t.Fatal("NATS tenant login with the old or the new secret refused during the grace period")
	}

	out, errOut, code = keysCLI(t, env, "update", "team-b", "--admin-url", "http://"+a.admin, "--routes", "claude-sonnet,claude-haiku", "--no-budget")
	if code != 0 || !strings.Contains(out, `"claude-haiku"`) || strings.Contains(out, `"budget"`) {
		t.Fatalf("keys update: exit %d: %s %s", code, out, errOut)
	}
	outputs = append(outputs, out, errOut)
	natstest.Eventually(t, keyPropagation, "update reaches the other relay", func() bool { return b.ask(fresh, "claude-haiku") == 200 })

	// Rotate with no grace: the old secret stops at once, and its open
	// NATS connection is closed.
	nc, err := nats.Connect("nats://"+natsA, nats.Token(fresh), nats.CustomInboxPrefix("_INBOX.team-b"), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("tenant connect: %v", err)
	}
	defer nc.Close()
	out, errOut, code = keysCLI(t, env, "rotate", "team-b", "--admin-url", "http://"+a.admin, "--grace", "0s")
	if code != 0 || strings.Contains(out, "previous_valid_until") {
		t.Fatalf("keys rotate --grace 0s: exit %d: %s %s", code, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), &rot); err != nil || rot.Key == "" || rot.Key == fresh {
		t.Fatalf("keys rotate printed %q (%v)", out, err)
	}
	previous := fresh
	fresh = rot.Key
	natstest.Eventually(t, keyPropagation, "secret rotated without grace refused on the other relay, its NATS connection closed", func() bool {
		return b.ask(previous, "claude-sonnet") == 401 && b.ask(fresh, "claude-sonnet") == 200 && nc.IsClosed()
	})

	// Revoke on A: refused on B within a second, on HTTP and NATS.
	out, errOut, code = keysCLI(t, env, "revoke", "team-b", "--admin-url", "http://"+a.admin)
	if code != 0 || !strings.Contains(out, `"revoked": true`) {
		t.Fatalf("keys revoke: exit %d: %s %s", code, out, errOut)
	}
	revoked := time.Now()
	outputs = append(outputs, out, errOut)
	natstest.Eventually(t, keyPropagation, "revoked key refused on the other relay", func() bool {
		return b.ask(fresh, "claude-sonnet") == 401 && b.ask(secret, "claude-sonnet") == 401
	})
	t.Logf("revoked through A, refused by B %v after the command returned", time.Since(revoked))
	natstest.Eventually(t, keyPropagation, "revoked key's NATS login refused", func() bool {
		return !natsLogin("nats://"+natsA, "team-b", fresh) && !natsLogin("nats://"+natsA, "team-b", secret)
	})

	out, errOut, code = keysCLI(t, env, "show", "team-b", "--admin-url", "http://"+b.admin)
	if code != 0 || !strings.Contains(out, `"revoked": true`) {
		t.Fatalf("keys show: exit %d: %s %s", code, out, errOut)
	}
	outputs = append(outputs, out, errOut)

	// Errors: wrong token, file key, missing name.
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"RELAY_ADMIN_TOKEN=" + keysToken[:len(keysToken)-1]}, []string{"list", "--admin-url", "http://" + a.admin}, "401"},
		{env, []string{"revoke", "key0", "--admin-url", "http://" + a.admin}, "read-only"},
		{env, []string{"create", "--admin-url", "http://" + a.admin}, "missing the key's NAME"},
		{env, []string{"create", "x", "--rpm", "-1", "--admin-url", "http://" + a.admin}, "rpm: must be >= 0"},
		{nil, []string{"list", "--admin-url", "http://" + a.admin}, "no admin token"},
	} {
		out, errOut, code := keysCLI(t, c.env, c.args...)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("keys %v: exit %d, stderr %q; want 1 and %q", c.args, code, errOut, c.want)
		}
		outputs = append(outputs, out, errOut)
	}

	// The canary: no secret anywhere but in the answers that made it.
	var where []string
	for name, r := range map[string]*keysRelay{"A": a, "B": b} {
		_, metrics := r.p.get(r.p.addr, "/metrics")
		code, list := adminGet(t, r.admin, "/admin/keys")
		if code != 200 {
			t.Fatalf("GET /admin/keys on %s: %d %s", name, code, list)
		}
		where = append(where, "logs of "+name+"\x00"+r.p.stderr.String(), "metrics of "+name+"\x00"+metrics,
			"admin list of "+name+"\x00"+list)
	}
	where = append(where, "CLI outputs\x00"+strings.Join(outputs, "\n"), "NATS\x00"+allStreamMessages(t, "nats://"+natsA))
	for _, w := range where {
		label, text, _ := strings.Cut(w, "\x00")
		for what, s := range map[string]string{"first secret": secret, "rotated secret": previous, "last secret": fresh, "file key": canaryKey} {
			if strings.Contains(text, s) {
				t.Errorf("%s appears in %s", what, label)
			}
		}
	}
	if a.p.findLog(map[string]string{"msg": "admin key change", "action": "revoke", "key": "team-b", "who": "admin"}) == nil {
		t.Error("the revoke is not logged")
	}
	if v := a.p.metric(`relay_admin_key_changes_total{action="create"}`); v != 1 {
		t.Errorf(`relay_admin_key_changes_total{action="create"} on A = %v, want 1`, v)
	}
	if v := b.p.metric(`relay_api_keys{state="revoked"}`); v != 1 {
		t.Errorf(`relay_api_keys{state="revoked"} on B = %v, want 1`, v)
	}
}

// adminGet sends GET path to the admin listener with the admin token.
func adminGet(t *testing.T, admin, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+keysToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// allStreamMessages returns every stored message (subject, headers and
// data) of every stream on url, read as the observer.
func allStreamMessages(t *testing.T, url string) string {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo("observer", observerPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b strings.Builder
	streams := 0
	for name := range js.StreamNames(ctx).Name() {
		streams++
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				continue // deleted
			}
			fmt.Fprintf(&b, "%s %s %v %s\n", name, m.Subject, m.Header, m.Data)
		}
	}
	if streams == 0 || !strings.Contains(b.String(), "team-b") {
		t.Fatalf("scanned %d streams without the key's record: %s", streams, b.String())
	}
	return b.String()
}
