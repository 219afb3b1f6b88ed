package main

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers"
)

// TestBuildBodyLimits: max_body_bytes and body_memory_bytes reach the
// gateway's configuration, defaults included.
func TestBuildBodyLimits(t *testing.T) {
	const rest = "providers:\n  - {name: p, type: anthropic, base_url: 'http://127.0.0.1:1', api_key: k}\n" +
		"routes:\n  - {model: m, targets: [{provider: p}]}\n" +
		"keys:\n  - {name: k, key: secret-key-1}\n"
	for _, tc := range []struct {
		name              string
		yaml              string
		wantBody, wantMem int64
	}{
		{"defaults", rest, 32 << 20, 512 << 20},
		{"set", "max_body_bytes: 1024\nbody_memory_bytes: 4096\n" + rest, 1024, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := newTestBuilder(t).build(parseConfig(t, tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			gc := st.gateway
			if gc.MaxBodyBytes != tc.wantBody || gc.BodyMemoryBytes != tc.wantMem {
				t.Errorf("MaxBodyBytes %d, BodyMemoryBytes %d; want %d, %d", gc.MaxBodyBytes, gc.BodyMemoryBytes, tc.wantBody, tc.wantMem)
			}
		})
	}
}

// newTestBuilder returns a builder with discarded logs and its own
// metrics registry.
func newTestBuilder(t *testing.T) *builder {
	t.Helper()
	b := &builder{log: slog.New(slog.DiscardHandler), metrics: workers.NewMetrics(prometheus.NewRegistry()), onRelease: func() {}}
	t.Cleanup(b.closeIdle)
	return b
}

// parseConfig parses and validates yaml.
func parseConfig(t *testing.T, yaml string) *configs.Config {
	t.Helper()
	cfg, err := configs.ParseWithEnv([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestReloadRefusedChangesNothing: a configuration that fails at a step
// after the providers' limits are worked out (routes, keys, lanes, NATS
// access) leaves the running actors' limits and the router as they were;
// so does one built aside and never committed. The failing steps are
// reached with configurations configs would refuse, as the builder does
// not rely on that.
func TestReloadRefusedChangesNothing(t *testing.T) {
	const yaml = "providers:\n  - {name: p, type: anthropic, base_url: 'http://127.0.0.1:1', api_key: k, max_concurrency: %d, rpm: %d}\n" +
		"routes:\n  - {model: m, targets: [{provider: p}]}\n" +
		"keys:\n  - {name: k, key: secret-key-1}\n"
	for _, tc := range []struct {
		name  string
		spoil func(*configs.Config)
	}{
		{"route names an unknown provider", func(c *configs.Config) {
			c.Routes = append(c.Routes, configs.Route{Model: "x", Targets: []configs.Target{{Provider: "ghost"}}})
		}},
		{"key with two secrets", func(c *configs.Config) { c.Keys[0].KeySHA256 = "00" }},
		{"lane without a depth", func(c *configs.Config) { c.Lanes[0].MaxDepth = 0 }},
		{"key without a secret", func(c *configs.Config) {
			c.Keys = append(c.Keys, configs.Key{Name: "none"})
		}},
		{"built but not committed", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBuilder(t)
			_, err := b.build(parseConfig(t, fmt.Sprintf(yaml, 4, 600)))
			if err != nil {
				t.Fatal(err)
			}
			router := b.Router()
			next := parseConfig(t, fmt.Sprintf(yaml, 1, 60))
			var built *state
			if tc.spoil != nil {
				tc.spoil(next)
				if _, err := b.prepare(next); err == nil {
					t.Fatal("prepare: no error")
				}
			} else if built, err = b.prepare(next); err != nil {
				t.Fatal(err)
			}
			limits(t, b, 4, 600)
			if b.Router() != router {
				t.Error("the router changed")
			}
			if built != nil {
				// Committed, the same state does change them.
				b.commit(built)
				limits(t, b, 1, 60)
			}
		})
	}
}

// limits checks the max_concurrency and rpm b's only actor enforces.
func limits(t *testing.T, b *builder, maxConc, rpm int) {
	t.Helper()
	st := b.Actors()[0].State()
	if st.MaxConcurrency != maxConc || st.Requests.PerMinute != rpm {
		t.Errorf("actor limits: max_concurrency %d, rpm %d; want %d, %d", st.MaxConcurrency, st.Requests.PerMinute, maxConc, rpm)
	}
}

// TestLeasesOnlyWhenShared: a relay alone (embedded NATS with no cluster
// and no client port) runs no leases; any way of sharing NATS does.
func TestLeasesOnlyWhenShared(t *testing.T) {
	tests := []struct {
		name string
		nats configs.NATS
		want bool
	}{
		{"alone", configs.NATS{}, false},
		{"external", configs.NATS{URL: "nats://127.0.0.1:4222"}, true},
		{"embedded cluster", configs.NATS{Cluster: &configs.NATSCluster{Name: "c"}}, true},
		{"client port", configs.NATS{Listen: "127.0.0.1:4222"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := clustered(tc.nats); got != tc.want {
				t.Errorf("clustered = %v; want %v", got, tc.want)
			}
		})
	}
}
