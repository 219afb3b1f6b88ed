package configs

import (
	"strings"
	"testing"
)

// listProviders is a providers block of lines 1-9: providers p and q.
const listProviders = `providers:
  - name: p
    type: openai
    base_url: http://127.0.0.1:9999/v1
    api_key: k
  - name: q
    type: anthropic
    base_url: http://127.0.0.1:9998
    api_key: k
`

// listRoutesKeys is a routes and keys block of lines 1-6 (10-15 after
// listProviders).
const listRoutesKeys = `routes:
  - model: m
    targets: [{provider: p}]
keys:
  - name: k1
    key: secret-one
`

// TestListElements: a bad element at the start, in the middle or at the
// end of a list keeps its index, and every element's problems are
// reported in one pass, with its path and line, in file order, once.
func TestListElements(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // every problem, in order
	}{
		// Durations.
		{
			name: "durations: bad first",
			yaml: listProviders + listRoutesKeys + "callbacks:\n  retry_schedule: [banana, 1m, -1s]\n",
			want: []string{
				"callbacks.retry_schedule[0]: invalid duration `banana`; write it like \"30s\", \"10m\" or \"24h\" (line 17)",
				"callbacks.retry_schedule[2]: must be > 0 (line 17)",
			},
		},
		{
			name: "durations: bad in the middle, block list",
			yaml: listProviders + listRoutesKeys + "callbacks:\n  retry_schedule:\n    - 5s\n    - banana\n    - -1m\n    - 200h\n",
			want: []string{
				"callbacks.retry_schedule[1]: invalid duration `banana`; write it like \"30s\", \"10m\" or \"24h\" (line 19)",
				"callbacks.retry_schedule[2]: must be > 0 (line 20)",
				"callbacks.retry_schedule[3]: 200h0m0s must be shorter than jobs.result_ttl (72h0m0s), which keeps the job record between attempts; shorten the schedule or lengthen result_ttl (line 21)",
			},
		},
		{
			name: "durations: bad in the middle, flow list",
			yaml: listProviders + listRoutesKeys + "callbacks:\n  retry_schedule: [5s, banana, 200h]\n",
			want: []string{
				"callbacks.retry_schedule[1]: invalid duration `banana`; write it like \"30s\", \"10m\" or \"24h\" (line 17)",
				"callbacks.retry_schedule[2]: 200h0m0s must be shorter than jobs.result_ttl (72h0m0s), which keeps the job record between attempts; shorten the schedule or lengthen result_ttl (line 17)",
			},
		},
		{
			name: "durations: bad last, after a bad one",
			yaml: listProviders + listRoutesKeys + "callbacks:\n  retry_schedule:\n    - 0s\n    - 1m\n    - [5s]\n",
			want: []string{
				"callbacks.retry_schedule[0]: must be > 0 (line 18)",
				"callbacks.retry_schedule[2]: want a duration such as \"30s\", got a sequence (line 20)",
			},
		},
		{
			name: "durations: an unset variable in the middle is reported once",
			yaml: listProviders + listRoutesKeys + "callbacks:\n  retry_schedule: [5s, \"${RELAY_TEST_UNSET}\", 0s]\n",
			want: []string{
				"callbacks.retry_schedule[1]: environment variable RELAY_TEST_UNSET is not set (line 17)",
				"callbacks.retry_schedule[2]: must be > 0 (line 17)",
			},
		},
		{
			name: "durations: an alias of a bad value is reported where the value is",
			yaml: listProviders + listRoutesKeys + "callbacks:\n  retry_schedule: [&b banana, *b, 200h]\n",
			want: []string{
				"callbacks.retry_schedule[0]: invalid duration `banana`; write it like \"30s\", \"10m\" or \"24h\" (line 17)",
				"callbacks.retry_schedule[2]: 200h0m0s must be shorter than jobs.result_ttl (72h0m0s), which keeps the job record between attempts; shorten the schedule or lengthen result_ttl (line 17)",
			},
		},
		// Strings.
		{
			name: "strings: bad first",
			yaml: listProviders + listRoutesKeys + "    lanes: [{x: 1}, interactive, vip]\n",
			want: []string{
				"keys[0].lanes[0]: cannot unmarshal !!map into string (line 16)",
				`keys[0].lanes[2]: unknown lane "vip" (line 16)`,
			},
		},
		{
			name: "strings: bad in the middle",
			yaml: listProviders + listRoutesKeys + "    lanes: [interactive, {x: 1}, vip]\n",
			want: []string{
				"keys[0].lanes[1]: cannot unmarshal !!map into string (line 16)",
				`keys[0].lanes[2]: unknown lane "vip" (line 16)`,
			},
		},
		{
			name: "strings: bad last",
			yaml: listProviders + listRoutesKeys + "    lanes:\n      - vip\n      - interactive\n      - [batch]\n",
			want: []string{
				`keys[0].lanes[0]: unknown lane "vip" (line 17)`,
				"keys[0].lanes[2]: cannot unmarshal !!seq into string (line 19)",
			},
		},
		{
			name: "strings: an empty element keeps its place",
			yaml: listProviders + listRoutesKeys + "    lanes: [interactive, ~, vip]\n",
			want: []string{
				"keys[0].lanes[1]: empty list element; give it a value or remove it (line 16)",
				`keys[0].lanes[2]: unknown lane "vip" (line 16)`,
			},
		},
		// Lists of mappings.
		{
			name: "providers: bad first",
			yaml: "providers:\n  - oops\n" + listProviders[len("providers:\n"):] + "  - name: r\n    type: gemini\n    base_url: http://127.0.0.1:9997/v1\n    api_key: k\n" + listRoutesKeys,
			want: []string{
				"providers[0]: cannot unmarshal !!str into configs.Provider (line 2)",
				`providers[3].type: must be anthropic or openai, not "gemini" (line 12)`,
			},
		},
		{
			name: "providers: bad in the middle",
			yaml: "providers:\n  - name: p\n    type: openai\n    base_url: http://127.0.0.1:9999/v1\n    api_key: k\n  - [x]\n  - name: q\n    type: openai\n    base_url: ftp://x\n    api_key: k\n" + listRoutesKeys,
			want: []string{
				"providers[1]: cannot unmarshal !!seq into configs.Provider (line 6)",
				"providers[2].base_url: must be an absolute http:// or https:// URL with a host (line 9)",
			},
		},
		{
			name: "providers: bad last",
			yaml: listProviders + "    rpm: -1\n  - 7\n" + listRoutesKeys,
			want: []string{
				"providers[1].rpm: must be >= 0 (line 10)",
				"providers[2]: cannot unmarshal !!int into configs.Provider (line 11)",
			},
		},
		{
			name: "routes: bad first and a target bad in the middle",
			yaml: listProviders + "routes:\n  - [m]\n  - model: m\n    targets: [{provider: p}, 7, {provider: nope}]\n  - model: n\n    targets: [{provider: ghost}]\nkeys:\n  - name: k1\n    key: secret-one\n",
			want: []string{
				"routes[0]: cannot unmarshal !!seq into configs.Route (line 11)",
				"routes[1].targets[1]: cannot unmarshal !!int into configs.Target (line 13)",
				`routes[1].targets[2].provider: unknown provider "nope" (line 13)`,
				`routes[2].targets[0].provider: unknown provider "ghost" (line 15)`,
			},
		},
		{
			name: "keys: bad in the middle and an empty one",
			yaml: listProviders + listRoutesKeys + "  - 5\n  -\n  - name: k2\n    key: secret-one\n",
			want: []string{
				"keys[1]: cannot unmarshal !!int into configs.Key (line 16)",
				"keys[2]: empty list element; give it a value or remove it (line 17)",
				"keys[3].key: same secret as keys[0] (line 19)",
			},
		},
		{
			name: "keys: an unknown field hides no other problem of its key",
			yaml: listProviders + "routes:\n  - model: m\n    targets: [{provider: p}]\nkeys:\n  - name: k1\n    colour: blue\n",
			want: []string{
				"keys[0]: set exactly one of key and key_sha256 (line 14)",
				"keys[0].colour: unknown field (line 15)",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseWithEnv([]byte(tc.yaml), nil)
			probs := Problems(err)
			if len(probs) != len(tc.want) {
				t.Fatalf("ParseWithEnv = %d problems; want %d:\n%v\nwant:\n%s", len(probs), len(tc.want), err, strings.Join(tc.want, "\n"))
			}
			for i, p := range probs {
				if got := p.Error(); !strings.HasPrefix(got, tc.want[i]) {
					t.Errorf("problem %d = %q; want %q", i, got, tc.want[i])
				}
			}
		})
	}
}

// TestSelfMerge: a mapping that merges itself is refused, not a stack
// overflow (FuzzParse found it).
func TestSelfMerge(t *testing.T) {
	cases := []string{
		"providers:\n  - &base\n    <<: *base\n    name: p\n",
		"providers:\n  - &base\n    <<: [*base]\n    name: p\n",
	}
	for _, in := range cases {
		if _, err := ParseWithEnv([]byte(in), nil); err == nil || !strings.Contains(err.Error(), "contains itself") {
			t.Errorf("ParseWithEnv(%q) = %v; want an error saying the anchor contains itself", in, err)
		}
	}
}
