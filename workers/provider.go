// This file owns the HTTP provider: one upstream endpoint, its key and
// its pooled transport. Its settings come from configs (no defaults here).

package workers

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Provider is one upstream API endpoint: it sends a prepared call upstream
// and reports whether it is currently usable.
type Provider interface {
	// Call sends c upstream and returns the raw response. The caller must
	// close the response body.
	Call(ctx context.Context, c *Call) (*http.Response, error)
	// HealthCheck reports whether the provider is believed usable.
	HealthCheck() bool
}

// Call is one upstream request, already in the provider's own format.
type Call struct {
	// Body is the request body with the upstream model name in place.
	Body []byte
	// Stream reports whether a server-sent event stream was asked for.
	Stream bool
	// Header holds client headers to forward (no auth, no hop-by-hop).
	Header http.Header
}

// ProviderOptions configure an HTTPProvider.
type ProviderOptions struct {
	// Name identifies the provider in metrics and logs.
	Name string
	// Format is the upstream's API format.
	Format Format
	// BaseURL is the upstream base URL: without /v1 for Anthropic, with it
	// for OpenAI-compatible APIs.
	BaseURL string
	// APIKey replaces the client's relay key.
	APIKey string
	// Timeout bounds one call, the whole streamed body included; it must
	// be positive (providers[].timeout: configs owns the defaults of
	// every setting here).
	Timeout time.Duration
	// FirstByteTimeout bounds the wait for a streaming call's response
	// headers; it must be positive, and is cut to Timeout when longer
	// (providers[].first_byte_timeout). Non-streaming calls get their
	// headers only with the whole answer, so Timeout alone bounds them.
	// Expiry fails the call with ErrFirstByteTimeout.
	FirstByteTimeout time.Duration
	// MaxIdleConns bounds idle keep-alive connections
	// (providers[].max_idle_conns). 0 keeps 64, as max_idle_conns: 0
	// always has: zero is not "no idle connections" here.
	MaxIdleConns int
	// DialTimeout bounds connection set-up; 0 means 10s (not a setting of
	// the configuration: only tests change it).
	DialTimeout time.Duration
	// TLSConfig, when set, replaces the default TLS configuration (tests
	// use it to trust a test CA). Verification is never disabled.
	TLSConfig *tls.Config
}

// HTTPProvider is a Provider speaking the Anthropic or OpenAI API over one
// pooled http.Transport. Connections are opened lazily on first use and kept
// alive; HTTP/2 is used where the upstream offers it. It is safe for
// concurrent use; call CloseIdleConnections when discarding it.
type HTTPProvider struct {
	opts      ProviderOptions
	endpoint  string
	probeURL  string // GET with the key: does the upstream accept it?
	transport *http.Transport
	client    *http.Client
	authName  string
	authValue string
	// sickUntil is when the provider counts as healthy again (unix nanos)
	// after the upstream refused its key.
	sickUntil atomic.Int64
	// probe is the key probe state (see ProbeKey).
	probe keyProbe
	// modelsURL lists the upstream's models; modelList caches them
	// (see UpstreamModels).
	modelsURL string
	modelList modelCache
}

// Fallbacks for the options whose zero means them (see ProviderOptions).
const (
	idleConnsForZero   = 64
	defaultDialTimeout = 10 * time.Second
)

// ErrFirstByteTimeout is returned by HTTPProvider.Call when a streaming
// call got no response headers within the provider's FirstByteTimeout.
var ErrFirstByteTimeout = errors.New("upstream sent no response headers in time")

// authQuarantine is how long a provider whose key the upstream refused is
// skipped before it is tried again.
const authQuarantine = 30 * time.Second

var _ Provider = (*HTTPProvider)(nil)

