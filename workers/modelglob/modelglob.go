// Package modelglob matches model ids against route patterns.
//
// A pattern is a model name with at least one '*'. A '*' stands for any
// run of characters, none included; every other character stands for
// itself, '/', '.', ':', '?', '[' and '\' included, since model ids use
// them ("anthropic/claude-3.5", "llama3:8b"). Matching is case-sensitive,
// as upstreams treat model ids. Unlike path.Match, '*' crosses '/'.
//
// Between patterns that match one id, the one with more literal (non-'*')
// characters is the more specific; Overlap tells whether two patterns can
// match one id at all, so a configuration can refuse two equally specific
// patterns that would have to be told apart by file order.
package modelglob

import (
	"errors"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxLen bounds the length of a pattern in bytes, which keeps Overlap's
// work (the product of two patterns' lengths) small.
const MaxLen = 256

// IsPattern reports whether s is a pattern: whether it has a '*'.
func IsPattern(s string) bool { return strings.IndexByte(s, '*') >= 0 }

// Check reports why pattern cannot be a route's pattern: it is empty or
// longer than MaxLen, has no literal character (it would match every
// model), or has two '*' in a row (they mean what one does).
func Check(pattern string) error {
	switch {
	case pattern == "":
		return errors.New("must not be empty")
	case len(pattern) > MaxLen:
		return errors.New("a pattern must be at most 256 bytes long")
	case strings.Trim(pattern, "*") == "":
		return errors.New("a pattern must have a literal character (it would match every model)")
	case strings.Contains(pattern, "**"):
		return errors.New("a pattern must not have \"**\" (write one *)")
	case !utf8.ValidString(pattern):
		return errors.New("must be valid UTF-8")
	}
	return nil
}

// Match reports whether id matches pattern. It runs in time linear in
// len(id) times the number of '*' in pattern, at worst, and allocates
// nothing.
func Match(pattern, id string) bool {
	px, ix := 0, 0
	starPx, starIx := -1, 0
	for px < len(pattern) || ix < len(id) {
		if px < len(pattern) {
			c := pattern[px]
			if c == '*' {
				starPx, starIx = px, ix
				px++
				continue
			}
			if ix < len(id) && id[ix] == c {
				px++
				ix++
				continue
			}
		}
		// Mismatch: let the last '*' take one more character, if any.
		if starPx < 0 || starIx >= len(id) {
			return false
		}
		starIx++
		px, ix = starPx+1, starIx
	}
	return true
}

// Specificity is the number of literal characters of pattern: between
// patterns that match one id, the higher wins.
func Specificity(pattern string) int {
	return utf8.RuneCountInString(pattern) - strings.Count(pattern, "*")
}

// Overlap reports whether some id matches both a and b. It is exact for
// '*'-patterns (and literal names).
func Overlap(a, b string) bool {
	_, ok := Witness(a, b)
	return ok
}

// Witness returns the shortest id, found first, that matches both a and
// b, and whether there is one. It walks the product of the two patterns'
// automata breadth first, in time and space proportional to len(a) times
// len(b).
func Witness(a, b string) (string, bool) {
	w := len(b) + 1
	type step struct {
		from int
		c    int // the character the step takes, or -1
	}
	prev := make([]step, (len(a)+1)*w)
	seen := make([]bool, len(prev))
	queue := []int{0}
	seen[0] = true
	visit := func(from, i, j, c int) {
		if k := i*w + j; !seen[k] {
			seen[k], prev[k] = true, step{from: from, c: c}
			queue = append(queue, k)
		}
	}
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		i, j := k/w, k%w
		if i == len(a) && j == len(b) {
			var rev []byte // the characters taken on the way to k
			for ; k != 0; k = prev[k].from {
				if c := prev[k].c; c >= 0 {
					rev = append(rev, byte(c))
				}
			}
			slices.Reverse(rev)
			return string(rev), true
		}
		aStar := i < len(a) && a[i] == '*'
		bStar := j < len(b) && b[j] == '*'
		if aStar {
			visit(k, i+1, j, -1) // a's '*' takes nothing more
			if j < len(b) && !bStar {
				visit(k, i, j+1, int(b[j])) // a's '*' takes b's next character
			}
		}
		if bStar {
			visit(k, i, j+1, -1)
			if i < len(a) && !aStar {
				visit(k, i+1, j, int(a[i]))
			}
		}
		if !aStar && !bStar && i < len(a) && j < len(b) && a[i] == b[j] {
			visit(k, i+1, j+1, int(a[i]))
		}
	}
	return "", false
}
