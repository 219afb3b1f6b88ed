package lease

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/relaygw/relay/lanes/assets"
)

// Metrics are the leases' gauges, per provider.
type Metrics struct {
	share, limit, demand, age, coord, safe *prometheus.GaugeVec
}

// NewMetrics registers the leases' gauges on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		share: g("relay_lease_share", "This relay's granted share of a provider's limit, in the limit's units (requests or tokens per minute, calls); 0 without a lease (a relay alone holds its whole limits).", "provider", "limit"),
		limit: g("relay_lease_limit", "A provider's configured limit that its relays' leases divide, in the limit's units; 0 for a kind with no limit (compare relay_lease_share with it).",
			"provider", "limit"),
		demand: g("relay_lease_demand", "This relay's demand on a provider reported to its cluster, in requests per minute (recent use plus what drains its backlog within a lease period).", "provider"),
		age:    g("relay_lease_age_seconds", "Seconds since this relay last received a grant for a provider (0 without a cluster).", "provider"),
		coord:  g("relay_lease_coordinator", "1 when this relay coordinates a provider's leases (divides its limits among the relays).", "provider"),
		safe:   g("relay_lease_safe_share", "1 while this relay runs on a static safe share of a provider's limits, cut off from its cluster.", "provider"),
	}
	if reg != nil {
		reg.MustRegister(m.share, m.limit, m.demand, m.age, m.coord, m.safe)
	}
	return m
}

// add creates provider's series at zero.
func (m *Metrics) add(provider string) {
	for k := range NumKinds {
		m.share.WithLabelValues(provider, Kind(k).String())
		m.limit.WithLabelValues(provider, Kind(k).String())
	}
	m.demand.WithLabelValues(provider)
	m.age.WithLabelValues(provider)
	m.coord.WithLabelValues(provider)
	m.safe.WithLabelValues(provider)
}

// remove deletes provider's series.
func (m *Metrics) remove(provider string) {
	for k := range NumKinds {
		m.share.DeleteLabelValues(provider, Kind(k).String())
		m.limit.DeleteLabelValues(provider, Kind(k).String())
	}
	m.demand.DeleteLabelValues(provider)
	m.age.DeleteLabelValues(provider)
	m.coord.DeleteLabelValues(provider)
	m.safe.DeleteLabelValues(provider)
}

// Whole creates the series of a provider held by one relay alone, with
// no lease: they stay 0 but for relay_lease_limit, its limits.
func (m *Metrics) Whole(provider string, limits Limits) {
	m.add(provider)
	m.setLimits(provider, limits.Vector())
}

// setLimits records provider's limits.
func (m *Metrics) setLimits(provider string, limits Vector) {
	for k := range NumKinds {
		m.limit.WithLabelValues(provider, Kind(k).String()).Set(limits[k])
	}
}

// Forget removes a provider's series (it left the configuration).
func (m *Metrics) Forget(provider string) { m.remove(provider) }

// report updates h's view and gauges after a round; h.mu is held.
func (m *Manager) report(h *held, rec demandRecord) {
	st := Status{Resource: h.res, Share: h.share, Safe: h.safe, Coordinator: h.coordRev != 0, GrantedAt: h.grantedAt, Relays: h.relays}
	limits := h.res.Limits.Vector()
	for k := range NumKinds {
		if limits[k] > 0 {
			st.Fraction = h.share[k] / limits[k]
			break
		}
	}
	h.viewMu.Lock()
	h.view = st
	h.viewMu.Unlock()
	mt := m.o.Metrics
	if mt == nil || h.res.Kind != "provider" {
		return
	}
	name := h.res.Name
	for k := range NumKinds {
		v := h.share[k]
		if limits[k] <= 0 {
			v = 0
		}
		mt.share.WithLabelValues(name, Kind(k).String()).Set(v)
	}
	mt.setLimits(name, limits)
	want := rec.Steady[RPM]
	for _, c := range rec.Classes {
		want += c[RPM]
	}
	mt.demand.WithLabelValues(name).Set(want)
	age := 0.0
	if !h.grantedAt.IsZero() {
		age = m.o.Now().Sub(h.grantedAt).Seconds()
	}
	mt.age.WithLabelValues(name).Set(age)
	mt.coord.WithLabelValues(name).Set(b2f(h.coordRev != 0))
	mt.safe.WithLabelValues(name).Set(b2f(h.safe))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Status is one resource's lease as this relay holds it.
type Status struct {
	Resource Resource
	// Share is the share in force (granted or safe).
	Share Vector
	// Fraction is Share over the limit, for the first limited kind.
	Fraction float64
	// Safe: on a safe share, cut off from the cluster.
	Safe        bool
	Coordinator bool
	GrantedAt   time.Time
	Relays      int
}

// Statuses returns every resource's status, sorted by ID.
func (m *Manager) Statuses() []Status {
	hs := m.snapshot()
	out := make([]Status, 0, len(hs))
	for _, h := range hs {
		h.viewMu.Lock()
		st := h.view
		h.viewMu.Unlock()
		if st.Resource.Name == "" {
			continue // not stepped yet
		}
		out = append(out, st)
	}
	return out
}

// Check fails while any resource runs on a safe share cut off from the
// cluster, naming them (for /readyz).
func (m *Manager) Check() error {
	var names []string
	for _, st := range m.Statuses() {
		if st.Safe {
			names = append(names, st.Resource.ID())
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	return fmt.Errorf("cut off from the cluster: running on a safe share of the limits of %s", strings.Join(names, ", "))
}

// isConflict reports whether err is a lost compare-and-set
// (assets.IsConflict).
func isConflict(err error) bool { return assets.IsConflict(err) }
