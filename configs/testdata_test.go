package configs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testLookup is the environment the testdata files are parsed with.
func testLookup() func(string) (string, bool) {
	return mapLookup(map[string]string{
		"RELAY_TEST_SET":       "v",
		"RELAY_TEST_SECRETISH": "topsecretvalue1",
	})
}

// mapLookup returns a lookup function over m.
func mapLookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestParseGoodFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("Glob(testdata/good) = %v, %v; want files", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseWithEnv(data, testLookup())
			if err != nil {
				t.Fatalf("ParseWithEnv(%s) error:\n%v", f, err)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate() after ParseWithEnv(%s) = %v; want nil", f, err)
			}
		})
	}
}

func TestParseBadFiles(t *testing.T) {
	// badFiles lists, for every file in testdata/bad, the substrings its
	// error must hold and the ones it must not (secrets).
	badFiles := map[string]struct {
		want    []string
		notWant []string
	}{
		"addresses.yaml": {want: []string{
			"admin_listen: must differ from listen (line 2)",
			"nats.url: seed 1 must be",
			"nats.url: seed 2 must be",
			`nats.listen: must be host:port`,
			"nats.sync: must be",
			"simulator.listen: must be a loopback host:port (",
			"simulator.latency: must be >= 0",
			"simulator.token_interval: must be >= 0",
		}},
		"body-memory.yaml": {want: []string{
			"body_memory_bytes: must be more than max_body_bytes (1048576) (line 2)",
		}},
		// One pass reports the problems of every step: variables, unknown
		// fields, types, durations and validation, each with path and line.
		"all-stages.yaml": {want: []string{
			`listen: must be host:port, such as 127.0.0.1:8080, not "localhost" (line 1)`,
			"shutdown_grace: duration `30` has no unit; write it like \"30s\", \"10m\" or \"24h\" (line 2)",
			"max_body_bytes: cannot unmarshal !!str `lots` into int64 (line 3)",
			"nats.store_dri: unknown field (line 5)",
			`providers[0].type: must be anthropic or openai, not "gemini" (line 8)`,
			"providers[0].api_key: environment variable RELAY_TEST_UNSET is not set (line 10)",
			"providers[0].rpm: must be >= 0 (line 11)",
			"providers[0].timeout: invalid duration `ten minutes`; write it like \"30s\", \"10m\" or \"24h\" (line 12)",
			`routes[0].targets[0].provider: unknown provider "nope" (line 15)`,
			"keys[0].colour: unknown field (line 19)",
			// A bad element in the middle of a list hides nothing
			// after it and shifts no index.
			"keys[0].lanes[1]: cannot unmarshal !!map into string (line 20)",
			`keys[0].lanes[2]: unknown lane "vip" (line 20)`,
			"callbacks.retry_schedule[1]: invalid duration `banana`; write it like \"30s\", \"10m\" or \"24h\" (line 22)",
			"callbacks.retry_schedule[2]: must be > 0 (line 22)",
			"callbacks.retry_schedule[3]: 200h0m0s must be shorter than jobs.result_ttl (72h0m0s)",
		}},
		"bare-duration.yaml": {want: []string{
			"shutdown_grace: duration `30` has no unit; write it like \"30s\", \"10m\" or \"24h\" (line 1)",
			"jobs.result_ttl: invalid duration `ten hours`; write it like \"30s\", \"10m\" or \"24h\" (line 3)",
			"providers[0].timeout: want a duration such as \"30s\", got a sequence (line 9)",
		}},
		"duplicate-key.yaml": {want: []string{`listen: mapping key "listen" already defined at line 1 (line 2)`}},
		"empty.yaml":         {want: []string{"empty document"}},
		"empty-doc.yaml":     {want: []string{"empty document"}},
		"fallback-cycle.yaml": {want: []string{
			"routes[0].fallbacks[1]: a route cannot fall back to itself",
			`routes[0].fallbacks[2]: duplicate fallback "b"`,
			"routes[0].fallbacks: fallback cycle: a -> b -> c -> a",
			"routes[3].fallbacks: fallback cycle: d -> e -> d",
		}},
		"keys.yaml": {
			want: []string{
				"keys[0]: set exactly one of key and key_sha256, not both",
				"keys[1]: set exactly one of key and key_sha256 (line 13)",
				"keys[2].key_sha256: must be 64 hex digits",
				`keys[4].name: duplicate key "k4" (also keys[3])`,
				`keys[5].name: key name "k.6" may only hold`,
				"keys[5].key: must not hold white space",
				`keys[6].lanes[1]: unknown lane "ghost"`,
				`keys[6].default_lane: unknown lane "nowhere"`,
				`keys[6].routes[2]: unknown route "missing"`,
				`keys[7].default_lane: lane "batch" is not in the key's lanes`,
				"keys[9].key: same secret as keys[3]",
			},
			notWant: []string{"hunter2", "dup-secret-value", "tab"},
		},
		"patterns.yaml": {want: []string{
			`routes[1].model: pattern "*-4-6-v1" overlaps routes[0] "claude-*", which is as specific (7 literal characters): both match "claude-4-6-v1"; make one more specific or add an exact route (line 9)`,
			`routes[2].model: pattern "claude-**": a pattern must not have "**" (write one *) (line 11)`,
			`routes[3].model: pattern "**": a pattern must have a literal character (it would match every model)`,
			`routes[6].model: duplicate route "claude-*" (also routes[0])`,
			`keys[0].routes[1]: unknown route "claude-opus-*"`,
		}, notWant: []string{`routes[5].model`, `routes[4].model`}},
		"lanes.yaml": {want: []string{
			"lanes[0].max_depth: must be > 0",
			"lanes[0].max_wait: must be > 0",
			"lanes[0].min_share: must be >= 0 and < 1",
			`lanes[1].name: duplicate lane "a" (also lanes[0])`,
			`lanes[2].name: lane name "b c" may only hold`,
			"lanes[3].name: must not be empty",
			"lanes[3].min_share: must be >= 0 and < 1",
			"lanes[4].min_share: must be >= 0 and < 1",
			"lanes: the min_share values add up to 1.1",
		}},
		"many-problems.yaml": {want: []string{
			`listen: must be host:port, such as 127.0.0.1:8080, not "localhost"`,
			"admin_listen: must be host:port",
			"shutdown_grace: must be >= 0",
			"max_body_bytes: must be > 0",
			"max_json_depth: must be from 16 to 10000",
			`providers[1].type: must be anthropic or openai, not "gemini"`,
			"providers[1].base_url: must be an absolute http:// or https:// URL with a host",
			"providers[1].api_key: must not be empty",
			"providers[1].max_concurrency: must be >= 0",
			"providers[1].rpm: must be >= 0 (line 15)",
			"providers[1].input_tpm: must be >= 0",
			"providers[1].output_tpm: must be >= 0",
			"providers[1].max_idle_conns: must be >= 0",
			"providers[1].timeout: must be > 0",
			"providers[1].breaker.failure_ratio: must be > 0 and <= 1",
			"providers[1].breaker.min_requests: must be >= 1",
			"providers[1].breaker.window: must be > 0",
			"providers[1].breaker.open_for: must be > 0",
			`providers[2].name: duplicate provider "p" (also providers[0])`,
			"providers[2].base_url: must not end in /v1",
			`providers[3].name: provider name "bad.name" may only hold`,
			"providers[3].base_url: must be an absolute",
			`routes[0].targets[1].provider: unknown provider "x"`,
			"routes[0].targets[1].weight: must be >= 0",
			`routes[1].model: duplicate route "m" (also routes[0])`,
			"routes[1].targets: must not be empty",
			`routes[2].model: must not be "*"`,
			`routes[2].fallbacks[0]: unknown route "nope"`,
			`routes[2].fallbacks[1]: unknown route "*"`,
			"routes[3].model: must not be empty",
			"callbacks.max_attempts: must be >= 1",
			"jobs.result_ttl: must be > 0",
			`log.level: must be debug, info, warn or error, not "verbose"`,
		}},
		"missing-env.yaml": {want: []string{
			"providers[0].base_url: environment variable RELAY_TEST_UNSET_URL is not set (line 4)",
			"providers[0].api_key: environment variable RELAY_TEST_UNSET_KEY is not set (line 5)",
			"keys[0].key: environment variable RELAY_TEST_UNSET_KEY is not set (line 11)",
			`keys[1].key: invalid variable name "bad-name"`,
			"keys[1].key: unterminated ${",
		}},
		"multi-doc.yaml":   {want: []string{"more than one YAML document"}},
		"no-lanes.yaml":    {want: []string{"lanes: must not be empty", "providers: must not be empty", "routes: must not be empty", "keys: must not be empty"}},
		"not-mapping.yaml": {want: []string{"the document must be a mapping, not a sequence"}},
		"secrets.yaml": {
			want: []string{
				"providers[0].base_url: must not have a query or fragment",
				"providers[0].api_key: must not hold white space",
				"keys[0].key: must not hold white space",
				"callbacks.signing_secret: must be whsec_ followed by non-empty standard base64",
			},
			notWant: []string{"pa55word", "sk-live", "leaky", "not*base64"},
		},
		"signing-prefix.yaml":  {want: []string{"callbacks.signing_secret: must start with whsec_"}, notWant: []string{"c2VjcmV0"}},
		"simulator-empty.yaml": {want: []string{"simulator.listen: must be a loopback host:port"}},
		"syntax.yaml":          {want: []string{"parse config: yaml: line 1"}},
		"type-error.yaml": {
			want: []string{
				"max_body_bytes: cannot unmarshal !!str `lots` into int64 (line 1)",
				"providers[0].rpm: cannot unmarshal !!str `[redacted]` into int (line 7)",
				"routes: cannot unmarshal !!map into []configs.Route (line 8)",
			},
			notWant: []string{"topsecr"},
		},
		"retry.yaml": {want: []string{
			"retry.max_attempts: must be between 1 and 10 (line 9)",
			"retry.budget_ratio: must be > 0 and <= 1 (line 10)",
			"retry.budget_floor: must be > 0 (line 11)",
		}},
		"unknown-field.yaml": {want: []string{
			"lisen: unknown field (line 1)",
			"providers[0].rpn: unknown field (line 7)",
			"providers[0].breaker.failure_ration: unknown field (line 8)",
			"routes[0].targets[0].wieght: unknown field (line 11)",
		}},
	}

	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := badFiles[filepath.Base(f)]; !ok {
			t.Errorf("%s has no entry in badFiles", f)
		}
	}
	for name, tc := range badFiles {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "bad", name))
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseWithEnv(data, testLookup())
			if err == nil {
				t.Fatalf("ParseWithEnv(%s) = %+v, nil; want an error", name, c)
			}
			if c != nil {
				t.Errorf("ParseWithEnv(%s) returned a config with an error", name)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("ParseWithEnv(%s) error lacks %q; got:\n%s", name, w, msg)
				}
			}
			for _, nw := range tc.notWant {
				if strings.Contains(msg, nw) {
					t.Errorf("ParseWithEnv(%s) error leaks %q; got:\n%s", name, nw, msg)
				}
			}
			// Every problem line is accounted for by a wanted substring,
			// so no unexpected problem slips in.
			for _, line := range strings.Split(msg, "\n") {
				if !slices.ContainsFunc(tc.want, func(w string) bool { return strings.Contains(line, w) }) {
					t.Errorf("ParseWithEnv(%s): unexpected problem %q", name, line)
				}
			}
		})
	}
}

