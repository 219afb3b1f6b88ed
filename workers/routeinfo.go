package workers

import "sort"

// RouteInfo is a read-only description of one route, for the status page.
type RouteInfo struct {
	// Model is the public model name.
	Model string
	// Targets serve the route, in configuration order.
	Targets []TargetInfo
	// Fallbacks name the routes tried when no target can serve.
	Fallbacks []string
}

// TargetInfo is one target of a route.
type TargetInfo struct {
	// Provider names the provider.
	Provider string
	// Model is the upstream model name.
	Model string
	// Weight is the target's share of the route's traffic.
	Weight int
}

// RouteInfos describes the router's routes, sorted by model.
func (r *Router) RouteInfos() []RouteInfo {
	out := make([]RouteInfo, 0, len(r.routes.byName))
	for _, rt := range r.routes.byName {
		ri := RouteInfo{Model: rt.model}
		for _, t := range rt.targets {
			ri.Targets = append(ri.Targets, TargetInfo{Provider: t.ProviderName, Model: t.Model, Weight: t.Weight})
		}
		for _, f := range rt.fallbacks {
			ri.Fallbacks = append(ri.Fallbacks, f.model)
		}
		out = append(out, ri)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Model < out[j].Model })
	return out
}
