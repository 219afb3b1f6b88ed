package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers/simupstream"
)

func TestOffered(t *testing.T) {
	tests := []struct {
		rate  int
		split []int
		n     int
		want  []int
	}{
		{30, []int{3, 2, 1}, 1, []int{30}},
		{30, []int{3, 2, 1}, 3, []int{15, 10, 5}},
		{30, []int{1, 1, 1}, 3, []int{10, 10, 10}},
		{10, []int{1, 1, 1}, 3, []int{3, 3, 4}},
	}
	for _, tc := range tests {
		if got := offered(tc.rate, tc.split, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("offered(%d, %v, %d) = %v; want %v", tc.rate, tc.split, tc.n, got, tc.want)
		}
	}
	if got := laneRates(15); !slices.Equal(got, []int{8, 7}) {
		t.Errorf("laneRates(15) = %v; want [8 7]", got)
	}
}

// TestLimitsRelayConfig checks that the scenario's configuration passes
// the relay's own parser with the provider's limits and the lanes.
func TestLimitsRelayConfig(t *testing.T) {
	nd := &clusterNode{addr: "127.0.0.1:18080", natsAddr: "127.0.0.1:14222"}
	o := limitsOptions{RPM: 540, MaxConcurrency: 4, Rate: 30, MaxWait: 10 * time.Second}
	cfg := limitsRelayConfig(nd, "/tmp/nats", "http://127.0.0.1:1", o)
	cfg.NATS.ServerName = "relay1"
	cfg.NATS.Cluster = &relayCluster{Name: "limits", Listen: "127.0.0.1:16222", Routes: []string{"127.0.0.1:16222", "127.0.0.1:16223"}}
	data := mustYAML(t, cfg)
	c, err := configs.ParseWithEnv([]byte(data), nil)
	if err != nil {
		t.Fatalf("configs.ParseWithEnv = %v\n%s", err, data)
	}
	if p := c.Providers[0]; p.RPM != 540 || p.MaxConcurrency != 4 {
		t.Errorf("provider = %+v; want rpm 540, max_concurrency 4", p)
	}
	if len(c.Lanes) != 3 || c.Lanes[0].Name != laneInteractive || c.Lanes[2].Name != laneBatch {
		t.Errorf("lanes = %+v; want interactive, standard, batch", c.Lanes)
	}
}

func TestUpstreamLimits(t *testing.T) {
	o := limitsOptions{UpstreamPerSecond: 10, UpstreamLimit: "bucket", Latency: time.Millisecond}
	if got := upstreamLimits(o); got.RPS != 10 || !got.NoRateHeaders || got.PerSecond != 0 {
		t.Errorf("bucket: %+v; want RPS 10 without headers", got)
	}
	o.RateHeaders = true
	if got := upstreamLimits(o); got.NoRateHeaders {
		t.Errorf("bucket with -rate-headers: %+v; want headers", got)
	}
	o.UpstreamLimit = "window"
	if got := upstreamLimits(o); got.PerSecond != 10 || got.RPS != 0 {
		t.Errorf("window: %+v; want PerSecond 10", got)
	}
}

func TestParseLease(t *testing.T) {
	body := []byte(`# HELP relay_lease_share x
relay_lease_share{limit="rpm",provider="sim-a"} 270
relay_lease_share{limit="max_concurrency",provider="sim-a"} 2
relay_lease_coordinator{provider="sim-a"} 1
relay_lease_safe_share{provider="sim-a"} 0
relay_lane_depth{lane="interactive"} 3
relay_lane_depth{lane="batch"} 4
`)
	r := parseLease(body)
	if !r.Up || r.Share["rpm"] != 270 || r.Share["max_concurrency"] != 2 || !r.Coordinator || r.SafeShare || r.Depth != 7 {
		t.Errorf("parseLease = %+v", r)
	}
	if got := shareCell(r); got != "270 / 2 *" {
		t.Errorf("shareCell = %q; want %q", got, "270 / 2 *")
	}
	none := parseLease([]byte("relay_lane_depth{lane=\"batch\"} 1\n"))
	if none.Share != nil || shareCell(none) != "absent" || shareCell(relayLease{}) != "down" {
		t.Errorf("absent: %+v, %q", none, shareCell(none))
	}
}

// TestLimitsPrint prints a report whose relays had no leases: the share
// columns say absent, and a note says so.
func TestLimitsPrint(t *testing.T) {
	epoch := time.Unix(1_700_000_000, 0)
	c := limitsCase{Name: "3 relays (one cluster)", Relays: 3, Offered: []int{15, 10, 5}, Epoch: epoch,
		Lanes: map[string]limitsLane{laneInteractive: {Requests: 10, OK: 9, Errors: 1}}}
	c.Upstream = limitsUpstream{Calls: 30, RateLimited: 12, MaxOpen: 9,
		Seconds: []simupstream.Second{{Unix: epoch.Unix(), Requests: 30, RateLimited: 12}}}
	c.Timeline = []limitsPoint{{At: 1100 * time.Millisecond, Relays: []relayLease{{Up: true, Depth: 4}, {Up: true}, {}}}}
	rep := &limitsReport{Options: limitsOptions{UpstreamPerSecond: 10, UpstreamLimit: "bucket", RPM: 540, MaxConcurrency: 4, Rate: 30}, Cases: []limitsCase{c}}
	var b strings.Builder
	if err := rep.print(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"relay_lease_share absent", "| 1.1 | 30 ", "absent", "down", "9 (limit 4)", "40.00%"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
