package lease_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/lease"
)

const testPeriod = 3 * time.Second

var testLimits = lease.Limits{RPM: 600, InputTPM: 60000, MaxConcurrency: 6}

// relay is one relay of a test cluster: its connection, its actor and its
// lease manager.
type relay struct {
	name    string
	nc      *nats.Conn
	actor   *actor.Actor
	backlog atomic.Int64 // parked on the first lane
	m       *lease.Manager
	metrics *lease.Metrics
	reg     *prometheus.Registry
	stop    context.CancelFunc
	done    chan struct{}
}

func (r *relay) kill() {
	r.stop()
	<-r.done
}

func shareOf(m *lease.Manager) float64 {
	for _, st := range m.Statuses() {
		return st.Share[lease.RPM]
	}
	return 0
}

func status(m *lease.Manager) lease.Status {
	if sts := m.Statuses(); len(sts) > 0 {
		return sts[0]
	}
	return lease.Status{}
}

// startRelays starts n lease managers, one on each node of a 3-node
// JetStream cluster, all holding provider p with testLimits.
func startRelays(t *testing.T, n int) []*relay {
	t.Helper()
	nodes := natstest.StartCluster(t, 3)
	out := make([]*relay, n)
	for i := range n {
		nc, err := nodes[i%3].Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		decl := assets.New(js, assets.Options{Replicas: 3})
		r := &relay{name: string(rune('a' + i)), nc: nc, reg: prometheus.NewRegistry(), done: make(chan struct{})}
		r.actor = actor.New(actor.Options{Name: "p", RPM: testLimits.RPM, InputTPM: testLimits.InputTPM, MaxConcurrency: testLimits.MaxConcurrency,
			Breaker: actor.BreakerOptions{FailureRatio: 0.5, MinRequests: 10, Window: time.Minute, OpenFor: time.Second}})
		r.metrics = lease.NewMetrics(r.reg)
		r.m = lease.New(lease.Options{
			JetStream: js,
			KV: func(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
				return decl.KeyValue(ctx, cfg, false)
			},
			Period:         testPeriod,
			Policy:         lease.Policy{Reserve: lease.DefaultReserve, Floor: lease.DefaultFloor},
			ExpectedRelays: n,
			Relay:          r.name,
			Metrics:        r.metrics,
		})
		r.m.Set([]lease.Resource{{Kind: "provider", Name: "p", Limits: testLimits, Holder: lease.ActorHolder{
			Actor: r.actor, Backlog: func() []int { return []int{int(r.backlog.Load())} }}}})
		ctx, cancel := context.WithCancel(context.Background())
		r.stop = cancel
		go func() {
			defer close(r.done)
			_ = r.m.Run(ctx)
		}()
		t.Cleanup(func() { cancel(); <-r.done })
		out[i] = r
	}
	return out
}

// granted waits until every live relay has a grant (not a safe share).
func granted(t *testing.T, rs []*relay) {
	t.Helper()
	natstest.Eventually(t, 30*time.Second, "every relay granted", func() bool {
		for _, r := range rs {
			if st := status(r.m); st.GrantedAt.IsZero() || st.Safe || st.Share[lease.RPM] <= 0 {
				return false
			}
		}
		return true
	})
}

// sumShares is the sum of the live relays' rpm shares.
func sumShares(rs []*relay) float64 {
	s := 0.0
	for _, r := range rs {
		s += shareOf(r.m)
	}
	return s
}

// watchSum samples the sum of shares of rs until stop, failing the test
// when it ever exceeds the limit.
func watchSum(t *testing.T, rs []*relay) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if s := sumShares(rs); s > float64(testLimits.RPM)+1e-6 {
				t.Errorf("shares sum to %.1f rpm > limit %d", s, testLimits.RPM)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// TestLeaseClusterShares: three relays share the limits, one coordinates,
// the shares never sum past the limit, and a deep backlog on one relay
// gets it the larger share within a lease period or so.
func TestLeaseClusterShares(t *testing.T) {
	rs := startRelays(t, 3)
	granted(t, rs)
	stop := watchSum(t, rs)
	defer stop()
	natstest.Eventually(t, 30*time.Second, "one coordinator", func() bool {
		n := 0
		for _, r := range rs {
			if status(r.m).Coordinator {
				n++
			}
		}
		return n == 1
	})
	for _, r := range rs {
		if got := testutil.ToFloat64(r.metricsShare("rpm")); got <= 0 || got > 600 {
			t.Errorf("%s: relay_lease_share{limit=rpm} = %v", r.name, got)
		}
		// The actor admits under the share: its burst is split too.
		if st := r.actor.State(); st.Requests.PerMinute != 600 {
			t.Errorf("%s: configured rpm %d changed", r.name, st.Requests.PerMinute)
		}
	}
	rs[0].backlog.Store(500)
	natstest.Eventually(t, 30*time.Second, "the backlogged relay gets the larger share", func() bool {
		a, b, c := shareOf(rs[0].m), shareOf(rs[1].m), shareOf(rs[2].m)
		return a > 2*b && a > 2*c && a > 400
	})
	if st := status(rs[0].m); st.Share[lease.MaxConcurrency] < 4 {
		t.Errorf("backlogged relay concurrency share %v; want most of 6", st.Share[lease.MaxConcurrency])
	}
}

func (r *relay) metricsShare(limit string) prometheus.Collector {
	return gaugeOf(r.reg, "relay_lease_share", limit)
}

// gaugeOf finds a gauge by name (and limit label) in reg.
func gaugeOf(reg *prometheus.Registry, name, limit string) prometheus.Collector {
	return collectorFunc(func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				ok := limit == ""
				for _, l := range m.GetLabel() {
					if l.GetName() == "limit" && l.GetValue() == limit {
						ok = true
					}
				}
				if ok {
					return m.GetGauge().GetValue()
				}
			}
		}
		return -1
	})
}

