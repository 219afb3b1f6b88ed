package status

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/workers/actor"
)

// sourceTimeout bounds the reads of one report from NATS.
const sourceTimeout = 2 * time.Second

// Collector builds Reports from its Sources.
type Collector struct {
	src     Sources
	started time.Time
	now     func() time.Time
}

// NewCollector returns a Collector over src for a relay started now.
func NewCollector(src Sources) *Collector {
	return &Collector{src: src, started: time.Now(), now: time.Now}
}

// Report reads every source once.
func (c *Collector) Report(ctx context.Context) Report {
	ctx, cancel := context.WithTimeout(ctx, sourceTimeout)
	defer cancel()
	now := c.now()
	r := Report{GeneratedAt: now.UTC(), Version: c.src.Version, StartedAt: c.started.UTC(), Ready: true,
		Lanes: []Lane{}, Providers: []Provider{}, Routes: []Route{}}
	if c.src.Ready != nil {
		if err := c.src.Ready(); err != nil {
			r.Ready, r.NotReady = false, err.Error()
		}
	}
	var fig Figures
	if c.src.Window != nil {
		f, err := c.src.Window.Figures(c.started)
		if err != nil {
			r.Problems = append(r.Problems, err.Error())
		}
		fig = f
	}
	r.WindowSeconds = math.Round(fig.Span.Seconds())
	r.Lanes = c.lanes(fig)
	r.Providers = c.providers(now)
	r.Routes = c.routes(fig)
	c.jobs(ctx, &r, fig)
	c.streams(ctx, &r)
	c.spend(ctx, &r, now)
	return r
}

// lanes builds the lane rows.
func (c *Collector) lanes(fig Figures) []Lane {
	out := []Lane{}
	if c.src.Lanes == nil {
		return out
	}
	est, _ := c.src.Lanes.(WaitEstimator)
	for _, s := range c.src.Lanes.Snapshot() {
		l := Lane{Name: s.Name, Depth: s.Depth, MaxDepth: s.MaxDepth, MaxWait: s.MaxWait.Seconds()}
		if qs, n, ok := fig.LaneWait(s.Name, 0.5, 0.99); ok {
			l.WaitP50, l.WaitP99, l.Dispatched = &qs[0], &qs[1], n
		}
		if est != nil {
			l.EstWait, l.EstBasis = est.EstimateWait(s.Name).Seconds(), "lanes"
		} else {
			d, basis := estimateWait(s)
			l.EstWait, l.EstBasis = d.Seconds(), basis
		}
		out = append(out, l)
	}
	return out
}

// estimateWait is the page's own estimate of a new request's wait on a
// lane: nothing when the lane is empty, else the time its recent dispatch
// rate takes to serve the requests ahead, at most the lane's max_wait.
func estimateWait(s lanes.LaneState) (time.Duration, string) {
	switch {
	case s.Depth == 0:
		return 0, "lane empty"
	case s.DispatchRate <= 0:
		return s.MaxWait, "no recent dispatches: max_wait"
	}
	d := time.Duration(float64(s.Depth) / s.DispatchRate * float64(time.Second))
	if d > s.MaxWait {
		return s.MaxWait, "depth / dispatch rate, capped at max_wait"
	}
	return d, "depth / dispatch rate"
}

// providers builds the provider rows.
func (c *Collector) providers(now time.Time) []Provider {
	out := []Provider{}
	if c.src.Providers == nil {
		return out
	}
	var shares map[string]float64
	if c.src.Shares != nil {
		shares = c.src.Shares.GrantedShares()
	}
	for _, s := range c.src.Providers.ProviderStates() {
		p := Provider{Name: s.Name, Breaker: s.Breaker.String(), InFlight: s.InFlight, MaxConcurrency: s.MaxConcurrency,
			Requests: bucket(s.Requests, now), InputTokens: bucket(s.InputTokens, now), OutputTokens: bucket(s.OutputTokens, now),
			HalfOpenAt: future(s.BreakerOpenAt, now), CoolingUntil: future(s.CoolingUntil, now),
			KeySuspectUntil: future(s.AuthFailUntil, now)}
		if sh, ok := shares[s.Name]; ok {
			p.GrantedShare = &sh
		}
		out = append(out, p)
	}
	sortBy(out, func(p Provider) string { return p.Name })
	return out
}

// bucket converts a bucket snapshot; an unlimited bucket has no level.
func bucket(b actor.BucketState, now time.Time) Bucket {
	out := Bucket{PerMinute: b.PerMinute, CappedUntil: future(b.CappedUntil, now)}
	if !math.IsInf(b.Available, 0) && !math.IsNaN(b.Available) {
		v := math.Floor(b.Available)
		out.Available = &v
	}
	return out
}

