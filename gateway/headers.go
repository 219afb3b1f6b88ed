package gateway

// This file owns which client headers go upstream, and request ids.

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// dropRequestHeaders are never forwarded upstream: hop-by-hop headers
// (RFC 9110 §7.6.1), the client's credentials, what the transport sets
// itself, and Accept-Encoding, which would stop Go's transport from
// decompressing transparently and leave the relay reading compressed SSE.
var dropRequestHeaders = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Host":                true,
	"Content-Length":      true,
	"Content-Type":        true,
	"Accept":              true,
	"Accept-Encoding":     true,
	"Authorization":       true,
	"X-Api-Key":           true,
	"Cookie":              true,
	"Expect":              true,
	// The client's account headers belong to the client's key, not ours.
	"Openai-Organization":    true,
	"Openai-Project":         true,
	"Anthropic-Workspace-Id": true,
	"X-Forwarded-For":        true,
}

// forwardHeaders returns the client headers to send upstream: everything
// but dropRequestHeaders, headers named in Connection, and the relay's own
// x-relay-* headers. anthropic-version and anthropic-beta pass unchanged.
func forwardHeaders(in http.Header) http.Header {
	out := make(http.Header, len(in))
	var connTokens []string
	if c := in["Connection"]; len(c) > 0 {
		for _, v := range c {
			for _, tok := range strings.Split(v, ",") {
				if tok = strings.TrimSpace(tok); tok != "" {
					connTokens = append(connTokens, http.CanonicalHeaderKey(tok))
				}
			}
		}
	}
outer:
	for k, vv := range in {
		if dropRequestHeaders[k] || strings.HasPrefix(k, "X-Relay-") {
			continue
		}
		for _, t := range connTokens {
			if t == k {
				continue outer
			}
		}
		out[k] = vv
	}
	return out
}

// newRequestID returns a fresh request id: "req_" and 24 hex digits.
func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	var out [28]byte
	copy(out[:], "req_")
	hex.Encode(out[4:], b[:])
	return string(out[:])
}