type collectorFunc func() float64

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"}).Describe(ch)
}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
	g.Set(f())
	g.Collect(ch)
}

// TestLeaseRelayDies: a relay that dies holding a lease keeps its share
// counted until the lease expires (never over the limit); then the others
// take it.
func TestLeaseRelayDies(t *testing.T) {
	rs := startRelays(t, 3)
	granted(t, rs)
	dead := rs[0]
	var live []*relay
	for _, r := range rs {
		if r != dead {
			live = append(live, r)
			r.backlog.Store(300)
		}
	}
	stop := killWatched(t, dead, live)
	defer stop()
	natstest.Eventually(t, 30*time.Second, "the dead relay's share reused after expiry", func() bool {
		return sumShares(live) > 0.9*600*(1-lease.DefaultReserve)
	})
}

// killWatched kills dead and, until stop, fails the test whenever the
// live relays' shares plus what dead may still use under its lease (its
// last share, for one period after its last grant) exceed the limit.
func killWatched(t *testing.T, dead *relay, live []*relay) (stop func()) {
	dead.kill()
	st := status(dead.m)
	deadUntil, deadShare := st.GrantedAt.Add(testPeriod), st.Share[lease.RPM]
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			s := sumShares(live)
			if time.Now().Before(deadUntil) {
				s += deadShare
			}
			if s > float64(testLimits.RPM)+1e-6 {
				t.Errorf("shares sum to %.1f rpm > limit %d while the dead relay's lease runs", s, testLimits.RPM)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return func() { cancel(); wg.Wait() }
}

// TestLeaseCoordinatorDies: when the coordinating relay dies, grants run
// to expiry and another relay takes over from the stored record.
func TestLeaseCoordinatorDies(t *testing.T) {
	rs := startRelays(t, 3)
	granted(t, rs)
	var coord *relay
	natstest.Eventually(t, 30*time.Second, "a coordinator", func() bool {
		for _, r := range rs {
			if status(r.m).Coordinator {
				coord = r
				return true
			}
		}
		return false
	})
	var live []*relay
	for _, r := range rs {
		if r != coord {
			live = append(live, r)
		}
	}
	stop := killWatched(t, coord, live)
	defer stop()
	before := status(live[0].m).GrantedAt
	natstest.Eventually(t, 30*time.Second, "a new coordinator", func() bool {
		return status(live[0].m).Coordinator || status(live[1].m).Coordinator
	})
	natstest.Eventually(t, 30*time.Second, "grants go on", func() bool {
		st := status(live[0].m)
		return st.GrantedAt.After(before) && !st.Safe
	})
}

// TestLeaseCutOff: a relay cut off from NATS runs on a safe share
// (limit ÷ relays, never the whole limit) once its lease expires, and
// says so in its metric and readiness check.
func TestLeaseCutOff(t *testing.T) {
	rs := startRelays(t, 3)
	granted(t, rs)
	cut := rs[2]
	cut.nc.Close()
	natstest.Eventually(t, 30*time.Second, "on a safe share", func() bool { return status(cut.m).Safe })
	want := 600 * (1 - lease.DefaultReserve) / 3
	if got := shareOf(cut.m); got > want+1e-6 || got <= 0 {
		t.Errorf("safe rpm share %.2f; want %.2f", got, want)
	}
	if got := cut.actor.State().MaxConcurrency; got != 2 {
		t.Errorf("safe concurrency %d; want 6/3", got)
	}
	if err := cut.m.Check(); err == nil || !strings.Contains(err.Error(), "safe share") {
		t.Errorf("Check() = %v; want a safe-share error", err)
	}
	if got := testutil.ToFloat64(gaugeOf(cut.reg, "relay_lease_safe_share", "")); got != 1 {
		t.Errorf("relay_lease_safe_share = %v; want 1", got)
	}
	for _, r := range rs[:2] {
		if err := r.m.Check(); err != nil {
			t.Errorf("%s: %v", r.name, err)
		}
	}
}

// TestLeaseLearned: a retry-after cool-down and a rate-limit cap learned by
// one relay reach the others within a lease period or so.
func TestLeaseLearned(t *testing.T) {
	rs := startRelays(t, 3)
	granted(t, rs)
	var p *actor.Permit
	natstest.Eventually(t, 30*time.Second, "a call admitted", func() bool {
		var err error
		p, err = rs[0].actor.Admit(10, 10)
		return err == nil // shares still moving may refuse for a moment
	})
	h := http.Header{}
	h.Set("Anthropic-Ratelimit-Requests-Remaining", "30")
	h.Set("Anthropic-Ratelimit-Requests-Reset", time.Now().Add(time.Minute).UTC().Format(time.RFC3339))
	p.Done(actor.Outcome{Kind: actor.RateLimited, RetryAfter: 20 * time.Second, Header: h})
	natstest.Eventually(t, 30*time.Second, "the others cool down and are capped", func() bool {
		for _, r := range rs[1:] {
			st := r.actor.State()
			if !st.CoolingUntil.After(time.Now().Add(10*time.Second)) || st.Requests.CappedUntil.IsZero() || st.Requests.Available > 30 {
				return false
			}
		}
		return true
	})
}