// shippedEnv returns an environment that makes configs/relay.yaml valid.
func shippedEnv() map[string]string {
	return map[string]string{
		"ANTHROPIC_API_KEY":    "sk-ant-test-0000",
		"OPENAI_API_KEY":       "sk-test-0000",
		"RELAY_KEY_TEAM_A":     "relay-team-a-test-key",
		"RELAY_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	}
}

func TestShippedConfigs(t *testing.T) {
	tests := []struct {
		name string
		path string
		env  map[string]string
	}{
		{name: "demo", path: "demo.yaml", env: nil},
		{name: "relay", path: "relay.yaml", env: shippedEnv()},
		{name: "cluster-1", path: "cluster-1.yaml"},
		{name: "cluster-2", path: "cluster-2.yaml"},
		{name: "cluster-3", path: "cluster-3.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadWithEnv(tc.path, mapLookup(tc.env))
			if err != nil {
				t.Fatalf("LoadWithEnv(%s) error:\n%v", tc.path, err)
			}
			if strings.HasPrefix(tc.name, "cluster-") && (c.NATS.Cluster == nil || c.NATS.Replicas != 3) {
				t.Errorf("%s: not an R3 cluster node", tc.path)
			}
			if len(c.Lanes) != 3 || len(c.Keys) == 0 || len(c.Routes) == 0 {
				t.Errorf("LoadWithEnv(%s): %d lanes, %d keys, %d routes; want 3 and some", tc.path, len(c.Lanes), len(c.Keys), len(c.Routes))
			}
		})
	}
}

