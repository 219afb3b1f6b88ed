package workers_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/simupstream"
	"github.com/relaygw/relay/workers/workerstest"
)

// sim serves a simulated upstream on loopback until the test ends.
func sim(t *testing.T) (*simupstream.Server, string) {
	t.Helper()
	s := simupstream.New(simupstream.Options{Record: 16})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		_ = s.Close()
		srv.Close()
	})
	return s, srv.URL
}

// closedProvider returns a provider closed when the test ends.
func closedProvider(t *testing.T, name string, f workers.Format, base string) *workers.HTTPProvider {
	t.Helper()
	p, err := workerstest.Provider(workers.ProviderOptions{Name: name, Format: f, BaseURL: base, APIKey: "k", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestPatternRouteUpstreamModel: a pattern route's target without a model
// passes the client's model through, one with a model renames it, across
// formats too; exact routes keep renaming as before.
func TestPatternRouteUpstreamModel(t *testing.T) {
	simA, urlA := sim(t)
	simO, urlO := sim(t)
	pa := closedProvider(t, "a", workers.FormatAnthropic, urlA)
	po := closedProvider(t, "o", workers.FormatOpenAI, urlO+"/v1")
	ta := workers.Target{Provider: pa, ProviderName: "a", Format: workers.FormatAnthropic, Timeout: 5 * time.Second}
	to := workers.Target{Provider: po, ProviderName: "o", Format: workers.FormatOpenAI, Timeout: 5 * time.Second}
	renamed := func(tg workers.Target, m string) workers.Target { tg.Model = m; return tg }
	r, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{
		{Model: "claude-sonnet", Targets: []workers.Target{renamed(ta, "claude-sonnet-4-5")}},
		{Model: "claude-*", Targets: []workers.Target{ta}},
		{Model: "claude-fast-*", Targets: []workers.Target{renamed(ta, "claude-haiku-4-5")}},
		{Model: "gpt-*", Targets: []workers.Target{to}},
		{Model: "cross-*", Targets: []workers.Target{renamed(to, "gpt-4o-mini")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		model, route, upstream string
		sim                    *simupstream.Server
	}{
		{"claude-sonnet", "claude-sonnet", "claude-sonnet-4-5", simA},
		{"claude-opus-4-6", "claude-*", "claude-opus-4-6", simA},
		{"claude-haiku-4-5-20251001", "claude-*", "claude-haiku-4-5-20251001", simA},
		{"claude-fast-1", "claude-fast-*", "claude-haiku-4-5", simA},
		{"gpt-4.1-nano", "gpt-*", "gpt-4.1-nano", nil}, // Anthropic client, OpenAI upstream, passed through
		{"cross-x", "cross-*", "gpt-4o-mini", simO},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			if route, ok := r.Route(tc.model); !ok || route != tc.route {
				t.Fatalf("Route(%q) = %q, %v; want %q", tc.model, route, ok, tc.route)
			}
			resp, err := r.Do(t.Context(), request(t, tc.model), nil)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if resp.StatusCode != 200 || resp.UpstreamModel != tc.upstream {
				t.Fatalf("Do = %d, upstream model %q; want 200, %q", resp.StatusCode, resp.UpstreamModel, tc.upstream)
			}
			s := tc.sim
			if s == nil {
				s = simO
			}
			reqs := s.Requests()
			if got := gjson.GetBytes(reqs[len(reqs)-1].Body, "model").String(); got != tc.upstream {
				t.Errorf("upstream got model %q; want %q", got, tc.upstream)
			}
		})
	}
	if _, ok := r.Route("mistral-large"); ok {
		t.Error("Route(mistral-large) found a route; want none")
	}
	if _, err := r.Do(t.Context(), request(t, "mistral-large"), nil); err != workers.ErrUnknownModel {
		t.Errorf("Do(mistral-large) = %v; want ErrUnknownModel", err)
	}
}

// pagedModels is an Anthropic upstream listing ids two per page, counting
// list requests; with hang set it never answers.
type pagedModels struct {
	srv   *httptest.Server
	ids   []string
	calls atomic.Int64
	hang  atomic.Bool
	fail  atomic.Bool
}

func newPagedModels(t *testing.T, ids ...string) *pagedModels {
	t.Helper()
	u := &pagedModels{ids: ids}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.calls.Add(1)
		if r.Header.Get("X-Api-Key") != "k" || r.Header.Get("Anthropic-Version") == "" || r.URL.Path != "/v1/models" {
			http.Error(w, `{"type":"error"}`, http.StatusUnauthorized)
			return
		}
		if u.hang.Load() {
			<-r.Context().Done()
			return
		}
		if u.fail.Load() {
			http.Error(w, `{"type":"error"}`, http.StatusInternalServerError)
			return
		}
		i := 0
		if a := r.URL.Query().Get("after_id"); a != "" {
			i = slices.Index(u.ids, a) + 1
		}
		end := min(i+2, len(u.ids))
		var data []string
		for _, id := range u.ids[i:end] {
			data = append(data, fmt.Sprintf(`{"type":"model","id":%q,"display_name":"D %s","created_at":"2026-01-02T03:04:05Z"}`, id, id))
		}
		fmt.Fprintf(w, `{"data":[%s],"has_more":%v,"first_id":%q,"last_id":%q}`,
			strings.Join(data, ","), end < len(u.ids), u.ids[i], u.ids[end-1])
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// TestListModels: exact routes by name; for pattern routes the models
// their upstreams list (Anthropic pages followed, OpenAI's list) that
// resolve to them, with the upstream's display name and date.
func TestListModels(t *testing.T) {
	up := newPagedModels(t, "claude-opus-4-6", "claude-sonnet", "claude-haiku-4-5", "claude-opus-x", "old-model")
	_, urlO := sim(t)
	pa := closedProvider(t, "a", workers.FormatAnthropic, up.srv.URL)
	po := closedProvider(t, "o", workers.FormatOpenAI, urlO+"/v1")
	ta := workers.Target{Provider: pa, ProviderName: "a", Format: workers.FormatAnthropic}
	to := workers.Target{Provider: po, ProviderName: "o", Format: workers.FormatOpenAI}
	r, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{
		{Model: "claude-sonnet", Targets: []workers.Target{ta}},
		{Model: "claude-*", Targets: []workers.Target{ta}},
		{Model: "claude-opus-*", Targets: []workers.Target{ta}},
		{Model: "gpt-4o*", Targets: []workers.Target{to}},
		{Model: "o-*", Targets: []workers.Target{ta}}, // a's list has none
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got := r.ListModels(ctx)
	var lines []string
	for _, m := range got {
		lines = append(lines, m.ID+"@"+m.Route)
	}
	want := []string{
		"claude-haiku-4-5@claude-*", "claude-opus-4-6@claude-opus-*", "claude-opus-x@claude-opus-*",
		"claude-sonnet@claude-sonnet", "gpt-4o@gpt-4o*", "gpt-4o-mini@gpt-4o*",
	}
	if strings.Join(lines, " ") != strings.Join(want, " ") {
		t.Fatalf("ListModels =\n%v\nwant\n%v", lines, want)
	}
	for _, m := range got {
		if m.ID == "claude-opus-4-6" && (m.DisplayName != "D claude-opus-4-6" || m.Created.Year() != 2026) {
			t.Errorf("claude-opus-4-6 = %+v; want the upstream's display name and date", m)
		}
	}
	if n := up.calls.Load(); n != 3 {
		t.Errorf("upstream list requests = %d; want 3 (pages of 2 of 5 models)", n)
	}
	r.ListModels(ctx)
	if n := up.calls.Load(); n != 3 {
		t.Errorf("upstream list requests after a second ListModels = %d; want 3 (cached)", n)
	}
}

// TestListModelsSlowOrDownUpstream: a hanging or failing upstream never
// holds ListModels past its context; its models are missing until a fetch
// succeeds, and a failed fetch is not retried on every call.
func TestListModelsSlowOrDownUpstream(t *testing.T) {
	up := newPagedModels(t, "claude-opus-4-6")
	up.hang.Store(true)
	pa := closedProvider(t, "a", workers.FormatAnthropic, up.srv.URL)
	ta := workers.Target{Provider: pa, ProviderName: "a", Format: workers.FormatAnthropic}
	r, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{
		{Model: "claude-sonnet", Targets: []workers.Target{ta}},
		{Model: "claude-*", Targets: []workers.Target{ta}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	list := func(wait time.Duration) []string {
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		var ids []string
		for _, m := range r.ListModels(ctx) {
			ids = append(ids, m.ID)
		}
		return ids
	}
	start := time.Now()
	if got := list(200 * time.Millisecond); !slices.Equal(got, []string{"claude-sonnet"}) {
		t.Errorf("with the upstream hanging, ListModels = %v; want only the exact route", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("ListModels took %v with the upstream hanging; want about its context's 200ms", d)
	}
	// The hung fetch is still in flight: no second one starts.
	if got := list(50 * time.Millisecond); len(got) != 1 || up.calls.Load() != 1 {
		t.Errorf("second ListModels = %v after %d fetches; want the exact route, one fetch", got, up.calls.Load())
	}
	// Close cancels the hung fetch (goleak checks it ended); a new
	// provider that fails gets no list and is not asked again at once.
	pa.Close()
	up.hang.Store(false)
	up.fail.Store(true)
	pb := closedProvider(t, "b", workers.FormatAnthropic, up.srv.URL)
	r2, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{
		{Model: "claude-*", Targets: []workers.Target{{Provider: pb, ProviderName: "b", Format: workers.FormatAnthropic}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	before := up.calls.Load()
	for range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		if got := r2.ListModels(ctx); len(got) != 0 {
			t.Errorf("with the upstream failing, ListModels = %v; want none", got)
		}
		cancel()
	}
	if n := up.calls.Load() - before; n != 1 {
		t.Errorf("fetches with the upstream failing = %d over 3 calls; want 1 (retried only after a pause)", n)
	}
}

// TestFallbackToPatternRoute: a route falling back to a pattern route's
// pass-through target sends the client's model there unchanged.
func TestFallbackToPatternRoute(t *testing.T) {
	down := newUpstream(t, 500)
	s, url := sim(t)
	pa := closedProvider(t, "pass", workers.FormatAnthropic, url)
	failing := target(t, "down", down)
	failing.Model = "claude-x-1"
	r, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{
		{Model: "claude-x", Targets: []workers.Target{failing}, Fallbacks: []string{"claude-*"}},
		{Model: "claude-*", Targets: []workers.Target{{Provider: pa, ProviderName: "pass", Format: workers.FormatAnthropic, Timeout: 5 * time.Second}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.Do(t.Context(), request(t, "claude-x"), nil)
	if err != nil || resp.Provider != "pass" || resp.UpstreamModel != "claude-x" {
		t.Fatalf("Do = %+v, %v; want the fallback's pass-through target with claude-x", resp, err)
	}
	reqs := s.Requests()
	if got := gjson.GetBytes(reqs[len(reqs)-1].Body, "model").String(); got != "claude-x" {
		t.Errorf("fallback upstream got model %q; want claude-x", got)
	}
}
