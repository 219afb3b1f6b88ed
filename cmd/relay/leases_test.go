package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// TestClusterLeases: three relays on an embedded cluster divide the
// provider's max_concurrency (8) among them: the shares never sum past it,
// one relay coordinates, and when the coordinator is killed another takes
// over and every live relay stays ready on a granted share.
func TestClusterLeases(t *testing.T) {
	t.Parallel()
	routes := []string{freePort(t), freePort(t), freePort(t)}
	rs, _ := newClusterRelays(t, 3, embeddedClusterNATS(routes))
	startAll(t, rs)
	share := func(r *clusterRelay) float64 {
		return r.p.metric(`relay_lease_share{limit="max_concurrency",provider="sim"}`)
	}
	coord := func(r *clusterRelay) bool { return r.p.metric(`relay_lease_coordinator{provider="sim"}`) == 1 }
	var leader *clusterRelay
	natstest.Eventually(t, 60*time.Second, "shares granted, one coordinator", func() bool {
		sum, n := 0.0, 0
		leader = nil
		for _, r := range rs {
			s := share(r)
			if s < 1 {
				return false // a relay joining waits for the first to give some back
			}
			sum += s
			if coord(r) {
				n++
				leader = r
			}
		}
		return n == 1 && sum >= 6 && sum <= 8
	})
	for _, r := range rs {
		if s := share(r); s < 1 || s > 8 {
			t.Errorf("%s: max_concurrency share %v", r.addr, s)
		}
	}
	leader.p.kill()
	var live []*clusterRelay
	for _, r := range rs {
		if r != leader {
			live = append(live, r)
		}
	}
	natstest.Eventually(t, 60*time.Second, "a new coordinator", func() bool { return coord(live[0]) || coord(live[1]) })
	natstest.Eventually(t, 60*time.Second, "the dead relay's share reused", func() bool {
		return share(live[0])+share(live[1]) == 8
	})
	for _, r := range live {
		// Ready again once the streams the dead node led have new leaders.
		natstest.Eventually(t, 60*time.Second, "live relay ready", func() bool {
			code, body := r.p.get(r.addr, "/readyz")
			if code != http.StatusOK && strings.Contains(body, "safe share") {
				t.Errorf("%s: /readyz %d %s", r.addr, code, body)
			}
			return code == http.StatusOK
		})
		if s := r.p.metric(`relay_lease_safe_share{provider="sim"}`); s != 0 {
			t.Errorf("%s: relay_lease_safe_share %v", r.addr, s)
		}
	}
}