func TestDemoConfig(t *testing.T) {
	c, err := LoadWithEnv("demo.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Simulator == nil || c.Simulator.Listen != "127.0.0.1:18790" {
		t.Fatalf("demo simulator = %+v; want listen 127.0.0.1:18790", c.Simulator)
	}
	if !c.Simulator.Echo {
		t.Error("demo simulator.echo = false; want true (SDK checks and tool loops need prompt-dependent replies)")
	}
	if c.NATS.Listen != "127.0.0.1:4222" {
		t.Errorf("demo nats.listen = %q; want loopback 127.0.0.1:4222 (for the nats CLI, never a public address)", c.NATS.Listen)
	}
	r, ok := c.Route("claude-sonnet")
	if !ok || r.Targets[0].Provider != "sim-anthropic" || r.Targets[0].Model != "claude-sonnet-4-5" || !slices.Equal(r.Fallbacks, []string{"gpt-4o"}) {
		t.Errorf("demo Route(claude-sonnet) = %+v, %v", r, ok)
	}
	r, ok = c.Route("gpt-4o")
	if !ok || r.Targets[0].Provider != "sim-openai" || r.Targets[0].Model != "gpt-4o" {
		t.Errorf("demo Route(gpt-4o) = %+v, %v", r, ok)
	}
	for _, p := range c.Providers {
		if !strings.HasPrefix(p.BaseURL, "http://127.0.0.1:18790") {
			t.Errorf("demo provider %s base_url = %q; want the simulator", p.Name, p.BaseURL)
		}
	}
}

