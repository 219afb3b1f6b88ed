package assets_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/assets"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestConvergence: two relays (Declarers) with different settings on one
// server, in both orders. The stream keeps the larger max age, duplicates
// window and message limit whoever declares last; the relay that asks for
// less reports drift; a bucket's direct gets go off and stay off.
func TestConvergence(t *testing.T) {
	for _, order := range []string{"short first", "long first"} {
		t.Run(order, func(t *testing.T) {
			js := natstest.JetStream(t, natstest.Start(t))
			regShort, regLong := prometheus.NewRegistry(), prometheus.NewRegistry()
			short := assets.New(js, assets.Options{Registry: regShort})
			long := assets.New(js, assets.Options{Registry: regLong})
			cfg := func(age time.Duration) jetstream.StreamConfig {
				return jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage,
					MaxAge: age, Duplicates: age / 2, MaxMsgs: int64(age / time.Minute)}
			}
			first, second := short, long
			firstAge, secondAge := time.Hour, 2*time.Hour
			if order == "long first" {
				first, second, firstAge, secondAge = long, short, 2*time.Hour, time.Hour
			}
			for _, step := range []struct {
				d   *assets.Declarer
				age time.Duration
			}{{first, firstAge}, {second, secondAge}, {short, time.Hour}} {
				if _, err := step.d.Stream(t.Context(), cfg(step.age)); err != nil {
					t.Fatal(err)
				}
			}
			st, err := js.Stream(t.Context(), "S")
			if err != nil {
				t.Fatal(err)
			}
			c := st.CachedInfo().Config
			if c.MaxAge != 2*time.Hour || c.Duplicates != time.Hour || c.MaxMsgs != 120 {
				t.Errorf("stream max_age %v, duplicates %v, max_msgs %d; want the larger 2h, 1h, 120", c.MaxAge, c.Duplicates, c.MaxMsgs)
			}
			if v := testutil.ToFloat64(gauge(t, regShort)); v != 1 {
				t.Errorf("short relay drift = %v; want 1", v)
			}
			if v := testutil.ToFloat64(gauge(t, regLong)); v != 0 {
				t.Errorf("long relay drift = %v; want 0", v)
			}
			if d := short.Drift()["S"]; d == "" {
				t.Error("short relay: Drift() names nothing for S")
			}
		})
	}
}

// gauge returns the relay_nats_asset_drift{asset="S"} collector of reg.
func gauge(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "relay_nats_asset_drift" && l.GetValue() == "S" {
					g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
					g.Set(m.GetGauge().GetValue())
					return g
				}
			}
		}
	}
	t.Fatal("relay_nats_asset_drift{asset=S} missing")
	return nil
}

// TestKeyValueLeaderReads: a bucket declared without direct gets reads
// through the leader, and a Declarer that wants direct gets does not turn
// them back on; the TTL only grows.
func TestKeyValueLeaderReads(t *testing.T) {
	js := natstest.JetStream(t, natstest.Start(t))
	d := assets.New(js, assets.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := d.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "B", TTL: time.Hour}, false); err != nil {
		t.Fatal(err)
	}
	kv, err := d.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "B", TTL: time.Minute}, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_B")
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.AllowDirect || c.MaxAge != time.Hour {
		t.Errorf("KV_B allow_direct %v, max_age %v; want false, 1h", c.AllowDirect, c.MaxAge)
	}
}

// TestReplicasOnCluster: on a 3-node cluster a Declarer with Replicas 3
// raises an R1 stream to R3 and its consumer with it; one with Replicas 1
// leaves it at R3.
func TestReplicasOnCluster(t *testing.T) {
	nodes := natstest.StartCluster(t, 3)
	js := natstest.JetStream(t, nodes[0])
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cfg := jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}, Storage: jetstream.FileStorage}
	// The cluster may still be electing its meta leader (a request then
	// goes unanswered): retried as a relay does.
	if err := assets.UntilPlaced(ctx, slog.New(slog.DiscardHandler), "stream R", func(ctx context.Context) error {
		_, err := assets.New(js, assets.Options{Replicas: 1}).Stream(ctx, cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r3 := assets.New(js, assets.Options{Replicas: 3})
	var lastErr error
	natstest.Eventually(t, 30*time.Second, "R1 raised to R3", func() bool {
		_, lastErr = r3.Stream(ctx, cfg)
		return lastErr == nil
	})
	// While the raised stream's new replicas catch up, placing a
	// consumer is refused (10023): the relay retries that too.
	var c jetstream.Consumer
	natstest.Eventually(t, 30*time.Second, "consumer placed", func() bool {
		var err error
		c, err = r3.Consumer(ctx, "R", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
		return err == nil
	})
	if _, err := assets.New(js, assets.Options{Replicas: 1}).Stream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "R")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().Config.Replicas; n != 3 {
		t.Errorf("stream replicas %d; want 3 kept", n)
	}
	natstest.Eventually(t, 30*time.Second, "consumer on 3 replicas", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.Cluster != nil && len(info.Cluster.Replicas) == 2
	})
}

// TestFreshBucketNoConvergence: on a fresh store a bucket is created with
// the direct-get setting asked for from the start, so declaring it (once,
// then again as the next relay would) changes nothing afterwards and logs
// no warning.
func TestFreshBucketNoConvergence(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			js := natstest.JetStream(t, natstest.Start(t))
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			cfg := jetstream.KeyValueConfig{Bucket: "F", TTL: 4 * time.Second, Storage: jetstream.FileStorage, History: 1}
			for range 2 {
				kv, err := assets.New(js, assets.Options{Logger: log}).KeyValue(ctx, cfg, direct)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
					t.Fatal(err)
				}
				if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
					t.Fatalf("Get = %v, %v", e, err)
				}
			}
			st, err := js.Stream(ctx, "KV_F")
			if err != nil {
				t.Fatal(err)
			}
			if c := st.CachedInfo().Config; c.AllowDirect != direct || c.MaxAge != 4*time.Second || c.Duplicates != 4*time.Second ||
				c.MaxMsgsPerSubject != 1 || !c.AllowRollup || !c.DenyDelete || c.Discard != jetstream.DiscardNew {
				t.Errorf("KV_F config = %+v; want a KV stream with allow_direct %v", c, direct)
			}
			if logs.Len() > 0 {
				t.Errorf("declaring a fresh bucket logged warnings:\n%s", logs.String())
			}
		})
	}
}
