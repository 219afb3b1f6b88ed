package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/relaygw/relay/workers/modelglob"
)

// minimalYAML is the smallest valid document; tests append to it.
const minimalYAML = `
providers:
  - name: p
    type: openai
    base_url: http://127.0.0.1:9999/v1
    api_key: k
routes:
  - model: m
    targets: [{provider: p}]
keys:
  - name: k1
    key: secret-one
`

func TestEnvSubstitution(t *testing.T) {
	env := mapLookup(map[string]string{
		"COLON":   "a: b # not a comment",
		"NEWLINE": "line1\nline2: x\n- y",
		"N":       "8",
		"EMPTY":   "",
		"NULLISH": "null",
		"KEY":     "secret-two",
	})
	tests := []struct {
		name    string
		yaml    string // appended to minimalYAML
		check   func(c *Config) (got, want any)
		wantErr []string
	}{
		{
			name:  "colon and hash stay one value",
			yaml:  "admin_listen: ${COLON}\n",
			check: func(c *Config) (any, any) { return c.AdminListen, "a: b # not a comment" },
			// admin_listen is then not host:port; that proves it was read as one value.
			wantErr: []string{`admin_listen: must be host:port, such as 127.0.0.1:8080, not "a: b # not a comment" (line 13)`},
		},
		{
			name:  "colon in a string field",
			yaml:  "nats: {store_dir: '/x/${COLON}'}\n",
			check: func(c *Config) (any, any) { return c.NATS.StoreDir, "/x/a: b # not a comment" },
		},
		{
			name:  "newline and dash stay one value",
			yaml:  "nats:\n  store_dir: ${NEWLINE}\n",
			check: func(c *Config) (any, any) { return c.NATS.StoreDir, "line1\nline2: x\n- y" },
		},
		{
			name:  "double dollar is a literal dollar",
			yaml:  "nats:\n  store_dir: a$$b$$$${N}\n",
			check: func(c *Config) (any, any) { return c.NATS.StoreDir, "a$b$${N}" },
		},
		{
			name:  "lone dollar is kept",
			yaml:  "nats:\n  store_dir: $HOME/x$\n",
			check: func(c *Config) (any, any) { return c.NATS.StoreDir, "$HOME/x$" },
		},
		{
			name:  "several variables in one value",
			yaml:  "nats:\n  store_dir: ${N}/${N}-$${N}\n",
			check: func(c *Config) (any, any) { return c.NATS.StoreDir, "8/8-${N}" },
		},
		{
			name:  "plain scalar is typed by its value",
			yaml:  "max_body_bytes: ${N}\n",
			check: func(c *Config) (any, any) { return c.MaxBodyBytes, int64(8) },
		},
		{
			name:  "empty value stays an empty string",
			yaml:  "admin_listen: ${EMPTY}\n",
			check: func(c *Config) (any, any) { return c.AdminListen, "" },
		},
		{
			name:  "null-looking value stays a string",
			yaml:  "nats:\n  store_dir: ${NULLISH}\n",
			check: func(c *Config) (any, any) { return c.NATS.StoreDir, "null" },
		},
		{
			name:    "quoted scalar stays a string",
			yaml:    "max_body_bytes: \"${N}\"\n",
			wantErr: []string{"max_body_bytes: cannot unmarshal !!str `[redacted]` into int64 (line 13)"},
		},
		{
			name:  "comments are not expanded",
			yaml:  "log: {level: debug} # ${UNSET_IN_COMMENT}\n",
			check: func(c *Config) (any, any) { return c.Log.Level, "debug" },
		},
		{
			name: "keys are not expanded",
			yaml: "${N}: x\n",
			wantErr: []string{
				"${N}: unknown field (line 13)",
			},
		},
		{
			name: "every missing variable at once",
			yaml: "admin_listen: ${MISSING_A}\nnats:\n  store_dir: x${MISSING_B}y${MISSING_A}\n",
			wantErr: []string{
				"admin_listen: environment variable MISSING_A is not set (line 13)",
				"nats.store_dir: environment variable MISSING_B is not set (line 15)",
				"nats.store_dir: environment variable MISSING_A is not set (line 15)",
			},
		},
		{
			name:    "a variable missing twice in one value is reported once",
			yaml:    "admin_listen: ${MISSING_A}:${MISSING_A}\n",
			wantErr: []string{"admin_listen: environment variable MISSING_A is not set (line 13)"},
		},
		{
			name:    "missing variable in a list",
			yaml:    "lanes:\n  - name: ${MISSING_LANE}\n",
			wantErr: []string{"lanes[0].name: environment variable MISSING_LANE is not set (line 14)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWithEnv([]byte(minimalYAML+tc.yaml), env)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ParseWithEnv(%q) = nil error; want %q", tc.yaml, tc.wantErr)
				}
				probs := Problems(err)
				if len(probs) != len(tc.wantErr) {
					t.Errorf("ParseWithEnv(%q) gave %d problems; want %d:\n%v", tc.yaml, len(probs), len(tc.wantErr), err)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("ParseWithEnv(%q) error lacks %q; got:\n%v", tc.yaml, w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWithEnv(%q) error: %v", tc.yaml, err)
			}
			if got, want := tc.check(c); got != want {
				t.Errorf("ParseWithEnv(%q): got %#v; want %#v", tc.yaml, got, want)
			}
		})
	}
}

