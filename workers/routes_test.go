package workers

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// fakeProvider is a Provider for selection tests; it is never called.
type fakeProvider struct{ healthy bool }

func (f *fakeProvider) Call(context.Context, *Call) (*http.Response, error) { panic("not called") }
func (f *fakeProvider) HealthCheck() bool                                   { return f.healthy }

func TestPickSmoothWeighted(t *testing.T) {
	a, b, c := &fakeProvider{true}, &fakeProvider{true}, &fakeProvider{true}
	routes, err := buildRoutes([]RouteSpec{{Model: "m", Targets: []Target{
		{Provider: a, ProviderName: "a", Weight: 5},
		{Provider: b, ProviderName: "b", Weight: 1},
		{Provider: c, ProviderName: "c", Weight: 1},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	rt := routes.byName["m"]
	none := func(*target) bool { return false }
	var seq strings.Builder
	for i := 0; i < 7; i++ {
		seq.WriteString(rt.pick(none).ProviderName)
	}
	// nginx's smooth weighted round-robin for weights 5,1,1.
	if got, want := seq.String(), "aabacaa"; got != want {
		t.Errorf("pick sequence = %s; want %s", got, want)
	}
	counts := map[string]int{}
	for i := 0; i < 700; i++ {
		counts[rt.pick(none).ProviderName]++
	}
	if counts["a"] != 500 || counts["b"] != 100 || counts["c"] != 100 {
		t.Errorf("700 picks = %v; want exactly 500/100/100", counts)
	}
}

func TestPickSkipsAndPrefersHealthy(t *testing.T) {
	sick := &fakeProvider{false}
	well := &fakeProvider{true}
	routes, err := buildRoutes([]RouteSpec{{Model: "m", Targets: []Target{
		{Provider: sick, ProviderName: "sick", Weight: 10},
		{Provider: well, ProviderName: "well", Weight: 1},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	rt := routes.byName["m"]
	for i := 0; i < 5; i++ {
		if got := rt.pick(func(*target) bool { return false }).ProviderName; got != "well" {
			t.Fatalf("pick = %s; want the healthy target", got)
		}
	}
	skipWell := func(t *target) bool { return t.ProviderName == "well" }
	if got := rt.pick(skipWell); got == nil || got.ProviderName != "sick" {
		t.Errorf("with the healthy target excluded, pick = %v; want the unhealthy one as last resort", got)
	}
	if got := rt.pick(func(*target) bool { return true }); got != nil {
		t.Errorf("everything skipped, pick = %v; want nil", got)
	}
}

func TestBuildRoutesErrors(t *testing.T) {
	p := &fakeProvider{true}
	cases := []struct {
		name  string
		specs []RouteSpec
		want  string
	}{
		{"duplicate", []RouteSpec{{Model: "m", Targets: []Target{{Provider: p}}}, {Model: "m", Targets: []Target{{Provider: p}}}}, "twice"},
		{"no targets", []RouteSpec{{Model: "m"}}, "no targets"},
		{"unknown fallback", []RouteSpec{{Model: "m", Targets: []Target{{Provider: p}}, Fallbacks: []string{"x"}}}, "unknown fallback"},
		{"catch-all pattern", []RouteSpec{{Model: "*", Targets: []Target{{Provider: p}}}}, "literal character"},
		{"double star", []RouteSpec{{Model: "claude-**", Targets: []Target{{Provider: p}}}}, "**"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := buildRoutes(tc.specs); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("buildRoutes = %v; want %q", err, tc.want)
			}
		})
	}
}

func TestChainBreadthFirstOnce(t *testing.T) {
	p := &fakeProvider{true}
	tg := []Target{{Provider: p}}
	routes, err := buildRoutes([]RouteSpec{
		{Model: "a", Targets: tg, Fallbacks: []string{"b", "c"}},
		{Model: "b", Targets: tg, Fallbacks: []string{"d", "a"}},
		{Model: "c", Targets: tg, Fallbacks: []string{"d"}},
		{Model: "d", Targets: tg},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes.byName["a"].chain {
		got = append(got, r.model)
	}
	if strings.Join(got, ",") != "a,b,c,d" {
		t.Errorf("chain = %v; want a,b,c,d", got)
	}
}

// TestResolve: exact routes win over patterns, then the pattern with the
// most literal characters, then the first in spec order; pass-through
// targets keep the client's model, others rename it.
func TestResolve(t *testing.T) {
	p := &fakeProvider{true}
	tg := []Target{{Provider: p}}
	tab, err := buildRoutes([]RouteSpec{
		{Model: "claude-*", Targets: tg},
		{Model: "claude-opus-*", Targets: []Target{{Provider: p, Model: "claude-opus-4-6"}}},
		{Model: "claude-sonnet", Targets: tg},
		{Model: "*-mini", Targets: tg}, // 5 literal characters
		{Model: "gpt-*", Targets: tg},  // 4: loses to *-mini
		{Model: "o1-*", Targets: tg},   // 3
		{Model: "*-o1x", Targets: tg},  // 4
		{Model: "a*", Targets: tg},     // 1: first of two equals
		{Model: "*z", Targets: tg},     // 1
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		model, route, upstream string
	}{
		{"claude-sonnet", "claude-sonnet", "claude-sonnet"},
		{"claude-sonnet-4-6", "claude-*", "claude-sonnet-4-6"},
		{"claude-opus-4-6", "claude-opus-*", "claude-opus-4-6"},
		{"claude-opus-4-5-20251101", "claude-opus-*", "claude-opus-4-6"},
		{"claude-haiku-4-5-20251001", "claude-*", "claude-haiku-4-5-20251001"},
		{"gpt-4o-mini", "*-mini", "gpt-4o-mini"},
		{"gpt-4o", "gpt-*", "gpt-4o"},
		{"o1-preview", "o1-*", "o1-preview"},
		{"az", "a*", "az"},
		{"zz", "*z", "zz"},
		{"claude", "", ""},
		{"mistral-large", "", ""},
		{"", "", ""},
	}
	for _, tc := range tests {
		rt := tab.resolve(tc.model)
		if tc.route == "" {
			if rt != nil {
				t.Errorf("resolve(%q) = %q; want no route", tc.model, rt.model)
			}
			continue
		}
		if rt == nil || rt.model != tc.route {
			t.Errorf("resolve(%q) = %v; want route %q", tc.model, rt, tc.route)
			continue
		}
		if got := rt.targets[0].upstreamModel(tc.model); got != tc.upstream {
			t.Errorf("upstream model for %q = %q; want %q", tc.model, got, tc.upstream)
		}
	}
	if got := tab.exactModels(); strings.Join(got, ",") != "claude-sonnet" {
		t.Errorf("exactModels = %v; want only the exact route", got)
	}
}

// TestRouteProviders checks the providers whose series a route gets
// before its first request: with its fallbacks' (a fallback's answer is
// counted under the route asked for), in the order they are tried, each
// once, and without them for RouteOwnProviders.
func TestRouteProviders(t *testing.T) {
	p := &fakeProvider{true}
	tg := func(name string) Target { return Target{Provider: p, ProviderName: name, Weight: 1} }
	routes, err := buildRoutes([]RouteSpec{
		{Model: "m", Targets: []Target{tg("a"), tg("b")}, Fallbacks: []string{"f", "g"}},
		{Model: "f", Targets: []Target{tg("c"), tg("a")}, Fallbacks: []string{"h"}},
		{Model: "g", Targets: []Target{tg("d")}},
		{Model: "h", Targets: []Target{tg("e")}, Fallbacks: []string{"m"}},
		{Model: "claude-*", Targets: []Target{tg("b")}, Fallbacks: []string{"g"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &Router{routes: routes}
	for _, tc := range []struct {
		name string
		got  map[string][]string
		want map[string]string
	}{
		{"with fallbacks", r.RouteProviders(), map[string]string{
			"m": "a b c d e", "f": "c a e b d", "g": "d", "h": "e a b c d", "claude-*": "b d"}},
		{"own", r.RouteOwnProviders(), map[string]string{
			"m": "a b", "f": "c a", "g": "d", "h": "e", "claude-*": "b"}},
	} {
		if len(tc.got) != len(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
		for route, want := range tc.want {
			if got := strings.Join(tc.got[route], " "); got != want {
				t.Errorf("%s: route %s: providers %q, want %q", tc.name, route, got, want)
			}
		}
	}
}
