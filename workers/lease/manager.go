package lease

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the JetStream KV bucket of the leases: demands, coordinator
// keys and grants records.
const Bucket = "RELAY_LEASES"

// Defaults of [Options].
const (
	// DefaultPeriod is how long a grant lasts.
	DefaultPeriod = 3 * time.Second
	// MinPeriod is the shortest period: the coordinator key's TTL (at
	// least the 1 s JetStream allows) must stay a third of it.
	MinPeriod = 3 * time.Second
	// RoundsPerPeriod is how many rounds (demand written, coordinator
	// renewed, grants written and read) a period holds.
	RoundsPerPeriod = 6
	// DefaultReserve is the fraction of each rate limit never granted
	// while several relays share it.
	DefaultReserve = 0.05
	// DefaultFloor is the fraction of each limit handed out evenly as
	// floors (so each of N relays keeps at least Floor/N of it).
	DefaultFloor = 0.1
	// steadyRoom is how much more than its recent use a relay with no
	// backlog asks for, so that its traffic can grow between grants.
	steadyRoom = 1.25
	// rateHalfLife smooths the recent rates reported as demand.
	rateHalfLife = 5 * time.Second
)

// Holder is the local side of a lease: what holds a resource's limits on
// this relay (for a provider, its actor and its lanes' backlog).
type Holder interface {
	// Demand reports what the resource used and has parked here.
	Demand() Demand
	// Apply sets this relay's grant.
	Apply(Grant)
}

// Grant is what a holder applies.
type Grant struct {
	// Whole: no lease applies, the configured limits hold in full (a
	// resource removed from the manager).
	Whole bool
	// Share is this relay's share per kind (kinds with no limit: 0, to be
	// ignored).
	Share Vector
	// Learned is what other relays learned from the upstream and this
	// relay has not applied yet, caps already scaled to this relay's share;
	// zero fields: nothing new.
	Learned Learned
}

// Resource is one thing whose limits the cluster holds together: a
// provider now (Kind "provider", metrics labelled provider=Name), a key
// later.
type Resource struct {
	Kind   string
	Name   string
	Limits Limits
	Holder Holder
}

// ID identifies the resource in the bucket's keys.
func (r Resource) ID() string { return r.Kind + "/" + r.Name }