func TestParseUsesProcessEnv(t *testing.T) {
	t.Setenv("RELAY_CONFIGS_TEST_DIR", "/tmp/relay-test")
	c, err := Parse([]byte(minimalYAML + "nats:\n  store_dir: ${RELAY_CONFIGS_TEST_DIR}\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got, want := c.NATS.StoreDir, "/tmp/relay-test"; got != want {
		t.Errorf("Parse: nats.store_dir = %q; want %q", got, want)
	}
}

func TestParseNilLookup(t *testing.T) {
	_, err := ParseWithEnv([]byte(minimalYAML+"admin_listen: ${X}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "environment variable X is not set") {
		t.Errorf("ParseWithEnv(nil lookup) error = %v; want X not set", err)
	}
}

func TestDefaults(t *testing.T) {
	c, err := ParseWithEnv([]byte(minimalYAML), nil)
	if err != nil {
		t.Fatalf("ParseWithEnv(minimal): %v", err)
	}
	k, p, tg := c.Keys[0], c.Providers[0], c.Routes[0].Targets[0]
	tests := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"admin_listen", c.AdminListen, ""},
		{"shutdown_grace", c.ShutdownGrace.Std(), 30 * time.Second},
		{"max_body_bytes", c.MaxBodyBytes, int64(33554432)},
		{"max_json_depth", c.MaxJSONDepth, 128},
		{"body_memory_bytes", c.BodyMemoryBytes, int64(536870912)},
		{"nats.url", c.NATS.URL, ""},
		{"nats.listen", c.NATS.Listen, ""},
		{"nats.store_dir", c.NATS.StoreDir, "./data/nats"},
		{"lanes", c.Lanes, []Lane{
			{Name: "interactive", MaxDepth: 10000, MaxWait: Duration(30 * time.Second)},
			{Name: "standard", MaxDepth: 10000, MaxWait: Duration(60 * time.Second)},
			{Name: "batch", MaxDepth: 100000, MaxWait: Duration(24 * time.Hour), MinShare: 0.1},
		}},
		{"provider limits", [4]int{p.MaxConcurrency, p.RPM, p.InputTPM, p.OutputTPM}, [4]int{}},
		{"provider timeout", p.Timeout.Std(), 10 * time.Minute},
		{"provider first_byte_timeout", p.FirstByteTimeout.Std(), time.Minute},
		{"provider max_idle_conns", p.MaxIdleConns, 64},
		{"provider breaker", p.Breaker, Breaker{FailureRatio: 0.5, MinRequests: 10, Window: Duration(30 * time.Second), OpenFor: Duration(15 * time.Second)}},
		{"target weight", tg.Weight, 1},
		{"target model", tg.Model, "m"},
		{"key default_lane", k.DefaultLane, "interactive"},
		{"key lanes", k.Lanes, []string{"interactive", "standard", "batch"}},
		{"key routes", k.Routes, []string{"*"}},
		{"callbacks.retry_schedule", c.Callbacks.Schedule(), []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}},
		{"callbacks.max_attempts", c.Callbacks.MaxAttempts, (*int)(nil)},
		{"callbacks.allow_private_networks", c.Callbacks.AllowPrivateNetworks, false},
		{"jobs.result_ttl", c.Jobs.ResultTTL.Std(), 72 * time.Hour},
		{"usage.retention", c.Usage.Retention.Std(), 720 * time.Hour},
		{"usage.counter_retention", c.Usage.CounterRetention.Std(), 9600 * time.Hour},
		{"log.level", c.Log.Level, "info"},
		{"simulator", c.Simulator, (*Simulator)(nil)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("%s = %#v; want %#v", tc.name, tc.got, tc.want)
			}
		})
	}
}

