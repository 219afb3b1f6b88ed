package keylimits_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/workers/keylimits"
	"github.com/relaygw/relay/workers/lease"
)

// TestKeyLeasedAcrossRelays: three relays, each with its own Limiter,
// lease one key's limits through a 3-node JetStream cluster as
// cmd/relay does (Kind "key", the key's Actor as holder): their shares
// never sum past the key's limits, the relay with the key's backlog gets
// the larger share, and each relay's Actor admits only its share.
func TestKeyLeasedAcrossRelays(t *testing.T) {
	lim := configs.KeyLimits{RPM: 600, MaxConcurrency: 6}
	nodes := natstest.StartCluster(t, 3)
	type relay struct {
		l *keylimits.Limiter
		m *lease.Manager
	}
	var rs []relay
	for i, node := range nodes {
		js := natstest.JetStream(t, node)
		decl := assets.New(js, assets.Options{Replicas: 3})
		l := keylimits.New(keylimits.Options{})
		backlog := 0
		if i == 0 {
			backlog = 50
		}
		m := lease.New(lease.Options{
			JetStream: js,
			KV: func(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
				return decl.KeyValue(ctx, c, false)
			},
			Period:         1500 * time.Millisecond,
			Policy:         lease.Policy{Reserve: lease.DefaultReserve, Floor: lease.DefaultFloor},
			ExpectedRelays: 3,
			Relay:          string(rune('a' + i)),
		})
		m.Set([]lease.Resource{{Kind: "key", Name: "team-a",
			Limits: lease.Limits{RPM: lim.RPM, MaxConcurrency: lim.MaxConcurrency},
			Holder: lease.ActorHolder{Actor: l.Actor("team-a", lim), Backlog: func() []int { return []int{backlog} }}}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = m.Run(ctx)
		}()
		t.Cleanup(func() { cancel(); <-done })
		rs = append(rs, relay{l: l, m: m})
	}
	share := func(r relay) (lease.Status, bool) {
		sts := r.m.Statuses()
		if len(sts) == 0 {
			return lease.Status{}, false
		}
		return sts[0], !sts[0].GrantedAt.IsZero() && !sts[0].Safe
	}
	natstest.Eventually(t, 30*time.Second, "the busy relay holds the larger share", func() bool {
		var sum float64
		busy := 0.0
		for i, r := range rs {
			st, ok := share(r)
			if !ok {
				return false
			}
			sum += st.Share[lease.RPM]
			if sum > float64(lim.RPM)+1e-6 {
				t.Fatalf("rpm shares sum to %.1f, over the key's %d", sum, lim.RPM)
			}
			if i == 0 {
				busy = st.Share[lease.RPM]
			}
		}
		return busy > sum/3
	})
	// Concurrency: together the three actors admit at most the key's 6
	// calls at once.
	admitted := 0
	for _, r := range rs {
		for range lim.MaxConcurrency {
			if p, err := r.l.Admit("team-a", lim, 0, 1); err == nil && p != nil {
				admitted++
			}
		}
	}
	if admitted > lim.MaxConcurrency {
		t.Errorf("the relays admitted %d calls of the key at once; its max_concurrency is %d", admitted, lim.MaxConcurrency)
	}
}