// Options configure a Manager.
type Options struct {
	// JetStream holds the bucket; KV opens it (for instance
	// assets.Declarer.KeyValue), with per-key TTLs allowed.
	JetStream jetstream.JetStream
	KV        func(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	// Period is the lease period (DefaultPeriod when 0, at least
	// MinPeriod): a grant lasts one period; demands are written, the
	// coordinator key renewed and grants written and read every sixth of
	// it (RoundsPerPeriod).
	Period time.Duration
	// Skew is how long before its expiry a relay stops trusting a grant
	// (clocks differ, records travel); 0: Period/6.
	Skew time.Duration
	// Policy divides the limits; MinShare comes from the lanes.
	Policy Policy
	// ExpectedRelays is how many relays to assume before any grants record
	// says (the cluster's size when known; 0 or 1: one).
	ExpectedRelays int
	// Relay names this relay (a random instance id when empty).
	Relay   string
	Logger  *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
}

// Manager runs this relay's side of the leases of every resource: it
// reports demands, coordinates the resources whose coordinator it is
// elected, and applies grants (or a safe share once cut off). Create it
// with New, give it resources with Set, run it with Run.
type Manager struct {
	o   Options
	log *slog.Logger

	mu        sync.Mutex
	resources map[string]*held // by Resource.ID
	kv        jetstream.KeyValue

	wake chan struct{} // a round at once (Set added a resource)
}

// held is the manager's state of one resource. mu is held by the round
// that steps it (and by Set, to change res); view, under viewMu, is what
// Statuses reads, so that /readyz never waits for a round.
type held struct {
	mu  sync.Mutex
	res Resource

	viewMu sync.Mutex
	view   Status

	// rates
	last     Demand
	lastAt   time.Time
	rate     Vector // per minute (concurrency: unused)
	rateInit bool

	// grants
	appliedRev   uint64
	appliedEpoch uint64
	expires      time.Time // local clock: the grant in use stops here
	grantedAt    time.Time
	share        Vector
	relays       int       // last known
	safe         bool      // on a safe share after losing a grant (cut off)
	onSafe       bool      // on a safe share (cut off, or no grant yet)
	started      bool      // had a grant once
	since        time.Time // added to the manager
	read         bool      // read the grants record (or learned there is none) once
	othersHold   bool      // before its first grant: others hold unexpired grants
	learnedAt    [3]time.Time
	coolUntil    time.Time

	// coordination
	coordRev uint64 // revision of our coordinator key; 0 when not coordinator
}

// New returns a Manager (not running).
func New(o Options) *Manager {
	if o.Period <= 0 {
		o.Period = DefaultPeriod
	}
	o.Period = max(o.Period, MinPeriod)
	if o.Skew <= 0 {
		o.Skew = o.Period / 6
	}
	if o.Relay == "" {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		o.Relay = "r" + hex.EncodeToString(b)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Manager{o: o, log: o.Logger, resources: map[string]*held{}, wake: make(chan struct{}, 1)}
}

// Relay returns this relay's name in the leases.
func (m *Manager) Relay() string { return m.o.Relay }

// Set replaces the resources the manager holds (at start and on a
// configuration reload). A resource kept keeps its grant until the next
// round; a new one starts on a safe share; a removed one gets Whole.
func (m *Manager) Set(rs []Resource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string]*held, len(rs))
	added := false
	for _, r := range rs {
		if h, ok := m.resources[r.ID()]; ok {
			h.mu.Lock()
			h.res = r
			h.mu.Unlock()
			next[r.ID()] = h
			continue
		}
		h := &held{res: r, since: m.o.Now()}
		// No share until the first round says what this relay may use.
		h.onSafe = true
		r.Holder.Apply(Grant{})
		next[r.ID()] = h
		if m.o.Metrics != nil && r.Kind == "provider" {
			m.o.Metrics.add(r.Name)
			m.o.Metrics.setLimits(r.Name, r.Limits.Vector())
		}
		added = true
	}
	if added {
		// A new resource (a key made at run time) has no share until a
		// round: run one now rather than up to a sixth of a period later.
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
	for id, h := range m.resources {
		if _, ok := next[id]; !ok {
			h.mu.Lock()
			h.res.Holder.Apply(Grant{Whole: true})
			h.mu.Unlock()
			if m.o.Metrics != nil && h.res.Kind == "provider" {
				m.o.Metrics.remove(h.res.Name)
			}
		}
	}
	m.resources = next
}

// SetPolicy changes the division policy (lanes' min_share after a reload).
func (m *Manager) SetPolicy(p Policy) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.o.Policy = p
}

// Run runs rounds every sixth of a period until ctx ends. Each round
// reports demands, coordinates and applies grants; a round that cannot
// reach NATS leaves the grants to run out, then falls back to safe
// shares. Run returns nil when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	tick := time.NewTicker(m.o.Period / RoundsPerPeriod)
	defer tick.Stop()
	for {
		m.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-m.wake:
		}
	}
}

// snapshot returns the resources, sorted by ID.
func (m *Manager) snapshot() []*held {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*held, 0, len(m.resources))
	for _, h := range m.resources {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].res.ID() < out[j].res.ID() })
	return out
}

// round is one pass over every resource.
func (m *Manager) round(ctx context.Context) {
	// Declaring the bucket (once) may take a while on a cluster still
	// placing assets; a round's NATS calls get a third of a period.
	bctx, bcancel := context.WithTimeout(ctx, max(m.o.Period, 5*time.Second))
	kv, err := m.bucket(bctx)
	bcancel()
	rctx, cancel := context.WithTimeout(ctx, m.o.Period/3)
	defer cancel()
	if err != nil && ctx.Err() == nil {
		m.log.Debug("leases: bucket unavailable", "error", err)
	}
	for _, h := range m.snapshot() {
		if ctx.Err() != nil {
			return
		}
		m.step(rctx, kv, h)
	}
}

// bucket opens the bucket once.
func (m *Manager) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	m.mu.Lock()
	kv := m.kv
	m.mu.Unlock()
	if kv != nil {
		return kv, nil
	}
	kv, err := m.o.KV(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, Storage: jetstream.FileStorage,
		LimitMarkerTTL: m.o.Period, Description: "relay: capacity leases (demands, coordinators, grants)"})
	if err != nil {
		return nil, fmt.Errorf("leases: open bucket %s: %w", Bucket, err)
	}
	m.mu.Lock()
	m.kv = kv
	m.mu.Unlock()
	return kv, nil
}

