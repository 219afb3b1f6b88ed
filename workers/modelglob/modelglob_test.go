package modelglob_test

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/relaygw/relay/workers/modelglob"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, id string
		want        bool
	}{
		{"claude-*", "claude-opus-4-6", true},
		{"claude-*", "claude-", true},
		{"claude-*", "claude", false},
		{"claude-*", "Claude-opus", false},
		{"gpt-4o*", "gpt-4o", true},
		{"gpt-4o*", "gpt-4o-mini-2024-07-18", true},
		{"gpt-4o*", "gpt-4", false},
		{"*-mini", "gpt-4o-mini", true},
		{"*-mini", "gpt-4o-mini-x", false},
		{"anthropic/*", "anthropic/claude-3.5-sonnet", true},
		{"*/claude-*", "openrouter/anthropic/claude-3.5", true},
		{"llama3:*", "llama3:8b", true},
		{"llama3:*", "llama3.1:8b", false},
		{"claude-*-4-*", "claude-opus-4-6", true},
		{"claude-*-4-*", "claude-opus-3-5", false},
		{"a*b*c", "aXXbYYbZZc", true},
		{"a*b*c", "aXXbYYbZZ", false},
		{"gpt-?", "gpt-?", true}, // '?' is literal
		{"gpt-?", "gpt-4", false},
		{"[ab]*", "[ab]x", true}, // '[' is literal
		{"[ab]*", "a", false},
		{"ü*", "uber", false},
		{"üb*", "über", true},
		{"exact", "exact", true},
		{"exact", "exact2", false},
	}
	for _, tc := range tests {
		if got := modelglob.Match(tc.pattern, tc.id); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.id, got, tc.want)
		}
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		pattern string
		ok      bool
	}{
		{"claude-*", true},
		{"*-mini", true},
		{"a*b*c", true},
		{"", false},
		{"*", false},
		{"***", false},
		{"claude-**", false},
		{strings.Repeat("a", 256) + "*", false},
		{"\xff*", false},
	}
	for _, tc := range tests {
		if err := modelglob.Check(tc.pattern); (err == nil) != tc.ok {
			t.Errorf("Check(%q) = %v, want ok %v", tc.pattern, err, tc.ok)
		}
	}
}

func TestSpecificity(t *testing.T) {
	tests := []struct {
		pattern string
		want    int
	}{
		{"claude-*", 7}, {"claude-opus-*", 12}, {"*-mini", 5}, {"a*b*c", 3}, {"üb*", 2}, {"gpt-4o", 6},
	}
	for _, tc := range tests {
		if got := modelglob.Specificity(tc.pattern); got != tc.want {
			t.Errorf("Specificity(%q) = %d, want %d", tc.pattern, got, tc.want)
		}
	}
}

func TestOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"claude-*", "*-4-6", true},         // claude-opus-4-6
		{"claude-*", "gpt-*", false},        // different first letter
		{"gpt-4o*", "*-mini", true},         // gpt-4o-mini
		{"a*", "*b", true},                  // ab
		{"a*c", "b*", false},                // a… vs b…
		{"*x", "*y", false},                 // last character differs
		{"a*b*c", "*bc*", true},             // abc
		{"claude-3*", "claude-4*", false},   // differ at a literal both have
		{"claude-*", "claude-sonnet", true}, // a literal name is a pattern without '*'
		{"claude-*", "gpt-4o", false},
		{"ab", "ab", true},
		{"ab", "abc", false},
	}
	for _, tc := range tests {
		if got := modelglob.Overlap(tc.a, tc.b); got != tc.want {
			t.Errorf("Overlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := modelglob.Overlap(tc.b, tc.a); got != tc.want {
			t.Errorf("Overlap(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
		if id, ok := modelglob.Witness(tc.a, tc.b); ok && (!modelglob.Match(tc.a, id) || !modelglob.Match(tc.b, id)) {
			t.Errorf("Witness(%q, %q) = %q, which does not match both", tc.a, tc.b, id)
		}
	}
}

// TestAgainstRegexp checks Match and Overlap on random patterns over a
// small alphabet against regexp and against every id up to the length a
// witness needs (the sum of the patterns' literal characters).
func TestAgainstRegexp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "ab*"
	gen := func() string {
		n := 1 + rng.IntN(4)
		var b strings.Builder
		for range n {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	ids := []string{""}
	for l := 1; l <= 8; l++ { // a witness has at most the 8 literals of two patterns
		for _, id := range ids {
			if len(id) == l-1 {
				ids = append(ids, id+"a", id+"b")
			}
		}
	}
	for range 400 {
		a, b := gen(), gen()
		ra := toRegexp(a)
		rb := toRegexp(b)
		witness := false
		for _, id := range ids {
			ma, mb := modelglob.Match(a, id), modelglob.Match(b, id)
			if ma != ra.MatchString(id) {
				t.Fatalf("Match(%q, %q) = %v, regexp says %v", a, id, ma, !ma)
			}
			if mb != rb.MatchString(id) {
				t.Fatalf("Match(%q, %q) = %v, regexp says %v", b, id, mb, !mb)
			}
			witness = witness || (ma && mb)
		}
		if got := modelglob.Overlap(a, b); got != witness {
			t.Fatalf("Overlap(%q, %q) = %v, brute force says %v", a, b, got, witness)
		}
		if id, ok := modelglob.Witness(a, b); ok && (!ra.MatchString(id) || !rb.MatchString(id)) {
			t.Fatalf("Witness(%q, %q) = %q, which does not match both", a, b, id)
		}
	}
}

func toRegexp(p string) *regexp.Regexp {
	parts := strings.Split(p, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile("(?s)^" + strings.Join(parts, ".*") + "$")
}

// FuzzMatch checks Match against regexp on arbitrary patterns and ids.
func FuzzMatch(f *testing.F) {
	f.Add("claude-*", "claude-opus-4-6")
	f.Add("a*b*c", "aXbYc")
	f.Fuzz(func(t *testing.T, p, id string) {
		if len(p) > 64 || len(id) > 256 || !utf8.ValidString(p) || !utf8.ValidString(id) {
			return
		}
		if got, want := modelglob.Match(p, id), toRegexp(p).MatchString(id); got != want {
			t.Fatalf("Match(%q, %q) = %v, regexp says %v", p, id, got, want)
		}
	})
}
