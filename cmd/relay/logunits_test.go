package main

import (
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// goDuration matches a Go duration string ("30s", "1h0m0s", "1.5ms").
var goDuration = regexp.MustCompile(`^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$`)

// TestLogDurationsHaveUnits: no line a relay logs from its start through a
// request to its shutdown holds a duration without its unit: durations
// (measured or configured) are numbers under keys ending in _ms or _s,
// never Go duration strings, alone or as "old -> new".
func TestLogDurationsHaveUnits(t *testing.T) {
	t.Parallel()
	p := startReady(t, relayOpts{grace: "2s", tokenInterval: "1ms"})
	if code := p.message(canaryKey); code != http.StatusOK {
		t.Fatalf("request: %d", code)
	}
	p.signal(syscall.SIGTERM)
	if code := p.waitExit(15 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	lines := p.logLines()
	for _, l := range lines {
		for k, v := range l {
			s, ok := v.(string)
			if !ok || k == "msg" {
				continue
			}
			for _, part := range strings.Split(s, " -> ") {
				if goDuration.MatchString(part) {
					t.Errorf("line %q: %s = %q, a duration without its unit in the key", l["msg"], k, s)
				}
			}
		}
	}
	// The settings echoed at start and stop, in seconds.
	for _, want := range []struct{ msg, key string }{
		{"created stream", "max_age_s"},
		{"created bucket", "ttl_s"},
		{"shutting down", "grace_s"},
	} {
		var found bool
		for _, l := range lines {
			if l["msg"] == want.msg {
				_, num := l[want.key].(float64)
				found = found || num
			}
		}
		if !found {
			t.Errorf("no %q line with a number %s", want.msg, want.key)
		}
	}
}
