package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
)

// writeFile writes data to name in dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNATSClientOptions connects to a separate NATS server (an embedded
// one started by the test, requiring authentication) with each way the
// relay can authenticate to nats.url.
func TestNATSClientOptions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, errSeed := kp.Seed()
	pub, errPub := kp.PublicKey()
	other, errOther := nkeys.CreateUser()
	if err := errors.Join(errSeed, errPub, errOther); err != nil {
		t.Fatal(err)
	}
	otherSeed, err := other.Seed()
	if err != nil {
		t.Fatal(err)
	}
	all := []string{">"}
	srv := natstest.StartWith(t, embeddednats.Options{
		Listen:  "127.0.0.1:0",
		Tenants: []embeddednats.Tenant{{Name: "relay-a", SHA256: sha256.Sum256([]byte("tok-123"))}},
		Users: []embeddednats.User{
			{Name: "relay", Password: "pw-456", Publish: all, Subscribe: all},
			{Name: "seeded", Nkey: pub, Publish: all, Subscribe: all},
		},
	})
	tests := []struct {
		name string
		c    configs.NATS
		ok   bool
	}{
		{name: "none", c: configs.NATS{}},
		{name: "user and password", c: configs.NATS{User: "relay", Password: "pw-456"}, ok: true},
		{name: "wrong password", c: configs.NATS{User: "relay", Password: "nope"}},
		{name: "token", c: configs.NATS{Token: "tok-123"}, ok: true},
		{name: "wrong token", c: configs.NATS{Token: "tok-999"}},
		{name: "nkey seed file", c: configs.NATS{NkeySeedFile: writeFile(t, dir, "seed.nk", seed)}, ok: true},
		{name: "unknown nkey", c: configs.NATS{NkeySeedFile: writeFile(t, dir, "other.nk", otherSeed)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := natsClientOptions(tt.c)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			nc, err := embeddednats.Connect(ctx, srv.ClientURL(), opts...)
			if !tt.ok {
				if err == nil {
					nc.Close()
					t.Fatal("connected; want refused")
				}
				if !errors.Is(err, nats.ErrAuthorization) {
					t.Fatalf("connect: %v; want an authorization error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer nc.Close()
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// testPKI is a CA with a server and a client certificate, as PEM files.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	pool                                             *x509.CertPool
}

func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			writeFile(t, dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	}
	p := testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	p.ca = writeFile(t, dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	p.serverCert, p.serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issue("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

// startTLSServer starts a NATS server that requires TLS with a client
// certificate signed by pki's CA.
func startTLSServer(t *testing.T, pki testPKI) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.serverCert, pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		TLS: true, TLSVerify: true, TLSTimeout: 5,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pki.pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("TLS server not ready")
	}
	return "tls://" + ns.Addr().String()
}

func TestNATSClientTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	url := startTLSServer(t, pki)
	other := newTestPKI(t, t.TempDir())
	tests := []struct {
		name string
		tls  configs.NATSTLS
		want string // error substring; "" = connects
	}{
		{name: "CA and client certificate", tls: configs.NATSTLS{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}},
		{name: "no client certificate", tls: configs.NATSTLS{CAFile: pki.ca}, want: "tls"},
		{name: "server not signed by the CA", tls: configs.NATSTLS{CAFile: other.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}, want: "certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := natsClientOptions(configs.NATS{TLS: tt.tls})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			nc, err := embeddednats.Connect(ctx, url, opts...)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				defer nc.Close()
				if !nc.TLSRequired() {
					t.Error("connection is not TLS")
				}
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("connected; want refused")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("connect: %v; want %q", err, tt.want)
			}
		})
	}
}

// TestReloadNATSKeyRemoved: a key removed from the configuration can no
// longer log in on the embedded server's client port once the relay has
// reloaded, and its open connection is closed; the kept key still logs in.
func TestReloadNATSKeyRemoved(t *testing.T) {
	t.Parallel()
	const other = "relay-other-key-3c41"
	natsAddr := freePort(t)
	withNATS := func(p *relayProc, keys []string) string {
		cfg := p.reloadConfig(keys, providerSim+"routes:\n"+routeSonnet)
		return strings.Replace(cfg, "  listen: \"\"\n", "  listen: "+natsAddr+"\n", 1)
	}
	dir := t.TempDir()
	p := startServe(t, relayOpts{grace: "2s", tokenInterval: "1ms"}, dir, filepath.Join(dir, "relay.yaml"), func(p *relayProc) {
		p.writeConfig(withNATS(p, []string{canaryKey, other}))
	})
	dial := func(key string) error {
		nc, err := nats.Connect("nats://" + key + "@" + natsAddr)
		if err == nil {
			nc.Close()
		}
		return err
	}
	closed := make(chan struct{})
	open, err := nats.Connect("nats://"+other+"@"+natsAddr, nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("key1 before reload: %v", err)
	}
	defer open.Close()
	if err := dial("not-a-key"); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("unknown key: %v; want an authorization error", err)
	}

	p.writeConfig(withNATS(p, []string{canaryKey}))
	natstest.Eventually(t, 15*time.Second, "config reloaded", func() bool { return p.metric(reloadOK) >= 1 })
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Error("the removed key's open connection was not closed")
	}
	if err := dial(other); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("removed key after reload: %v; want an authorization error", err)
	}
	if err := dial(canaryKey); err != nil {
		t.Errorf("kept key after reload: %v", err)
	}
	p.stop()
}

