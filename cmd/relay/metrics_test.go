package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// The operator's files these tests hold to what the relay exports.
var (
	metricsDoc     = filepath.Join("..", "..", "docs", "METRICS.md")
	dashboardFile  = filepath.Join("..", "..", "deploy", "grafana", "relay-dashboard.json")
	alertsDir      = filepath.Join("..", "..", "deploy", "prometheus")
	alertsFile     = filepath.Join(alertsDir, "relay-alerts.yaml")
	alertsTestFile = filepath.Join(alertsDir, "relay-alerts.test.yaml")
)

// metricsBody is a configuration with every kind of labelled name: two
// lanes, a provider with every limit (so relay_provider_capacity has
// series) and one without, and two routes, one falling back on the
// other.
const metricsBody = `lanes:
  - {name: interactive, max_depth: 100, max_wait: 30s}
  - {name: batch, max_depth: 1000, max_wait: 1h, min_share: 0.1}
providers:
  - {name: sim-a, type: anthropic, base_url: "http://SIM", api_key: ` + canaryUpstream + `, max_concurrency: 8, rpm: 600, input_tpm: 1000000, output_tpm: 1000000}
  - {name: sim-o, type: openai, base_url: "http://SIM/v1", api_key: ` + canaryUpstream + `}
routes:
  - model: claude-sonnet
    targets:
      - {provider: sim-a, model: claude-sonnet-4-5}
    fallbacks: [gpt-4o]
  - model: gpt-4o
    targets:
      - {provider: sim-o}
`

// metricsReloadBody adds a lane, a provider and a route to metricsBody.
const metricsReloadBody = `lanes:
  - {name: interactive, max_depth: 100, max_wait: 30s}
  - {name: batch, max_depth: 1000, max_wait: 1h, min_share: 0.1}
  - {name: bulk, max_depth: 10, max_wait: 2h}
providers:
  - {name: sim-a, type: anthropic, base_url: "http://SIM", api_key: ` + canaryUpstream + `, max_concurrency: 8, rpm: 600, input_tpm: 1000000, output_tpm: 1000000}
  - {name: sim-o, type: openai, base_url: "http://SIM/v1", api_key: ` + canaryUpstream + `}
  - {name: sim-b, type: anthropic, base_url: "http://SIM", api_key: ` + canaryUpstream + `}
routes:
  - model: claude-sonnet
    targets:
      - {provider: sim-a, model: claude-sonnet-4-5}
    fallbacks: [gpt-4o]
  - model: gpt-4o
    targets:
      - {provider: sim-o}
  - model: claude-haiku
    targets:
      - {provider: sim-b, model: claude-haiku-4-5}
`

