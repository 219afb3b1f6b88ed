// This file owns the models a router lists: its exact routes by name, and
// for its pattern routes the models their providers' upstreams report
// (each provider's own GET /v1/models, cached) that the route serves.

package workers

import (
	"context"
	"sort"
	"sync"
	"time"
)

// UpstreamModel is one model an upstream lists.
type UpstreamModel struct {
	// ID is the model id clients send.
	ID string
	// DisplayName is the upstream's display name; empty when it has none
	// (OpenAI-compatible APIs).
	DisplayName string
	// Created is when the upstream says the model was made; zero when
	// unknown.
	Created time.Time
}

// ModelLister is implemented by providers that can list the models their
// upstream serves. *HTTPProvider implements it.
type ModelLister interface {
	// UpstreamModels returns the upstream's models as last fetched, and
	// whether they are known. It returns at once when a list is cached
	// (refreshing a stale one in the background), else waits for a
	// fetch until ctx ends, and reports false when none has come.
	UpstreamModels(ctx context.Context) ([]UpstreamModel, bool)
}

// ModelInfo is one model a router serves.
type ModelInfo struct {
	// ID is the model id a client sends.
	ID string
	// Route names the route serving it: ID for an exact route, the
	// pattern for a pattern route.
	Route string
	// DisplayName is the upstream's display name, or empty.
	DisplayName string
	// Created is the upstream's creation time, or zero.
	Created time.Time
}

// ListModels returns the models the router serves, sorted by id: every
// exact route, and for each pattern route the models its targets'
// upstreams list that the route serves (that match its pattern and no
// exact route or more specific pattern). An upstream whose list is not
// known by the time ctx ends (its first fetch is slow or failing) adds
// nothing; its fetch goes on in the background, so a later call has it.
func (r *Router) ListModels(ctx context.Context) []ModelInfo {
	out := make([]ModelInfo, 0, len(r.models))
	seen := make(map[string]bool, len(r.models))
	for _, m := range r.models {
		out = append(out, ModelInfo{ID: m, Route: m})
		seen[m] = true
	}
	lists := r.upstreamModels(ctx)
	names := make([]string, 0, len(lists))
	for name := range lists {
		names = append(names, name)
	}
	sort.Strings(names) // an id two providers list takes the first's name and date
	for _, name := range names {
		for _, m := range lists[name] {
			rt := r.routes.resolve(m.ID)
			if seen[m.ID] || rt == nil || !rt.pattern || !r.listsFrom(rt, name) {
				continue
			}
			seen[m.ID] = true
			out = append(out, ModelInfo{ID: m.ID, Route: rt.model, DisplayName: m.DisplayName, Created: m.Created})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// listsFrom reports whether provider is one of rt's targets' providers.
func (r *Router) listsFrom(rt *route, provider string) bool {
	for _, t := range rt.targets {
		if t.ProviderName == provider {
			return true
		}
	}
	return false
}

// upstreamModels asks the providers of the pattern routes' targets for
// their models, all at once, and returns the known lists by provider name.
func (r *Router) upstreamModels(ctx context.Context) map[string][]UpstreamModel {
	listers := make(map[string]ModelLister)
	for _, rt := range r.routes.patterns {
		for _, t := range rt.targets {
			if l, ok := t.Provider.(ModelLister); ok {
				listers[t.ProviderName] = l
			}
		}
	}
	out := make(map[string][]UpstreamModel, len(listers))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, l := range listers {
		wg.Go(func() {
			if models, ok := l.UpstreamModels(ctx); ok {
				mu.Lock()
				out[name] = models
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}