// keys of a resource.
func keyID(r Resource) string { return base64.RawURLEncoding.EncodeToString([]byte(r.ID())) }
func demandKey(r Resource, relay string) string {
	return "d." + keyID(r) + "." + relay
}
func demandPrefix(r Resource) string { return "d." + keyID(r) + ".*" }
func coordKey(r Resource) string     { return "c." + keyID(r) }
func grantsKey(r Resource) string    { return "g." + keyID(r) }

// step runs one round for one resource. kv nil: NATS is unreachable.
func (m *Manager) step(ctx context.Context, kv jetstream.KeyValue, h *held) {
	// Lock order: m.mu before h.mu (Set), never the other way.
	m.mu.Lock()
	policy := m.o.Policy
	m.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	now := m.o.Now()
	d := h.res.Holder.Demand()
	rec := m.demand(h, d, now, policy)
	limits := h.res.Limits.Vector()
	if kv != nil {
		if err := m.putDemand(ctx, kv, h, rec); err != nil {
			m.log.Debug("leases: write demand", "resource", h.res.ID(), "error", err)
		} else {
			m.coordinate(ctx, kv, h, limits, policy)
			m.readGrants(ctx, kv, h, now)
		}
	}
	m.fallBack(h, m.o.Now(), limits, policy)
	m.report(h, rec)
}

// demand turns the holder's report into the stored demand: smoothed rates
// from the counters, asks per class.
func (m *Manager) demand(h *held, d Demand, now time.Time, p Policy) demandRecord {
	if h.rateInit {
		dt := now.Sub(h.lastAt)
		if dt > 0 {
			cur := Vector{d.Requests - h.last.Requests, d.InputTokens - h.last.InputTokens, d.OutputTokens - h.last.OutputTokens}
			alpha := 1 - math.Exp2(-float64(dt)/float64(rateHalfLife))
			for k := range MaxConcurrency {
				perMin := max(cur[k], 0) / dt.Minutes()
				h.rate[k] += alpha * (perMin - h.rate[k])
			}
		}
	}
	h.rateInit, h.last, h.lastAt = true, d, now
	used := h.rate
	used[MaxConcurrency] = float64(d.InFlight)
	rec := demandRecord{Relay: m.o.Relay, At: now, InFlight: d.InFlight, Applied: h.appliedEpoch}
	l := d.Learned.current(now)
	rec.Learned = l
	backlog := 0
	for _, b := range d.Backlog {
		backlog += max(b, 0)
	}
	if backlog == 0 {
		for k := range NumKinds {
			rec.Steady[k] = used[k] * steadyRoom
		}
		return rec
	}
	// What drains the backlog within one period, per request as recently
	// used (or as the limits suggest when nothing ran yet).
	limits := h.res.Limits.Vector()
	drain := float64(backlog) * float64(time.Minute) / float64(m.o.Period)
	var per Vector
	per[RPM] = 1
	for _, k := range []Kind{InputTPM, OutputTPM} {
		switch {
		case used[RPM] > 0.01:
			per[k] = used[k] / used[RPM]
		case limits[RPM] > 0:
			per[k] = limits[k] / limits[RPM]
		default:
			per[k] = limits[k] / 60
		}
	}
	var want Vector
	for k := range MaxConcurrency {
		want[k] = used[k] + drain*per[k]
	}
	want[MaxConcurrency] = used[MaxConcurrency] + float64(backlog)
	rec.Classes = make([]Vector, len(d.Backlog))
	for c, b := range d.Backlog {
		f := float64(max(b, 0)) / float64(backlog)
		for k := range NumKinds {
			rec.Classes[c][k] = want[k] * f
		}
	}
	return rec
}

// demandTTL is how long a demand record lives: half a period (at least
// the 1 s JetStream allows), three rounds.
func (m *Manager) demandTTL() time.Duration { return max(m.o.Period/2, time.Second) }