// scrape parses the relay's /metrics.
func (p *relayProc) scrape() map[string]*dto.MetricFamily {
	p.t.Helper()
	code, body := p.get(p.addr, "/metrics")
	if code != http.StatusOK {
		p.t.Fatalf("/metrics: %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		p.t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// series returns the value of the series of fams named name with exactly
// labels (a histogram's sample count), and whether it exists.
func series(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if fmt.Sprint(got) != fmt.Sprint(labels) {
			continue
		}
		return value(m), true
	}
	return 0, false
}

// value is a series' value: a counter's or gauge's, a histogram's count.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// l builds a label set from name, value pairs.
func l(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// stateGauges may be non-zero on a fresh relay: they report a state or a
// limit, not something that happened.
var stateGauges = map[string]bool{"relay_job_store_up": true, "relay_provider_capacity": true,
	"relay_lane_max_depth": true, "relay_lane_max_wait_seconds": true, "relay_key_budget_remaining": true,
	"relay_lease_limit": true}

// TestMetrics checks, against one fresh relay, what it exports before any
// request (metricsAtStart), docs/METRICS.md's table (metricsTable), the
// metric names of the dashboard and alert rules (deployMetricNames), and
// last the series a reload adds (metricsAfterReload).
func TestMetrics(t *testing.T) {
	// The key has a budget, for the budget metrics' series (by key).
	p := startReloadRelay(t, relayOpts{grace: "2s", tokenInterval: "1ms", keyBudget: "{tokens: 1000000, period: month}"},
		[]string{canaryKey}, metricsBody)
	fams := p.scrape()
	t.Run("at start", func(t *testing.T) { metricsAtStart(t, fams) })
	t.Run("table", func(t *testing.T) { metricsTable(t, fams) })
	t.Run("deploy files", func(t *testing.T) { deployMetricNames(t, fams) })
	t.Run("after reload", func(t *testing.T) {
		p.writeConfig(p.reloadConfig([]string{canaryKey}, metricsReloadBody))
		natstest.Eventually(t, 30*time.Second, "a reload log line", func() bool {
			return p.findLog(map[string]string{"msg": "configuration reloaded"}) != nil
		})
		checkSeries(t, p.scrape(), "reload", knownSeries("claude-haiku", "sim-b", "bulk"))
	})
}

// metricsAtStart checks that every documented name is exported with every
// series of the configured routes, providers and lanes, at zero.
func metricsAtStart(t *testing.T, fams map[string]*dto.MetricFamily) {
	for _, row := range readMetricsTable(t) {
		if fams[row.name] == nil {
			t.Errorf("%s is documented but a fresh relay does not export it", row.name)
		}
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "relay_") || stateGauges[name] {
			continue
		}
		for _, m := range f.GetMetric() {
			if v := value(m); v != 0 {
				t.Errorf("fresh relay: %s%v = %v, want 0", name, m.GetLabel(), v)
			}
		}
	}
	// A relay alone reports its providers' whole limits, 0 for a kind
	// with none.
	for _, lim := range []struct {
		provider, limit string
		want            float64
	}{{"sim-a", "rpm", 600}, {"sim-a", "max_concurrency", 8}, {"sim-o", "rpm", 0}, {"sim-o", "output_tpm", 0}} {
		if v, ok := series(fams, "relay_lease_limit", l("provider", lim.provider, "limit", lim.limit)); !ok || v != lim.want {
			t.Errorf("relay_lease_limit{provider=%s,limit=%s} present %v, value %v; want %v", lim.provider, lim.limit, ok, v, lim.want)
		}
	}
	checkSeries(t, fams, "start", fixedSeries())
	checkSeries(t, fams, "start", knownSeries("claude-sonnet", "sim-a", "interactive"))
	checkSeries(t, fams, "start", knownSeries("gpt-4o", "sim-o", "batch"))
	// claude-sonnet falls back on gpt-4o: a fallback's answer counts under
	// claude-sonnet with sim-o.
	checkSeries(t, fams, "start", knownSeries("claude-sonnet", "sim-o", "batch"))
}

// The label values that a fixed label set must have at zero from
// start-up. They are written out here, not taken from the code, so that
// a value the relay counts but does not create at start-up fails.
var (
	laneRejectReasons = []string{"full", "expired", "early", "canceled", "closed"}
	fastReasons       = []string{"breaker_open", "cooling_down", "provider_auth", "lane_wait"}
	refusalReasons    = []string{"breaker_open", "cooling_down", "concurrency", "rpm", "input_tpm", "output_tpm", "provider_auth"}
	attemptOutcomes   = []string{"200", "429", "500", "502", "503", "504", "529",
		"timeout", "unreachable", "garbage", "provider_auth", "canceled"}
	tokenDirections  = []string{"input", "output", "cache_read", "cache_write"}
	leaseLimits      = []string{"rpm", "input_tpm", "output_tpm", "max_concurrency"}
	jobStatuses      = []string{"succeeded", "failed", "canceled"}
	callbackOutcomes = []string{"delivered", "retry", "gone", "dead_letter"}
	reloadResults    = []string{"success", "failure"}
	keyActions       = []string{"create", "update", "rotate", "revoke"}
	apiKeyStates     = []string{"active", "revoked"}
	budgetReasons    = []string{"exhausted", "unreachable"}
	repairs          = []string{"jobs", "lanes", "jetstream"}
)

// wantSeries is a series that must exist at zero.
type wantSeries struct {
	name   string
	labels map[string]string
}

// knownSeries are series that must exist at zero for a route served by
// provider, and a lane.
func knownSeries(route, provider, lane string) []wantSeries {
	w := []wantSeries{
		{"relay_requests_total", l("route", route, "provider", provider, "lane", lane, "mode", "direct", "code", "200")},
		{"relay_requests_total", l("route", route, "provider", provider, "lane", lane, "mode", "queued", "code", "200")},
		{"relay_request_duration_seconds", l("route", route, "mode", "direct")},
		{"relay_request_duration_seconds", l("route", route, "mode", "queued")},
		{"relay_time_to_first_token_seconds", l("route", route)},
		{"relay_added_latency_seconds", l("route", route)},
		{"relay_upstream_duration_seconds", l("provider", provider)},
		// key0 is the first key reloadConfig writes; it may use every route.
		{"relay_cost_usd_total", l("key", "key0", "route", route)},
		{"relay_usage_unpriced_total", l("route", route)},
		{"relay_breaker_state", l("provider", provider)},
		{"relay_provider_inflight", l("provider", provider)},
		{"relay_provider_cooling_down", l("provider", provider)},
		{"relay_lease_demand", l("provider", provider)},
		{"relay_lease_age_seconds", l("provider", provider)},
		{"relay_lease_coordinator", l("provider", provider)},
		{"relay_lease_safe_share", l("provider", provider)},
		{"relay_lane_depth", l("lane", lane)},
		{"relay_lane_oldest_wait_seconds", l("lane", lane)},
		{"relay_lane_wait_seconds", l("lane", lane)},
		{"relay_lane_dispatched_total", l("lane", lane)},
		{"relay_key_budget_fail_closed", l("key", "key0")},
	}
	each := func(values []string, f func(v string) wantSeries) {
		for _, v := range values {
			w = append(w, f(v))
		}
	}
	each(laneRejectReasons, func(r string) wantSeries {
		return wantSeries{"relay_lane_rejected_total", l("lane", lane, "reason", r)}
	})
	each(fastReasons, func(r string) wantSeries {
		return wantSeries{"relay_fast_rejections_total", l("route", route, "reason", r)}
	})
	each(refusalReasons, func(r string) wantSeries {
		return wantSeries{"relay_admission_refusals_total", l("provider", provider, "reason", r)}
	})
	each(attemptOutcomes, func(o string) wantSeries {
		return wantSeries{"relay_upstream_attempts_total", l("provider", provider, "outcome", o)}
	})
	each(tokenDirections, func(d string) wantSeries {
		return wantSeries{"relay_tokens_total", l("key", "key0", "route", route, "provider", provider, "direction", d)}
	})
	each(leaseLimits, func(k string) wantSeries { return wantSeries{"relay_lease_share", l("provider", provider, "limit", k)} })
	each(budgetReasons, func(r string) wantSeries {
		return wantSeries{"relay_key_budget_refusals_total", l("key", "key0", "reason", r)}
	})
	return w
}

// fixedSeries are the series of the fixed label sets (not named by the
// configuration) that must exist at zero on a fresh relay.
func fixedSeries() []wantSeries {
	var w []wantSeries
	each := func(values []string, f func(v string) wantSeries) {
		for _, v := range values {
			w = append(w, f(v))
		}
	}
	each(jobStatuses, func(s string) wantSeries { return wantSeries{"relay_jobs_total", l("status", s)} })
	each(callbackOutcomes, func(o string) wantSeries { return wantSeries{"relay_callbacks_total", l("outcome", o)} })
	each(reloadResults, func(r string) wantSeries { return wantSeries{"relay_config_reloads_total", l("result", r)} })
	each(keyActions, func(a string) wantSeries { return wantSeries{"relay_admin_key_changes_total", l("action", a)} })
	each(apiKeyStates, func(s string) wantSeries { return wantSeries{"relay_api_keys", l("state", s)} })
	each(repairs, func(r string) wantSeries { return wantSeries{"relay_job_store_repairs_total", l("what", r)} })
	return w
}

func checkSeries(t *testing.T, fams map[string]*dto.MetricFamily, when string, want []wantSeries) {
	t.Helper()
	for _, w := range want {
		v, ok := series(fams, w.name, w.labels)
		if !ok || v != 0 {
			t.Errorf("after %s: %s%v present %v, value %v; want present at 0", when, w.name, w.labels, ok, v)
		}
	}
}

// metricRow is one row of the table in docs/METRICS.md.
type metricRow struct {
	name, typ string
	labels    []string
}

var rowRE = regexp.MustCompile("^\\| `(relay_[a-z0-9_]+)` \\| (counter|gauge|histogram) \\|([^|]*)\\| .+ \\|$")

// readMetricsTable reads the metric rows of docs/METRICS.md.
func readMetricsTable(t *testing.T) []metricRow {
	t.Helper()
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	var rows []metricRow
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(line, "| `relay_") {
			continue
		}
		m := rowRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("%s: malformed row (want | `name` | counter, gauge or histogram | `label`, ... | meaning |): %s", metricsDoc, line)
		}
		row := metricRow{name: m[1], typ: m[2]}
		for _, lb := range strings.Split(m[3], ",") {
			if lb = strings.Trim(strings.TrimSpace(lb), "`"); lb != "" {
				row.labels = append(row.labels, lb)
			}
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no metric rows", metricsDoc)
	}
	return rows
}

// exportedRow describes a family as its table row should.
func exportedRow(f *dto.MetricFamily) metricRow {
	row := metricRow{name: f.GetName(), typ: strings.ToLower(f.GetType().String())}
	for _, m := range f.GetMetric() {
		for _, lb := range m.GetLabel() {
			if !slices.Contains(row.labels, lb.GetName()) {
				row.labels = append(row.labels, lb.GetName())
			}
		}
	}
	return row
}

func (r metricRow) labelCell() string {
	q := make([]string, len(r.labels))
	for i, lb := range r.labels {
		q[i] = "`" + lb + "`"
	}
	return strings.Join(q, ", ")
}

// metricsTable checks docs/METRICS.md's table against a live relay's
// families: every relay_ name exported has a row with its type and
// labels. (That every row is exported is checked by metricsAtStart.)
func metricsTable(t *testing.T, fams map[string]*dto.MetricFamily) {
	rows := map[string]metricRow{}
	for _, r := range readMetricsTable(t) {
		if _, dup := rows[r.name]; dup {
			t.Errorf("%s: two rows for %s", metricsDoc, r.name)
		}
		rows[r.name] = r
	}
	names := make([]string, 0, len(fams))
	for name := range fams {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasPrefix(name, "relay_") {
			continue
		}
		got := exportedRow(fams[name])
		row, ok := rows[name]
		if !ok {
			t.Errorf("%s is exported but has no row in %s's table; add:\n| `%s` | %s | %s | %s |",
				name, metricsDoc, name, got.typ, got.labelCell(), fams[name].GetHelp())
			continue
		}
		if row.typ != got.typ {
			t.Errorf("%s: the table says %s, the relay exports a %s", name, row.typ, got.typ)
		}
		a, b := slices.Sorted(slices.Values(row.labels)), slices.Sorted(slices.Values(got.labels))
		if !slices.Equal(a, b) {
			t.Errorf("%s: the table lists labels %s, the relay exports %s", name, row.labelCell(), got.labelCell())
		}
	}
}

// deployExprs returns every PromQL expression of the dashboard (panel
// targets and template variable queries) and of the alert rules, keyed
// by where it is.
func deployExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name  string
				Type  string
				Query json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	for _, p := range dash.Panels {
		for i, tg := range p.Targets {
			out[fmt.Sprintf("dashboard panel %q target %d", p.Title, i)] = tg.Expr
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_]+\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("%s: variable %s: %v", dashboardFile, v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("%s: variable %s: query %q is not label_values(<selector>, <label>)", dashboardFile, v.Name, q.Query)
		}
		out["dashboard variable "+v.Name] = m[1]
	}
	for name, expr := range alertExprs(t) {
		out["alert "+name] = expr
	}
	return out
}

