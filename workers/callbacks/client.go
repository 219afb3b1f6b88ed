package callbacks

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// Client defaults.
const (
	// DefaultTimeout bounds a whole callback request, from dial to the end
	// of the (limited) response body.
	DefaultTimeout = 10 * time.Second
	// DefaultDialTimeout bounds establishing a TCP connection.
	DefaultDialTimeout = 5 * time.Second
)

// ClientOptions configures NewClient.
type ClientOptions struct {
	// AllowPrivate turns the dial-time address check off, so loopback and
	// private receivers can be reached (development and tests).
	AllowPrivate bool
	// Timeout bounds a whole request; 0 means DefaultTimeout.
	Timeout time.Duration
	// DialTimeout bounds a TCP connect; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// RootCAs, if set, replaces the system roots for verifying receivers'
	// certificates (a private CA, or an httptest TLS server). Certificate
	// verification itself cannot be turned off.
	RootCAs *x509.CertPool
}

// NewClient returns an http.Client for delivering callbacks:
//
//   - its dialer's Control hook checks every address actually dialled with
//     the same policy as Checker (unless AllowPrivate), so a host name that
//     resolved to a public address when the URL was checked and to a
//     private one at connection time (DNS rebinding) is refused with an
//     error wrapping ErrForbiddenAddress;
//   - it never follows redirects: a 3xx is returned as the response;
//   - it never uses a proxy, not even one named by HTTP_PROXY or
//     HTTPS_PROXY, because through a proxy the dialled address would be the
//     proxy's and the check would mean nothing;
//   - TLS certificates are always verified, with TLS 1.2 at least.
//
// The client is safe for concurrent use. Call CloseIdleConnections when it
// is no longer needed.
func NewClient(opts ClientOptions) *http.Client {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	dialTimeout := opts.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	if !opts.AllowPrivate {
		d.Control = dialControl
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: opts.RootCAs},
		TLSHandshakeTimeout:    dialTimeout,
		ResponseHeaderTimeout:  timeout,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// dialControl is a net.Dialer Control hook that refuses to connect to an
// address callbacks may not reach. address is the resolved "ip:port".
func dialControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot check dialled address", ErrForbiddenAddress)
	}
	if !allowedAddr(ap.Addr()) {
		return fmt.Errorf("%w: connection to a loopback, private, link-local, metadata or reserved address refused", ErrForbiddenAddress)
	}
	return nil
}