func TestRelayConfigNeedsEnv(t *testing.T) {
	_, err := LoadWithEnv("relay.yaml", mapLookup(nil))
	if err == nil {
		t.Fatal("LoadWithEnv(relay.yaml, empty env) = nil error; want missing variables")
	}
	var got []string
	for _, p := range Problems(err) {
		got = append(got, p.Msg)
	}
	for _, v := range []string{"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "RELAY_KEY_TEAM_A", "RELAY_WEBHOOK_SECRET"} {
		if !slices.Contains(got, "environment variable "+v+" is not set") {
			t.Errorf("LoadWithEnv(relay.yaml, empty env) problems %q; want one naming %s", got, v)
		}
	}
	if !strings.HasPrefix(err.Error(), "load relay.yaml: ") {
		t.Errorf("LoadWithEnv error = %q; want it to start with the file name", err)
	}
}

// TestProblemsInFileOrder: one pass reports the problems of every step
// sorted by line, so they read like the file.
func TestProblemsInFileOrder(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "bad", "all-stages.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ParseWithEnv(data, testLookup())
	probs := Problems(err)
	wantPaths := []string{"listen", "shutdown_grace", "max_body_bytes", "nats.store_dri",
		"providers[0].type", "providers[0].api_key", "providers[0].rpm", "providers[0].timeout",
		"routes[0].targets[0].provider", "keys[0].colour", "keys[0].lanes[1]", "keys[0].lanes[2]",
		"callbacks.retry_schedule[1]", "callbacks.retry_schedule[2]", "callbacks.retry_schedule[3]"}
	if len(probs) != len(wantPaths) {
		t.Fatalf("ParseWithEnv(all-stages.yaml) = %d problems; want %d:\n%v", len(probs), len(wantPaths), err)
	}
	for i := 1; i < len(probs); i++ {
		if probs[i].Line < probs[i-1].Line {
			t.Errorf("problem %d (line %d) comes after line %d:\n%v", i, probs[i].Line, probs[i-1].Line, err)
		}
	}
	// Problems on one line (a flow list) come in the order of their
	// elements.
	for i, p := range probs {
		if p.Path != wantPaths[i] {
			t.Errorf("problem %d path = %q; want %q", i, p.Path, wantPaths[i])
		}
	}
}

// TestPatternTargets: a pattern route's target without a model keeps it
// empty (the client's model passes through); exact routes' targets take
// the route's model as before.
func TestPatternTargets(t *testing.T) {
	data, err := os.ReadFile("testdata/good/patterns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseWithEnv(data, testLookup())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ route, want string }{
		{"claude-*", ""},
		{"*-mini", "gpt-4o-mini"},
		{"gpt-4o", "gpt-4o"},
		{"claude-sonnet", "claude-sonnet-4-5"},
	}
	for _, tc := range tests {
		r, ok := c.Route(tc.route)
		if !ok || r.Targets[0].Model != tc.want {
			t.Errorf("route %q target model = %+v, %v; want %q", tc.route, r.Targets, ok, tc.want)
		}
	}
}