// alertRules is the shape of a Prometheus rule file.
type alertRules struct {
	Groups []struct {
		Rules []struct {
			Alert string
			Expr  string
		}
	}
}

// alertExprs returns the alert rules' expressions by alert name.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	out := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// deployMetricNames checks that every metric name in the Grafana
// dashboard and the alert rules is one a live relay exports (histograms as
// their _bucket, _sum and _count series), so that neither refers to a
// metric that does not exist.
func deployMetricNames(t *testing.T, fams map[string]*dto.MetricFamily) {
	exported := map[string]bool{}
	for name, f := range fams {
		exported[name] = f.GetType() != dto.MetricType_HISTOGRAM
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				exported[name+suffix] = true
			}
		}
	}
	exprs := deployExprs(t)
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found in the dashboard and alert rules", len(exprs))
	}
	for where, expr := range exprs {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			if !exported[n] {
				t.Errorf("%s uses %s, which the relay does not export (expression %q)", where, n, expr)
			}
		}
	}
}

// TestAlertRules runs the alert rules' unit tests with promtool, and
// checks that every alert has a test case.
func TestAlertRules(t *testing.T) {
	raw, err := os.ReadFile(alertsTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
			} `yaml:"alert_rule_test"`
		}
	}
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		t.Fatalf("%s: %v", alertsTestFile, err)
	}
	tested := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			tested[a.Alertname] = true
		}
	}
	for name := range alertExprs(t) {
		if !tested[name] {
			t.Errorf("alert %s has no case in %s", name, alertsTestFile)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; .ci/run installs it): alert rules not unit-tested")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "test", "rules", filepath.Base(alertsTestFile))
	cmd.Dir = alertsDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