func TestMaxJSONDepth(t *testing.T) {
	tests := []struct {
		depth   string
		want    int
		wantErr bool
	}{
		{"16", 16, false},
		{"10000", 10000, false},
		{"64", 64, false},
		{"15", 0, true},
		{"0", 0, true},
		{"-1", 0, true},
		{"10001", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.depth, func(t *testing.T) {
			c, err := ParseWithEnv([]byte(minimalYAML+"max_json_depth: "+tc.depth+"\n"), nil)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "max_json_depth: must be from 16 to 10000") {
					t.Fatalf("error = %v; want max_json_depth out of range", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.MaxJSONDepth != tc.want {
				t.Errorf("MaxJSONDepth = %d; want %d", c.MaxJSONDepth, tc.want)
			}
		})
	}
}

func TestPartialDefaults(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(c *Config) (got, want any)
	}{
		{
			name:  "body_memory_bytes set is kept",
			yaml:  "max_body_bytes: 1024\nbody_memory_bytes: 4096\n",
			check: func(c *Config) (any, any) { return [2]int64{c.MaxBodyBytes, c.BodyMemoryBytes}, [2]int64{1024, 4096} },
		},
		{
			name:  "nats listen absent means in-process only",
			yaml:  "nats: {store_dir: /d}\n",
			check: func(c *Config) (any, any) { return c.NATS.Listen, "" },
		},
		{
			name:  "nats listen empty means in-process only",
			yaml:  "nats: {listen: \"\"}\n",
			check: func(c *Config) (any, any) { return c.NATS.Listen, "" },
		},
		{
			name:  "nats listen null means in-process only",
			yaml:  "nats: {listen: }\n",
			check: func(c *Config) (any, any) { return c.NATS.Listen, "" },
		},
		{
			name: "lane fields default one by one",
			yaml: "lanes: [{name: a, max_wait: 5s}, {name: b, max_depth: 3, min_share: 0.2}]\n",
			check: func(c *Config) (any, any) {
				return c.Lanes, []Lane{{"a", 10000, Duration(5 * time.Second), 0}, {"b", 3, Duration(time.Minute), 0.2}}
			},
		},
		{
			name: "breaker fields default one by one",
			yaml: "providers:\n  - {name: p, type: openai, base_url: 'http://h', api_key: k, breaker: {failure_ratio: 0.9, window: 1m}}\n",
			check: func(c *Config) (any, any) {
				return c.Providers[0].Breaker, Breaker{FailureRatio: 0.9, MinRequests: 10, Window: Duration(time.Minute), OpenFor: Duration(15 * time.Second)}
			},
		},
		{
			name: "simulator block defaults",
			yaml: "simulator: {listen: '[::1]:1'}\n",
			check: func(c *Config) (any, any) {
				return *c.Simulator, Simulator{"[::1]:1", Duration(20 * time.Millisecond), Duration(10 * time.Millisecond), false}
			},
		},
		{
			name:  "simulator echo",
			yaml:  "simulator: {listen: '127.0.0.1:1', echo: true}\n",
			check: func(c *Config) (any, any) { return c.Simulator.Echo, true },
		},
		{
			name:  "explicit zero simulator latency is kept",
			yaml:  "simulator: {listen: '127.0.0.2:1', latency: 0s, token_interval: 0s}\n",
			check: func(c *Config) (any, any) { return *c.Simulator, Simulator{Listen: "127.0.0.2:1"} },
		},
		{
			name:  "key default lane is the first lane the key may use",
			yaml:  "keys: [{name: k, key: s, lanes: [batch, standard]}]\n",
			check: func(c *Config) (any, any) { return c.Keys[0].DefaultLane, "standard" },
		},
		{
			name: "target weight and model kept when set",
			yaml: "routes: [{model: m, targets: [{provider: p, model: up, weight: 7}]}]\n",
			check: func(c *Config) (any, any) {
				return c.Routes[0].Targets[0], Target{Provider: "p", Model: "up", Weight: 7}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWithEnv([]byte(overlay(t, minimalYAML, tc.yaml)), nil)
			if err != nil {
				t.Fatalf("ParseWithEnv(%q): %v", tc.yaml, err)
			}
			if got, want := tc.check(c); !reflect.DeepEqual(got, want) {
				t.Errorf("ParseWithEnv(%q): got %#v; want %#v", tc.yaml, got, want)
			}
		})
	}
}

