package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// TestClusterLeases: three relays on an embedded cluster divide the
// provider's max_concurrency (8) among them: the shares never sum past it,
// one relay coordinates, and when the coordinator is killed another takes
// over and every live relay stays ready on a granted share. The status
// page shows the granted share and the cluster's peers, the killed one
// offline.
func TestClusterLeases(t *testing.T) {
	t.Parallel()
	routes := []string{freePort(t), freePort(t), freePort(t)}
	rs, _ := newClusterRelays(t, 3, embeddedClusterNATS(routes))
	admins := withStatusPage(t, rs)
	startAll(t, rs)
	for i, r := range rs {
		r.p.admin = admins[i]
	}
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
	var names []string
	for _, r := range rs {
		st := r.p.statusJSON()
		if got := providerField(st, "sim", "granted_share"); !atLeast(got, 0.01) {
			t.Errorf("%s: /status.json sim granted_share %v, want a share", r.addr, got)
		}
		names = peerNames(t, st)
	}
	natstest.Eventually(t, 30*time.Second, "three peers current on the status page", func() bool {
		return fmt.Sprint(peerStates(rs[0].p.statusJSON())) == "map["+names[0]+":current "+names[1]+":current "+names[2]+":current]"
	})
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
		var last string
		ok := natstest.Within(60*time.Second, func() bool {
			code, body := r.p.get(r.addr, "/readyz")
			if code != http.StatusOK && strings.Contains(body, "safe share") {
				t.Errorf("%s: /readyz %d %s", r.addr, code, body)
			}
			last = fmt.Sprintf("%d %s", code, body)
			return code == http.StatusOK
		})
		if !ok {
			t.Fatalf("%s: live relay not ready within 60s; last /readyz %s\nstreams as its NATS node sees them:\n%s",
				r.addr, last, streamLeaders(r.jobsRelay))
		}
		if s := r.p.metric(`relay_lease_safe_share{provider="sim"}`); s != 0 {
			t.Errorf("%s: relay_lease_safe_share %v", r.addr, s)
		}
	}
	// The live relays' page shows the killed relay's NATS node offline
	// (its name: the one peer not current) and the others current.
	var states map[string]any
	defer func() {
		if t.Failed() {
			t.Logf("last peer states: %v", states)
		}
	}()
	natstest.Eventually(t, 60*time.Second, "the killed node offline on the status page", func() bool {
		states = peerStates(live[0].p.statusJSON())
		offline, current := 0, 0
		for _, s := range states {
			switch s {
			case "offline":
				offline++
			case "current":
				current++
			}
		}
		return len(states) == 3 && offline == 1 && current == 2
	})
}

// withStatusPage gives each cluster relay an admin listener with the
// status page's token and returns their addresses.
func withStatusPage(t *testing.T, rs []*clusterRelay) []string {
	t.Helper()
	admins := make([]string, len(rs))
	for i, r := range rs {
		admins[i] = freePort(t)
		f, err := os.OpenFile(filepath.Join(r.dir, "relay.yaml"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fmt.Fprintf(f, "admin_listen: %s\nadmin: {token: %s}\n", admins[i], statusToken)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return admins
}

// peerStates maps the cluster peers of a /status.json to their states.
func peerStates(r map[string]any) map[string]any {
	nats, _ := r["nats"].(map[string]any)
	peers, _ := nats["peers"].([]any)
	out := map[string]any{}
	for _, p := range peers {
		m, _ := p.(map[string]any)
		name, _ := m["name"].(string)
		out[name] = m["state"]
	}
	return out
}

// peerNames returns the sorted names of a /status.json's cluster peers,
// failing unless there are three and a clustered stream shows its leader
// and two replicas.
func peerNames(t *testing.T, r map[string]any) []string {
	t.Helper()
	states := peerStates(r)
	names := slices.Sorted(maps.Keys(states))
	if len(names) != 3 {
		t.Fatalf("/status.json nats peers %v; want three", r["nats"])
	}
	nats, _ := r["nats"].(map[string]any)
	jobsPeers, _ := rowField(nats, "streams", "name", "RELAY_JOBS", "peers").([]any)
	if rowField(nats, "streams", "name", "RELAY_JOBS", "leader") == nil || len(jobsPeers) != 2 {
		t.Errorf("RELAY_JOBS stream %v; want its leader and two replicas", nats["streams"])
	}
	return names
}

// streamLeaders describes every stream as r's NATS node answers for it
// (leader, replicas and whether each is current), or why it could not,
// for a test failing on a cluster that did not recover.
func streamLeaders(r *jobsRelay) string {
	nc, err := nats.Connect("nats://"+r.natsAddr, nats.UserInfo("observer", observerPassword), nats.MaxReconnects(0))
	if err != nil {
		return "observer connect: " + err.Error()
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := js.Stream(sctx, n)
		scancel()
		if err != nil {
			fmt.Fprintf(&b, "  %s: %v\n", n, err)
			continue
		}
		c := st.CachedInfo().Cluster
		if c == nil {
			fmt.Fprintf(&b, "  %s: not clustered\n", n)
			continue
		}
		fmt.Fprintf(&b, "  %s: leader %q", n, c.Leader)
		for _, p := range c.Replicas {
			fmt.Fprintf(&b, ", %s current=%v offline=%v active=%v", p.Name, p.Current, p.Offline, p.Active)
		}
		b.WriteString("\n")
	}
	if err := names.Err(); err != nil {
		fmt.Fprintf(&b, "  listing streams: %v\n", err)
	}
	return b.String()
}
