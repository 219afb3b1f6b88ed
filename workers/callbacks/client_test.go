package callbacks

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestDialControl(t *testing.T) {
	tests := []struct {
		address string
		want    error
	}{
		{"93.184.216.34:443", nil},
		{"[2606:2800:220:1:248:1893:25c8:1946]:443", nil},
		{"127.0.0.1:80", ErrForbiddenAddress},
		{"127.0.0.53:53", ErrForbiddenAddress},
		{"[::1]:80", ErrForbiddenAddress},
		{"[::ffff:127.0.0.1]:80", ErrForbiddenAddress},
		{"10.0.0.1:80", ErrForbiddenAddress},
		{"169.254.169.254:80", ErrForbiddenAddress},
		{"[fd00:ec2::254]:80", ErrForbiddenAddress},
		{"[fe80::1%eth0]:80", ErrForbiddenAddress},
		{"0.0.0.0:80", ErrForbiddenAddress},
		{"not-an-address", ErrForbiddenAddress},
	}
	for _, tt := range tests {
		t.Run(tt.address, func(t *testing.T) {
			err := dialControl("tcp", tt.address, nil)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("dialControl(%q) = %v; want %v", tt.address, err, tt.want)
			}
		})
	}
}

// countingServer is an httptest server that counts requests and answers
// with handler (200 when nil).
func countingServer(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if handler != nil {
			handler(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	return ts, &hits
}

// newTestClient returns NewClient(opts) whose dialer sees every name in
// rebind as resolving to to (simulating DNS answers at connection time),
// and closes its idle connections when the test ends.
func newTestClient(t *testing.T, opts ClientOptions, rebind map[string]string) *http.Client {
	t.Helper()
	c := NewClient(opts)
	tr := c.Transport.(*http.Transport)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h, port, err := net.SplitHostPort(addr); err == nil {
			if to, ok := rebind[h]; ok {
				addr = net.JoinHostPort(to, port)
			}
		}
		return dial(ctx, network, addr)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestClientDNSRebinding: the name resolves to a public address when the
// URL is checked and to loopback when the client connects.
func TestClientDNSRebinding(t *testing.T) {
	tests := []struct {
		name         string
		allowPrivate bool
		wantErr      error
		wantHits     int64
	}{
		{name: "strict client refuses the rebound address", allowPrivate: false, wantErr: ErrForbiddenAddress, wantHits: 0},
		{name: "allow-private client connects", allowPrivate: true, wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, hits := countingServer(t, nil)
			_, port, err := net.SplitHostPort(ts.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			u := "http://rebind.example.com:" + port + "/cb"
			if err := CheckURL(context.Background(), u, newFakeResolver()); err != nil {
				t.Fatalf("CheckURL(%q) = %v; want nil (public at check time)", u, err)
			}
			c := newTestClient(t, ClientOptions{AllowPrivate: tt.allowPrivate}, map[string]string{"rebind.example.com": "127.0.0.1"})
			resp, err := c.Get(u)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Get(%q) error = %v; want %v", u, err, tt.wantErr)
			}
			if got := hits.Load(); got != tt.wantHits {
				t.Errorf("receiver hits = %d; want %d", got, tt.wantHits)
			}
		})
	}
}

func TestClientNoRedirect(t *testing.T) {
	target, targetHits := countingServer(t, nil)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			ts, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL+"/internal", code)
			})
			c := newTestClient(t, ClientOptions{AllowPrivate: true}, nil)
			resp, err := c.Post(ts.URL, "application/json", nil)
			if err != nil {
				t.Fatalf("Post: %v", err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != code {
				t.Errorf("status = %d; want %d (redirect returned, not followed)", resp.StatusCode, code)
			}
			if got := targetHits.Load(); got != 0 {
				t.Errorf("redirect target hits = %d; want 0", got)
			}
		})
	}
}

func TestClientNoProxy(t *testing.T) {
	proxy, proxyHits := countingServer(t, nil)
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("http_proxy", proxy.URL)
	ts, hits := countingServer(t, nil)
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())

	c := newTestClient(t, ClientOptions{AllowPrivate: true}, map[string]string{"hooks.example.com": "127.0.0.1"})
	if p := c.Transport.(*http.Transport).Proxy; p != nil {
		t.Fatalf("Transport.Proxy is set; want nil")
	}
	resp, err := c.Get("http://hooks.example.com:" + port + "/")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	_ = resp.Body.Close()
	if hits.Load() != 1 || proxyHits.Load() != 0 {
		t.Errorf("receiver hits = %d, proxy hits = %d; want 1, 0", hits.Load(), proxyHits.Load())
	}
}

func TestClientTLSVerification(t *testing.T) {
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	ts.StartTLS()
	t.Cleanup(ts.Close)
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	tests := []struct {
		name    string
		roots   *x509.CertPool
		wantErr bool
	}{
		{name: "unknown authority refused", roots: nil, wantErr: true},
		{name: "trusted root accepted", roots: pool, wantErr: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, ClientOptions{AllowPrivate: true, RootCAs: tt.roots}, nil)
			if c.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify {
				t.Fatal("InsecureSkipVerify is set")
			}
			resp, err := c.Get(ts.URL)
			if err == nil {
				_ = resp.Body.Close()
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("Get(%s) error = %v; wantErr %v", ts.URL, err, tt.wantErr)
			}
		})
	}
}

func TestNewClientDefaults(t *testing.T) {
	c := NewClient(ClientOptions{})
	t.Cleanup(c.CloseIdleConnections)
	if c.Timeout != DefaultTimeout {
		t.Errorf("Timeout = %v; want %v", c.Timeout, DefaultTimeout)
	}
	if err := c.CheckRedirect(nil, nil); !errors.Is(err, http.ErrUseLastResponse) {
		t.Errorf("CheckRedirect = %v; want http.ErrUseLastResponse", err)
	}
}