// overlay returns base with each top-level section of extra replacing the
// section of the same name.
func overlay(t *testing.T, base, extra string) string {
	t.Helper()
	var b, e yaml.Node
	if err := yaml.Unmarshal([]byte(base), &b); err != nil {
		t.Fatalf("overlay base: %v", err)
	}
	if err := yaml.Unmarshal([]byte(extra), &e); err != nil {
		t.Fatalf("overlay extra: %v", err)
	}
	bm, em := b.Content[0], e.Content[0]
	for i := 0; i < len(em.Content); i += 2 {
		replaced := false
		for j := 0; j < len(bm.Content); j += 2 {
			if bm.Content[j].Value == em.Content[i].Value {
				bm.Content[j+1] = em.Content[i+1]
				replaced = true
			}
		}
		if !replaced {
			bm.Content = append(bm.Content, em.Content[i], em.Content[i+1])
		}
	}
	out, err := yaml.Marshal(&b)
	if err != nil {
		t.Fatalf("overlay: %v", err)
	}
	return string(out)
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "30s", want: 30 * time.Second},
		{in: "10m", want: 10 * time.Minute},
		{in: "24h", want: 24 * time.Hour},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "0s", want: 0},
		{in: "-5s", want: -5 * time.Second},
		{in: "30", wantErr: "line 1: duration `30` has no unit; write it like \"30s\""},
		{in: "0", wantErr: "has no unit"},
		{in: "1.5", wantErr: "has no unit"},
		{in: "'30'", wantErr: "has no unit"},
		{in: "3 days", wantErr: "invalid duration `3 days`"},
		{in: "[1s]", wantErr: "want a duration such as \"30s\", got a sequence"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			var d Duration
			err := yaml.Unmarshal([]byte(tc.in), &d)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("Unmarshal(%q) error = %v; want %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || d.Std() != tc.want {
				t.Fatalf("Unmarshal(%q) = %v, %v; want %v", tc.in, d, err, tc.want)
			}
			out, err := yaml.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var back Duration
			if err := yaml.Unmarshal(out, &back); err != nil || back != d {
				t.Errorf("round trip of %v via %q = %v, %v", d, out, back, err)
			}
		})
	}
}

// validConfig returns a valid configuration built in code, without the
// derived defaults that Parse fills in.
func validConfig() *Config {
	c := Default()
	c.Providers = []Provider{{
		Name: "p", Type: "anthropic", BaseURL: "https://api.anthropic.com", APIKey: "k",
		Timeout: Duration(time.Minute), FirstByteTimeout: Duration(time.Minute), Breaker: DefaultBreaker(),
	}}
	c.Routes = []Route{{Model: "m", Targets: []Target{{Provider: "p"}}}}
	c.Keys = []Key{{Name: "k", Key: "s"}}
	return c
}

func TestValidateCodeBuiltConfig(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Errorf("validConfig().Validate() = %v; want nil", err)
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	c := validConfig()
	c.Listen = "nope"
	c.Providers[0].RPM = -1
	c.Providers[0].APIKey = "sk-secret value"
	c.Routes[0].Targets = append(c.Routes[0].Targets, Target{Provider: "x"})
	c.Keys = append(c.Keys, Key{Name: "k", Key: "s"})
	c.Log.Level = "trace"
	err := c.Validate()
	want := []Problem{
		{Path: "listen", Msg: `must be host:port, such as 127.0.0.1:8080, not "nope"`},
		{Path: "providers[0].api_key", Msg: "must not hold white space or control characters (check for a trailing newline)"},
		{Path: "providers[0].rpm", Msg: "must be >= 0"},
		{Path: "routes[0].targets[1].provider", Msg: `unknown provider "x"`},
		{Path: "keys[1].name", Msg: `duplicate key "k" (also keys[0])`},
		{Path: "keys[1].key", Msg: "same secret as keys[0]"},
		{Path: "log.level", Msg: `must be debug, info, warn or error, not "trace"`},
	}
	if got := Problems(err); !slices.Equal(got, want) {
		t.Errorf("Validate() problems =\n%q\nwant\n%q", got, want)
	}
	if strings.Contains(err.Error(), "sk-secret") {
		t.Errorf("Validate() error leaks the API key: %v", err)
	}
	var p Problem
	if !errors.As(err, &p) || p.Path != "listen" {
		t.Errorf("errors.As(Validate(), &Problem) = %+v; want the listen problem", p)
	}
}