// NewProvider returns an HTTPProvider for opts.
func NewProvider(opts ProviderOptions) (*HTTPProvider, error) {
	u, err := url.Parse(opts.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("provider %s: base url must be an absolute http(s) URL", opts.Name)
	}
	if opts.Timeout <= 0 || opts.FirstByteTimeout <= 0 {
		return nil, fmt.Errorf("provider %s: timeout %s and first byte timeout %s must be positive",
			opts.Name, opts.Timeout, opts.FirstByteTimeout)
	}
	if opts.MaxIdleConns <= 0 {
		opts.MaxIdleConns = idleConnsForZero
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	opts.FirstByteTimeout = min(opts.FirstByteTimeout, opts.Timeout)
	base := strings.TrimSuffix(opts.BaseURL, "/")
	p := &HTTPProvider{opts: opts}
	switch opts.Format {
	case FormatAnthropic:
		p.endpoint = base + "/v1/messages"
		p.probeURL = base + "/v1/models?limit=1"
		p.modelsURL = base + "/v1/models"
		p.authName, p.authValue = "X-Api-Key", opts.APIKey
	case FormatOpenAI:
		p.endpoint = base + "/chat/completions"
		p.probeURL = base + "/models"
		p.modelsURL = base + "/models"
		p.authName, p.authValue = "Authorization", "Bearer "+opts.APIKey
	default:
		return nil, fmt.Errorf("provider %s: unknown format %d", opts.Name, opts.Format)
	}
	tlsConf := opts.TLSConfig
	if tlsConf == nil {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	dialer := &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second}
	p.transport = &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          opts.MaxIdleConns,
		MaxIdleConnsPerHost:   opts.MaxIdleConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       tlsConf,
		// Response headers of a non-streaming generation arrive only when
		// it is complete, so they may take as long as the whole call; a
		// streaming call's wait for them is bounded per call, by
		// FirstByteTimeout (see Call).
		ResponseHeaderTimeout: opts.Timeout,
	}
	p.modelList.bg, p.modelList.cancel = context.WithCancel(context.Background())
	p.client = &http.Client{
		Transport: p.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return p, nil
}

// Name returns the provider's name.
func (p *HTTPProvider) Name() string { return p.opts.Name }

// Format returns the upstream's API format.
func (p *HTTPProvider) Format() Format { return p.opts.Format }

// Timeout returns the bound on one call.
func (p *HTTPProvider) Timeout() time.Duration { return p.opts.Timeout }

// FirstByteTimeout returns the bound on a streaming call's wait for its
// response headers.
func (p *HTTPProvider) FirstByteTimeout() time.Duration { return p.opts.FirstByteTimeout }

// HealthCheck reports whether the provider is usable: false for a while
// after the upstream refused the provider's own key (a 401, or a 403 that
// ProbeKey confirmed), and again true as soon as a call succeeds.
func (p *HTTPProvider) HealthCheck() bool {
	return time.Now().UnixNano() >= p.sickUntil.Load()
}

// observe records the health signal of an upstream status.
func (p *HTTPProvider) observe(status int) {
	switch {
	case status == http.StatusUnauthorized:
		p.sickUntil.Store(time.Now().Add(authQuarantine).UnixNano())
	case status >= 200 && status < 300:
		if p.sickUntil.Load() != 0 {
			p.sickUntil.Store(0)
		}
	}
}

// CloseIdleConnections closes the transport's idle connections.
func (p *HTTPProvider) CloseIdleConnections() { p.transport.CloseIdleConnections() }

// Call sends c upstream with the provider's key. A streaming call that gets
// no response headers within FirstByteTimeout fails with
// ErrFirstByteTimeout; once they have come, only ctx bounds the body.
func (p *HTTPProvider) Call(ctx context.Context, c *Call) (*http.Response, error) {
	if !c.Stream {
		return p.send(ctx, c)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(p.opts.FirstByteTimeout, func() { cancel(ErrFirstByteTimeout) })
	resp, err := p.send(ctx, c)
	if fired := !timer.Stop(); fired {
		if resp != nil {
			resp.Body.Close()
		}
		cancel(nil)
		return nil, fmt.Errorf("%w (first_byte_timeout %s)", ErrFirstByteTimeout, p.opts.FirstByteTimeout)
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose releases a streaming call's context when its body closes.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

// Close closes the body, then releases the call's context.
func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// setAuth sets the provider's key and, for Anthropic, a default
// anthropic-version.
func (p *HTTPProvider) setAuth(h http.Header) {
	if p.opts.Format == FormatAnthropic && h.Get("Anthropic-Version") == "" {
		h.Set("Anthropic-Version", "2023-06-01")
	}
	h.Set(p.authName, p.authValue)
}

// send makes the upstream request.
func (p *HTTPProvider) send(ctx context.Context, c *Call) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.endpoint, bytes.NewReader(c.Body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	h := req.Header
	for k, vv := range c.Header {
		if p.opts.Format == FormatOpenAI && strings.HasPrefix(k, "Anthropic-") {
			continue
		}
		h[k] = vv
	}
	h.Set("Content-Type", "application/json")
	if c.Stream {
		h.Set("Accept", "text/event-stream")
	} else {
		h.Set("Accept", "application/json")
	}
	p.setAuth(h)
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	p.observe(resp.StatusCode)
	return resp, nil
}