// coordTTL is how long a coordinator key lives without renewal: a third
// of a period (at least 1 s), two rounds. A dead coordinator's successor
// then writes grants (a round after the key expired) and relays read them
// (another round) before the grants it wrote last expire (a period less
// the skew margin): 1/3 + 2/6 < 1 − 1/6 of a period.
func (m *Manager) coordTTL() time.Duration { return max(m.o.Period/3, time.Second) }

// putDemand writes rec with a TTL of one period.
func (m *Manager) putDemand(ctx context.Context, kv jetstream.KeyValue, h *held, rec demandRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("leases: encode demand: %w", err)
	}
	_, err = m.o.JetStream.PublishMsg(ctx, &nats.Msg{Subject: "$KV." + Bucket + "." + demandKey(h.res, m.o.Relay), Data: b},
		jetstream.WithMsgTTL(m.demandTTL()))
	if err != nil {
		return fmt.Errorf("leases: write demand: %w", err)
	}
	return nil
}

// coordinate keeps or takes the resource's coordinator key and, while
// this relay holds it, writes the next grants record.
func (m *Manager) coordinate(ctx context.Context, kv jetstream.KeyValue, h *held, limits Vector, p Policy) {
	key := coordKey(h.res)
	if h.coordRev != 0 {
		rev, err := m.casTTL(ctx, key, []byte(m.o.Relay), h.coordRev)
		if err != nil {
			if isConflict(err) {
				m.log.Info("leases: no longer coordinator", "resource", h.res.ID())
			}
			h.coordRev = 0
			return
		}
		h.coordRev = rev
	} else {
		rev, err := kv.Create(ctx, key, []byte(m.o.Relay), jetstream.KeyTTL(m.coordTTL()))
		if err != nil {
			return // another relay coordinates, or NATS is away
		}
		h.coordRev = rev
		m.log.Info("leases: coordinating", "resource", h.res.ID(), "relay", m.o.Relay)
	}
	prev, prevRev, err := m.getGrants(ctx, kv, h.res)
	if err != nil {
		return
	}
	demands, err := m.demands(ctx, kv, h.res)
	if err != nil {
		return
	}
	now := m.o.Now()
	// Demands older than a period are gone, whatever the TTL says.
	demands = slices.DeleteFunc(demands, func(d demandRecord) bool { return now.Sub(d.At) > m.demandTTL()+m.o.Skew })
	next := coordinate(prev, m.o.Relay, now, m.o.Period, limits, p, demands)
	b, err := json.Marshal(next)
	if err != nil {
		return
	}
	if prevRev == 0 {
		_, err = kv.Create(ctx, grantsKey(h.res), b)
	} else {
		_, err = kv.Update(ctx, grantsKey(h.res), b, prevRev)
	}
	if err != nil && isConflict(err) {
		m.log.Info("leases: grants written by another coordinator", "resource", h.res.ID())
		h.coordRev = 0
	}
}

// casTTL replaces key at revision rev with value, with a TTL of one
// period (jetstream's Update sets no TTL).
func (m *Manager) casTTL(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	ack, err := m.o.JetStream.PublishMsg(ctx, &nats.Msg{Subject: "$KV." + Bucket + "." + key, Data: value},
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(m.coordTTL()))
	if err != nil {
		return 0, fmt.Errorf("leases: renew %s: %w", key, err)
	}
	return ack.Sequence, nil
}

// getGrants reads the grants record and its revision (nil, 0 when none).
func (m *Manager) getGrants(ctx context.Context, kv jetstream.KeyValue, r Resource) (*grantsRecord, uint64, error) {
	e, err := kv.Get(ctx, grantsKey(r))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("leases: read grants: %w", err)
	}
	var g grantsRecord
	if err := json.Unmarshal(e.Value(), &g); err != nil {
		// A record this relay cannot read is replaced, but its grants are
		// unknown: count the whole limit held for a period.
		return nil, e.Revision(), fmt.Errorf("leases: decode grants: %w", err)
	}
	return &g, e.Revision(), nil
}

// demands reads every live relay's demand for r.
func (m *Manager) demands(ctx context.Context, kv jetstream.KeyValue, r Resource) ([]demandRecord, error) {
	w, err := kv.Watch(ctx, demandPrefix(r), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("leases: watch demands: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []demandRecord
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("leases: demands watch closed")
			}
			if e == nil {
				return out, nil
			}
			var d demandRecord
			if json.Unmarshal(e.Value(), &d) == nil && d.Relay != "" {
				out = append(out, d)
			}
		}
	}
}