// TestFirstByteTimeout checks the default of first_byte_timeout (1m, or
// timeout when that is shorter, also through merge keys) and its bounds.
func TestFirstByteTimeout(t *testing.T) {
	const head = `
routes:
  - model: m
    targets: [{provider: p}]
keys:
  - name: k1
    key: secret-one
providers:
`
	const prov = `  - name: p
    type: openai
    base_url: http://127.0.0.1:9999/v1
    api_key: k
`
	tests := []struct {
		name    string
		extra   string // appended to the provider entry
		want    time.Duration
		problem string // "" = valid
	}{
		{name: "left out", want: time.Minute},
		{name: "left out, short timeout", extra: "    timeout: 20s\n", want: 20 * time.Second},
		{name: "set", extra: "    first_byte_timeout: 5s\n", want: 5 * time.Second},
		{name: "equal to timeout", extra: "    timeout: 5s\n    first_byte_timeout: 5s\n", want: 5 * time.Second},
		{name: "longer than timeout", extra: "    timeout: 5s\n    first_byte_timeout: 6s\n",
			problem: "providers[0].first_byte_timeout: must be <= timeout (5s)"},
		{name: "zero", extra: "    first_byte_timeout: 0s\n", problem: "providers[0].first_byte_timeout: must be > 0"},
		{name: "negative", extra: "    first_byte_timeout: -1s\n",
			problem: "providers[0].first_byte_timeout: must be > 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWithEnv([]byte(head+prov+tc.extra), nil)
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("ParseWithEnv = %v; want a problem %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWithEnv: %v", err)
			}
			if got := c.Providers[0].FirstByteTimeout.Std(); got != tc.want {
				t.Errorf("first_byte_timeout = %v; want %v", got, tc.want)
			}
		})
	}

	// A merge key brings the anchor's value; the entry's own timeout does
	// not shorten it.
	merged := head + `  - &base
    name: a
    type: openai
    base_url: http://127.0.0.1:9999/v1
    api_key: k
    first_byte_timeout: 3s
  - <<: *base
    name: p
    timeout: 30s
  - <<: *base
    name: c
    first_byte_timeout: 2s
`
	c, err := ParseWithEnv([]byte(merged), nil)
	if err != nil {
		t.Fatalf("ParseWithEnv(merged): %v", err)
	}
	for i, want := range []time.Duration{3 * time.Second, 3 * time.Second, 2 * time.Second} {
		if got := c.Providers[i].FirstByteTimeout.Std(); got != want {
			t.Errorf("providers[%d].first_byte_timeout = %v; want %v", i, got, want)
		}
	}
}

func TestProblemError(t *testing.T) {
	tests := []struct {
		name string
		p    Problem
		want string
	}{
		{"path and line", Problem{"providers[1].rpm", "must be >= 0", 12}, "providers[1].rpm: must be >= 0 (line 12)"},
		{"path only", Problem{Path: "providers[1].rpm", Msg: "must be >= 0"}, "providers[1].rpm: must be >= 0"},
		{"line only", Problem{Msg: "cannot unmarshal", Line: 3}, "line 3: cannot unmarshal"},
		{"message only", Problem{Msg: "bad"}, "bad"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Error(); got != tc.want {
				t.Errorf("%+v.Error() = %q; want %q", tc.p, got, tc.want)
			}
		})
	}
}

func TestProblemsOfOtherErrors(t *testing.T) {
	if got := Problems(errors.New("x")); got != nil {
		t.Errorf("Problems(plain error) = %v; want nil", got)
	}
	if got := Problems(nil); got != nil {
		t.Errorf("Problems(nil) = %v; want nil", got)
	}
}

func TestSecretSHA256(t *testing.T) {
	sum := sha256.Sum256([]byte("s3cret"))
	hexSum := hex.EncodeToString(sum[:])
	tests := []struct {
		name    string
		key     Key
		want    [32]byte
		wantErr string
	}{
		{name: "key", key: Key{Name: "a", Key: "s3cret"}, want: sum},
		{name: "hash", key: Key{Name: "a", KeySHA256: hexSum}, want: sum},
		{name: "upper-case hash", key: Key{Name: "a", KeySHA256: strings.ToUpper(hexSum)}, want: sum},
		{name: "both", key: Key{Name: "a", Key: "s3cret", KeySHA256: hexSum}, wantErr: "both key and key_sha256"},
		{name: "neither", key: Key{Name: "a"}, wantErr: "neither"},
		{name: "short hash", key: Key{Name: "a", KeySHA256: "abcd"}, wantErr: "64 hex digits"},
		{name: "not hex", key: Key{Name: "a", KeySHA256: strings.Repeat("g", 64)}, wantErr: "64 hex digits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.key.SecretSHA256()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("SecretSHA256() error = %v; want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("SecretSHA256() error leaks the key: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("SecretSHA256() = %x, %v; want %x", got, err, tc.want)
			}
		})
	}
}

