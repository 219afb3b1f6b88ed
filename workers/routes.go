// This file owns routes and their targets: the specs a Router is built
// from, and smooth weighted round-robin among a route's targets.

package workers

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/modelglob"
)

// Target is one provider serving a route.
type Target struct {
	// Provider sends the calls.
	Provider Provider
	// ProviderName names the provider in metrics, logs and headers.
	ProviderName string
	// Format is the provider's API format.
	Format Format
	// Model is the upstream model name. Empty on a target of a pattern
	// route passes the client's model through unchanged; on a target of
	// an exact route it means the route's model.
	Model string
	// Weight is the target's share of the route's traffic (at least 1).
	Weight int
	// Timeout bounds one call to this target.
	Timeout time.Duration
	// Actor is the provider's admission control (concurrency, token
	// buckets, circuit breaker, cool-down); nil admits everything. Targets
	// of one provider share its Actor.
	Actor *actor.Actor
	// EstimateInput asks for an input-token estimate at admission (the
	// provider has an input_tpm limit); estimating walks the whole body.
	EstimateInput bool
}

// RouteSpec describes one route: the model a client sends, its targets and
// the routes to fall back on.
type RouteSpec struct {
	// Model is the public model name, or a pattern of them (see
	// modelglob): a client's model is served by the route named exactly
	// so, else by the matching pattern with the most literal characters,
	// the first in Routes among equals.
	Model string
	// Targets serve the route.
	Targets []Target
	// Fallbacks name routes tried when no target of this one can serve.
	Fallbacks []string
}

// route is a RouteSpec ready for smooth weighted round-robin selection.
type route struct {
	model     string
	pattern   bool // model is a modelglob pattern
	targets   []*target
	fallbacks []*route
	chain     []*route // the route, then its fallbacks breadth first
	total     int

	mu sync.Mutex // guards the targets' current weights
}

type target struct {
	Target
	current int // smooth weighted round-robin state, guarded by route.mu
}

// routeTable is a router's routes: by name, and the patterns in the
// order a client's model is tried against them.
type routeTable struct {
	byName   map[string]*route
	patterns []*route // most literal characters first, then in spec order
}

// resolve returns the route serving model: the exact route of that name,
// else the first matching pattern; nil when none does.
func (rt *routeTable) resolve(model string) *route {
	if r, ok := rt.byName[model]; ok && !r.pattern {
		return r
	}
	for _, r := range rt.patterns {
		if modelglob.Match(r.model, model) {
			return r
		}
	}
	return nil
}

// buildRoutes links specs into routes, resolving fallbacks.
func buildRoutes(specs []RouteSpec) (*routeTable, error) {
	tab := &routeTable{byName: make(map[string]*route, len(specs))}
	for _, s := range specs {
		if _, dup := tab.byName[s.Model]; dup {
			return nil, fmt.Errorf("route %q defined twice", s.Model)
		}
		rt, err := newRoute(s)
		if err != nil {
			return nil, err
		}
		tab.byName[s.Model] = rt
		if rt.pattern {
			tab.patterns = append(tab.patterns, rt)
		}
	}
	sort.SliceStable(tab.patterns, func(i, j int) bool {
		return modelglob.Specificity(tab.patterns[i].model) > modelglob.Specificity(tab.patterns[j].model)
	})
	for _, s := range specs {
		rt := tab.byName[s.Model]
		for _, fb := range s.Fallbacks {
			f, ok := tab.byName[fb]
			if !ok {
				return nil, fmt.Errorf("route %q: unknown fallback %q", s.Model, fb)
			}
			rt.fallbacks = append(rt.fallbacks, f)
		}
	}
	for _, rt := range tab.byName {
		rt.chain = rt.buildChain()
	}
	return tab, nil
}

// newRoute returns the route of s, without its fallbacks.
func newRoute(s RouteSpec) (*route, error) {
	if len(s.Targets) == 0 {
		return nil, fmt.Errorf("route %q has no targets", s.Model)
	}
	rt := &route{model: s.Model, pattern: modelglob.IsPattern(s.Model)}
	if rt.pattern {
		if err := modelglob.Check(s.Model); err != nil {
			return nil, fmt.Errorf("route %q: %w", s.Model, err)
		}
	}
	for _, t := range s.Targets {
		if t.Weight <= 0 {
			t.Weight = 1
		}
		if t.Model == "" && !rt.pattern {
			t.Model = s.Model
		}
		rt.targets = append(rt.targets, &target{Target: t})
		rt.total += t.Weight
	}
	return rt, nil
}

// upstreamModel is the model t is called with for a client's model: its
// own, or for a pass-through target the client's, unchanged.
func (t *target) upstreamModel(client string) string {
	if t.Model == "" {
		return client
	}
	return t.Model
}

// pick chooses the next target by smooth weighted round-robin (the nginx
// algorithm: over any window of total-weight picks each target is chosen
// exactly weight times, evenly interleaved), skipping targets in skip.
// Targets whose provider fails its health check are chosen only when no
// healthy one is left. It returns nil when every target is skipped.
func (rt *route) pick(skip func(*target) bool) *target {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if best := rt.pickLocked(skip, true); best != nil {
		return best
	}
	return rt.pickLocked(skip, false)
}

func (rt *route) pickLocked(skip func(*target) bool, healthyOnly bool) *target {
	var best *target
	total := 0
	for _, t := range rt.targets {
		if skip(t) || (healthyOnly && !t.Provider.HealthCheck()) {
			continue
		}
		t.current += t.Weight
		total += t.Weight
		if best == nil || t.current > best.current {
			best = t
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// buildChain returns rt followed by its fallbacks, breadth first, each route once.
func (rt *route) buildChain() []*route {
	out := []*route{rt}
	seen := map[*route]bool{rt: true}
	for i := 0; i < len(out); i++ {
		for _, f := range out[i].fallbacks {
			if !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out
}

// exactModels returns the sorted names of the exact (not pattern) routes.
func (rt *routeTable) exactModels() []string {
	out := make([]string, 0, len(rt.byName))
	for m, r := range rt.byName {
		if !r.pattern {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

// UpstreamModels returns the upstream models a request for model may be
// sent to, along its route and fallbacks (a target with no model sends
// the client's model), for a worst-case price; nil when
// no route serves model.
func (r *Router) UpstreamModels(model string) []string {
	rt := r.routes.resolve(model)
	if rt == nil {
		return nil
	}
	var out []string
	for _, c := range rt.chain {
		for _, t := range c.targets {
			if m := t.upstreamModel(model); !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	return out
}