// readGrants applies a newer grants record.
func (m *Manager) readGrants(ctx context.Context, kv jetstream.KeyValue, h *held, readAt time.Time) {
	g, rev, err := m.getGrants(ctx, kv, h.res)
	if err != nil {
		return
	}
	h.read = true
	if g == nil || rev <= h.appliedRev {
		return
	}
	h.relays = max(g.Relays, 1)
	e, ok := g.Grants[m.o.Relay]
	if !ok {
		h.othersHold = false
		for _, o := range g.Grants {
			if o.Expires.After(readAt) || len(inUse(o, readAt, 0)) > 0 {
				h.othersHold = true
			}
		}
		h.relays = g.Relays + 1 // and this one
	}
	if !ok || !e.Expires.After(g.Issued) {
		return // not granted yet: the next record will
	}
	// The grant ends at its expiry less the skew margin, by the issuer's
	// clock and by the time it took to reach us, whichever is sooner.
	exp := readAt.Add(e.Expires.Sub(g.Issued))
	if e.Expires.Before(exp) {
		exp = e.Expires
	}
	exp = exp.Add(-m.o.Skew)
	if !exp.After(m.o.Now()) {
		return
	}
	h.appliedRev, h.appliedEpoch, h.expires, h.grantedAt = rev, g.Epoch, exp, readAt
	h.share, h.safe, h.started, h.onSafe = e.Share, false, true, false
	grant := Grant{Share: e.Share, Learned: m.fresh(h, g)}
	h.res.Holder.Apply(grant)
}

// fresh returns what the record teaches that this relay has not applied,
// caps scaled to its share, and notes it applied.
func (m *Manager) fresh(h *held, g *grantsRecord) Learned {
	var l Learned
	now := m.o.Now()
	gl := g.Learned.current(now)
	if gl.CoolUntil.After(h.coolUntil) {
		l.CoolUntil, h.coolUntil = gl.CoolUntil, gl.CoolUntil
	}
	limits := h.res.Limits.Vector()
	for k := range 3 {
		c := gl.Caps[k]
		if c.Until.IsZero() || !c.At.After(h.learnedAt[k]) {
			continue
		}
		h.learnedAt[k] = c.At
		frac := 1 / float64(max(g.Relays, 1))
		if limits[k] > 0 {
			frac = h.share[k] / limits[k]
		}
		c.Remaining *= frac
		l.Caps[k] = c
	}
	return l
}

// fallBack puts a resource whose grant ran out (or which has none yet)
// on its safe share: limit ÷ the last known number of relays (at start:
// the expected number, or one more than the record knows).
func (m *Manager) fallBack(h *held, now time.Time, limits Vector, p Policy) {
	if h.started && now.Before(h.expires) {
		return
	}
	cutOff := h.started // it had a grant and lost it
	if !h.started && (!h.read || h.othersHold) {
		// No grant yet. While other relays hold grants, or before the
		// bucket could be read, the first grant is waited for with no
		// share at all (within a round or two); past two periods of that,
		// the relay counts as cut off.
		if now.Sub(h.since) < 2*m.o.Period {
			var zero Vector
			if !h.onSafe || h.share != zero {
				h.share, h.onSafe = zero, true
				h.res.Holder.Apply(Grant{Share: zero})
			}
			return
		}
		cutOff = true
	}
	n := max(h.relays, m.o.ExpectedRelays, 1)
	if n == 1 {
		p.Reserve = 0 // alone as far as it knows: the whole limit
	}
	capacity := p.Capacity(limits)
	var share Vector
	for k := range NumKinds {
		share[k] = capacity[k] / float64(n)
	}
	share[MaxConcurrency] = math.Floor(share[MaxConcurrency])
	if limits[MaxConcurrency] > 0 {
		share[MaxConcurrency] = max(share[MaxConcurrency], 1)
	}
	if h.onSafe && share == h.share && cutOff == h.safe {
		return
	}
	if cutOff && !h.safe {
		m.log.Warn("leases: grant expired without renewal; running on a safe share", "resource", h.res.ID(),
			"relays", n, "share", share)
	}
	h.share, h.safe, h.onSafe = share, cutOff, true
	h.res.Holder.Apply(Grant{Share: share})
}