func TestLookups(t *testing.T) {
	c, err := ParseWithEnv([]byte(minimalYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		lookup func() (string, bool)
		want   string
		wantOK bool
	}{
		{"lane found", func() (string, bool) { l, ok := c.Lane("batch"); return l.Name, ok }, "batch", true},
		{"lane missing", func() (string, bool) { l, ok := c.Lane("nope"); return l.Name, ok }, "", false},
		{"provider found", func() (string, bool) { p, ok := c.Provider("p"); return p.Name, ok }, "p", true},
		{"provider missing", func() (string, bool) { p, ok := c.Provider("q"); return p.Name, ok }, "", false},
		{"route found", func() (string, bool) { r, ok := c.Route("m"); return r.Model, ok }, "m", true},
		{"route missing", func() (string, bool) { r, ok := c.Route("x"); return r.Model, ok }, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, ok := tc.lookup(); got != tc.want || ok != tc.wantOK {
				t.Errorf("got %q, %v; want %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
	r, _ := c.Route("m")
	r.Targets[0].Provider = "changed"
	if again, _ := c.Route("m"); again.Targets[0].Provider != "p" {
		t.Errorf("Route returned a shared Targets slice")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v; want os.ErrNotExist", err)
	}
}

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	files = append(files, "demo.yaml", "relay.yaml")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	f.Add([]byte(minimalYAML))
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("providers:\n  - &base\n    <<: *base\n"))
	f.Add([]byte("{}"))
	env := shippedEnv()
	env["RELAY_TEST_SET"] = "v"
	lookup := mapLookup(env)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseWithEnv(data, lookup)
		if err != nil {
			if c != nil {
				t.Fatalf("ParseWithEnv returned a config and an error")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseWithEnv accepted a config that Validate rejects: %v", err)
		}
		for _, r := range c.Routes {
			for _, tg := range r.Targets {
				// A pattern route's target without a model passes the
				// client's model through (issue 16).
				if _, ok := c.Provider(tg.Provider); !ok || tg.Weight < 1 || (tg.Model == "" && !modelglob.IsPattern(r.Model)) {
					t.Fatalf("route %q target %+v is not usable", r.Model, tg)
				}
			}
		}
		for _, k := range c.Keys {
			if _, err := k.SecretSHA256(); err != nil {
				t.Fatalf("key %q: %v", k.Name, err)
			}
			if _, ok := c.Lane(k.DefaultLane); !ok || len(k.Lanes) == 0 || len(k.Routes) == 0 {
				t.Fatalf("key %q has unusable defaults: %+v", k.Name, k)
			}
		}
	})
}

func TestTypeErrorNamesSchemaType(t *testing.T) {
	_, err := ParseWithEnv([]byte(minimalYAML+"lanes: [[x]]\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "lanes[0]: cannot unmarshal !!seq into configs.Lane (line 13)") {
		t.Errorf("ParseWithEnv(lanes: [[x]]) error = %v; want it to name configs.Lane", err)
	}
}

func TestSigningSecretRotation(t *testing.T) {
	base := `providers: [{name: p, type: anthropic, base_url: "https://api.anthropic.com", api_key: k}]
routes: [{model: m, targets: [{provider: p}]}]
keys: [{name: k, key: secret-key-1}]
callbacks: {signing_secret: "%s"}
`
	cases := []struct {
		name    string
		secrets string
		want    int
		wantErr bool
	}{
		{"one", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1, false},
		{"two for rotation", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_cmVsYXk=", 2, false},
		{"second malformed", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw nope", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWithEnv([]byte(fmt.Sprintf(base, tc.secrets)), nil)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "callbacks.signing_secret") {
					t.Fatalf("ParseWithEnv = %v; want a callbacks.signing_secret problem", err)
				}
				if strings.Contains(err.Error(), "MfKQ9r8") {
					t.Errorf("error leaks a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(c.Callbacks.SigningSecrets()); got != tc.want {
				t.Errorf("SigningSecrets() = %d secrets; want %d", got, tc.want)
			}
		})
	}
}