// future returns t in UTC when it is after now, else nil.
func future(t, now time.Time) *time.Time {
	if !t.After(now) {
		return nil
	}
	u := t.UTC()
	return &u
}

// routes builds the route rows.
func (c *Collector) routes(fig Figures) []Route {
	out := []Route{}
	if c.src.Routes == nil {
		return out
	}
	for _, ri := range c.src.Routes.RouteInfos() {
		r := Route{Model: ri.Model, Fallbacks: ri.Fallbacks}
		for _, t := range ri.Targets {
			r.Targets = append(r.Targets, Target{Provider: t.Provider, Model: t.Model, Weight: t.Weight})
		}
		r.Requests, r.Errors = fig.RouteErrors(ri.Model)
		if r.Requests > 0 {
			rate := float64(r.Errors) / float64(r.Requests)
			r.ErrorRate = &rate
		}
		out = append(out, r)
	}
	return out
}

// jobs fills the jobs section.
func (c *Collector) jobs(ctx context.Context, r *Report, fig Figures) {
	if c.src.Jobs == nil {
		return
	}
	st, err := c.src.Jobs.Stats(ctx)
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("jobs: %v", err))
		return
	}
	r.Jobs = &Jobs{Queued: st.Queued, Running: st.Running, CallbacksPending: st.CallbacksPending,
		DeadLetters: st.DeadLetters, JobsGivenUp: fig.JobsGivenUp, CallbacksGivenUp: fig.CallbacksGivenUp}
}

// streams fills the NATS section.
func (c *Collector) streams(ctx context.Context, r *Report) {
	if c.src.Streams == nil {
		return
	}
	ss, err := c.src.Streams.Streams(ctx)
	if err != nil {
		// A stream whose only replica was on a lost node is missing from
		// the list while the others are there: show what was read.
		r.Problems = append(r.Problems, fmt.Sprintf("nats: %v", err))
		if len(ss) == 0 {
			return
		}
	}
	sortBy(ss, func(s Stream) string { return s.Name })
	r.NATS = &NATS{Streams: ss, Peers: clusterPeers(ss)}
}

// clusterPeers sums the streams' replica sets by server: how many streams
// each leads, and its worst state as a replica. Nil when no stream is
// clustered.
func clusterPeers(ss []Stream) []ClusterPeer {
	byName := map[string]*ClusterPeer{}
	get := func(name string) *ClusterPeer {
		p := byName[name]
		if p == nil {
			p = &ClusterPeer{Name: name, State: PeerCurrent}
			byName[name] = p
		}
		return p
	}
	for _, s := range ss {
		if s.Leader == "" {
			continue
		}
		get(s.Leader).Leads++
		for _, r := range s.Peers {
			p := get(r.Name)
			switch {
			case r.Offline:
				p.State = PeerOffline
			case !r.Current && p.State == PeerCurrent:
				p.State = PeerLagging
			}
			p.Lag = max(p.Lag, r.Lag)
			p.ActiveSeconds = max(p.ActiveSeconds, r.ActiveSeconds)
		}
	}
	if len(byName) == 0 {
		return nil
	}
	out := make([]ClusterPeer, 0, len(byName))
	for _, p := range byName {
		out = append(out, *p)
	}
	sortBy(out, func(p ClusterPeer) string { return p.Name })
	return out
}

// A ClusterPeer's states.
const (
	PeerCurrent = "current"
	PeerLagging = "lagging"
	PeerOffline = "offline"
)

// spend fills the keys section when metering exists: today's usage (UTC),
// highest spend first, then most requests.
func (c *Collector) spend(ctx context.Context, r *Report, now time.Time) {
	if c.src.Spend == nil {
		return
	}
	day := now.UTC()
	ks, err := c.src.Spend.KeySpend(ctx, day)
	switch {
	case errors.Is(err, ErrNoMetering):
		return
	case err != nil:
		r.Problems = append(r.Problems, fmt.Sprintf("keys: %v", err))
		r.Keys = &Keys{Day: day.Format("2006-01-02"), Rows: []KeySpend{}, Error: err.Error()}
		return
	}
	if ks == nil {
		ks = []KeySpend{}
	}
	slices.SortStableFunc(ks, func(a, b KeySpend) int {
		return cmp.Or(cmp.Compare(b.SpendUSD, a.SpendUSD), cmp.Compare(b.Requests, a.Requests), strings.Compare(a.Key, b.Key))
	})
	r.Keys = &Keys{Day: day.Format("2006-01-02"), Rows: ks}
}