// TestDemoNATSAccess runs configs/demo.yaml (on free ports) and does what
// its comments tell a user to: the demo key watches its own results with
// its key as token, and demo-ops looks at a stream but writes nothing.
func TestDemoNATSAccess(t *testing.T) {
	t.Parallel()
	demo, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := freePort(t)
	dir := t.TempDir()
	p := startServe(t, relayOpts{grace: "2s"}, dir, filepath.Join(dir, "relay.yaml"), func(p *relayProc) {
		p.writeConfig(strings.NewReplacer("127.0.0.1:8080", p.addr, "127.0.0.1:18790", p.sim,
			"127.0.0.1:4222", natsAddr, "127.0.0.1:8081", freePort(t), "./data/nats-demo", filepath.Join(dir, "nats")).Replace(string(demo)))
	})
	tenant, err := nats.Connect("nats://relay-demo-key@" + natsAddr)
	if err != nil {
		t.Fatalf("demo key as token: %v", err)
	}
	defer tenant.Close()
	sub, err := tenant.SubscribeSync("relay.results.demo.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := tenant.Flush(); err != nil {
		t.Fatal(err)
	}

	errs := make(chan error, 8)
	ops, err := nats.Connect("nats://demo-ops:demo-ops-password@"+natsAddr, nats.CustomInboxPrefix("_INBOX.demo-ops"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("demo-ops: %v", err)
	}
	defer ops.Close()
	js, err := jetstream.New(ops)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(t.Context(), "RELAY_LANES"); err != nil {
		t.Errorf("demo-ops stream info RELAY_LANES: %v", err)
	}
	if err := ops.Publish("relay.results.demo.job_forged", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, nats.ErrPermissionViolation) {
		t.Errorf("demo-ops publish: %v; want a permissions violation", err)
	}

	code, _, j := p.submitJob(`{"endpoint":"/v1/messages","body":{"model":"claude-sonnet","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}`)
	if code != 202 {
		t.Fatalf("POST /v1/jobs = %d %v", code, j)
	}
	msg, err := sub.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("demo result on NATS: %v", err)
	}
	if want := "relay.results.demo." + j["id"].(string); msg.Subject != want {
		t.Errorf("result subject %s; want %s", msg.Subject, want)
	}
	p.stop()
}

// submitJob POSTs body to /v1/jobs with the demo key.
func (p *relayProc) submitJob(body string) (int, string, map[string]any) {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+p.addr+"/v1/jobs", strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("x-api-key", "relay-demo-key")
	req.Header.Set("content-type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("POST /v1/jobs: read body: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		p.t.Fatalf("POST /v1/jobs: %d %s: not JSON: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, string(b), m
}
