package actor

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Canonical header keys (net/http canonicalizes response headers, so a map
// lookup with these allocates nothing).
const (
	hAnthReqRemaining = "Anthropic-Ratelimit-Requests-Remaining"
	hAnthReqReset     = "Anthropic-Ratelimit-Requests-Reset"
	hAnthInRemaining  = "Anthropic-Ratelimit-Input-Tokens-Remaining"
	hAnthInReset      = "Anthropic-Ratelimit-Input-Tokens-Reset"
	hAnthOutRemaining = "Anthropic-Ratelimit-Output-Tokens-Remaining"
	hAnthOutReset     = "Anthropic-Ratelimit-Output-Tokens-Reset"
	hAnthTokRemaining = "Anthropic-Ratelimit-Tokens-Remaining"
	hAnthTokReset     = "Anthropic-Ratelimit-Tokens-Reset"
	hOAIReqRemaining  = "X-Ratelimit-Remaining-Requests"
	hOAIReqReset      = "X-Ratelimit-Reset-Requests"
	hOAITokRemaining  = "X-Ratelimit-Remaining-Tokens"
	hOAITokReset      = "X-Ratelimit-Reset-Tokens"
)

// learn caps the buckets from upstream rate-limit headers; a.mu is held.
func (a *Actor) learn(now time.Time, h http.Header) {
	learnPair(now, h, &a.req, hAnthReqRemaining, hAnthReqReset)
	if !learnPair(now, h, &a.in, hAnthInRemaining, hAnthInReset) {
		learnPair(now, h, &a.in, hAnthTokRemaining, hAnthTokReset)
	}
	learnPair(now, h, &a.out, hAnthOutRemaining, hAnthOutReset)
	learnPair(now, h, &a.req, hOAIReqRemaining, hOAIReqReset)
	learnPair(now, h, &a.in, hOAITokRemaining, hOAITokReset)
}

// learnPair applies one remaining/reset header pair to b and reports whether
// both were present and valid.
func learnPair(now time.Time, h http.Header, b *bucket, remKey, resetKey string) bool {
	rem, ok := header(h, remKey)
	if !ok {
		return false
	}
	resetV, ok := header(h, resetKey)
	if !ok {
		return false
	}
	remaining, err := strconv.ParseFloat(rem, 64)
	if err != nil {
		return false
	}
	reset, ok := parseReset(now, resetV)
	if !ok {
		return false
	}
	b.learn(now, remaining, reset)
	return true
}

func header(h http.Header, key string) (string, bool) {
	v := h[key]
	if len(v) == 0 {
		return "", false
	}
	s := strings.TrimSpace(v[0])
	return s, s != ""
}

// parseReset reads a reset time: RFC 3339 (Anthropic), a Go-style duration
// such as "1s", "6m0s" or "20ms" (OpenAI), or a bare number of seconds from
// now (a Unix time when larger than 1e9), as some compatible servers send.
func parseReset(now time.Time, s string) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, true
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f > 1e12 {
		return time.Time{}, false
	}
	if f > 1e9 {
		sec, frac := int64(f), f-float64(int64(f))
		return time.Unix(sec, int64(frac*1e9)), true
	}
	return now.Add(time.Duration(f * float64(time.Second))), true
}
