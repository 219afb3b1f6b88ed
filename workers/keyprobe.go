package workers

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// KeyVerdict is what a key probe found out about a provider's own key.
type KeyVerdict uint8

// Key probe verdicts.
const (
	// KeyUnknown: the probe could not tell (connection error, timeout, an
	// answer other than 2xx, 401 or 403, or the caller went away).
	KeyUnknown KeyVerdict = iota
	// KeyAccepted: the upstream served the probe with the key.
	KeyAccepted
	// KeyRefused: the upstream refused the key (401 or 403) on the probe too.
	KeyRefused
)

// String names the verdict for logs.
func (v KeyVerdict) String() string {
	switch v {
	case KeyAccepted:
		return "accepted"
	case KeyRefused:
		return "refused"
	}
	return "unknown"
}

// KeyProber is implemented by providers that can check their own key with
// a request that depends on nothing but the key. The router asks it when an
// upstream answers 403 with a body that blames the key, to tell a revoked
// or unauthorised key (every caller fails) from a request the key may not
// make (only that caller fails). Providers that do not implement it never
// have a 403 held against their key.
type KeyProber interface {
	// ProbeKey reports whether the upstream accepts the provider's key. It
	// blocks until the verdict is known or ctx ends (KeyUnknown).
	ProbeKey(ctx context.Context) KeyVerdict
}

var _ KeyProber = (*HTTPProvider)(nil)

// keyProbeHoldoff is how long a probe's verdict other than KeyRefused
// stands: 403s in that time are taken as the request's, without another
// probe. A KeyRefused verdict sets the provider aside for authQuarantine.
const keyProbeHoldoff = 30 * time.Second

// keyProbeTimeout bounds one probe (and never exceeds FirstByteTimeout).
const keyProbeTimeout = 10 * time.Second

// keyProbe is an HTTPProvider's probe state: at most one probe in flight,
// and the last verdict while it stands.
type keyProbe struct {
	mu        sync.Mutex
	inflight  *probeCall
	last      KeyVerdict
	lastUntil time.Time
}

// probeCall is one probe; done is closed once verdict is set.
type probeCall struct {
	done    chan struct{}
	verdict KeyVerdict
}

// ProbeKey checks the provider's key with GET /v1/models (Anthropic:
// /v1/models?limit=1), which needs nothing but a valid key. Concurrent
// callers share one probe, and a verdict stands for a while (30 s), so a
// stream of 403s costs one probe, not one per request. KeyRefused sets the
// provider aside (HealthCheck false) as a 401 does. The probe runs on its
// own deadline, so a caller that goes away does not cut it short for the
// others.
func (p *HTTPProvider) ProbeKey(ctx context.Context) KeyVerdict {
	now := time.Now()
	if now.UnixNano() < p.sickUntil.Load() {
		return KeyRefused
	}
	p.probe.mu.Lock()
	if now.Before(p.probe.lastUntil) {
		v := p.probe.last
		p.probe.mu.Unlock()
		return v
	}
	c := p.probe.inflight
	if c == nil {
		c = &probeCall{done: make(chan struct{})}
		p.probe.inflight = c
		go p.runProbe(c)
	}
	p.probe.mu.Unlock()
	select {
	case <-c.done:
		return c.verdict
	case <-ctx.Done():
		return KeyUnknown
	}
}

// runProbe makes probe c and publishes its verdict.
func (p *HTTPProvider) runProbe(c *probeCall) {
	v := p.probeOnce()
	now := time.Now()
	if v == KeyRefused {
		p.sickUntil.Store(now.Add(authQuarantine).UnixNano())
	}
	p.probe.mu.Lock()
	p.probe.inflight = nil
	if v != KeyRefused {
		p.probe.last, p.probe.lastUntil = v, now.Add(keyProbeHoldoff)
	}
	c.verdict = v
	p.probe.mu.Unlock()
	close(c.done)
}

// probeOnce sends one probe request and reads its verdict.
func (p *HTTPProvider) probeOnce() KeyVerdict {
	ctx, cancel := context.WithTimeout(context.Background(), min(keyProbeTimeout, p.opts.FirstByteTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.probeURL, nil)
	if err != nil {
		return KeyUnknown
	}
	req.Header.Set("Accept", "application/json")
	p.setAuth(req.Header)
	resp, err := p.client.Do(req)
	if err != nil {
		return KeyUnknown
	}
	drain(resp)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return KeyAccepted
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return KeyRefused
	}
	return KeyUnknown
}
