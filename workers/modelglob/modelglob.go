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
// '*'-patterns (and literal names): it walks the product of the two
// patterns' automata, in time proportional to len(a) times len(b).
func Overlap(a, b string) bool {
	w := len(b) + 1
	seen := make([]bool, (len(a)+1)*w)
	stack := []int{0}
	seen[0] = true
	push := func(i, j int) {
		if k := i*w + j; !seen[k] {
			seen[k] = true
			stack = append(stack, k)
		}
	}
	for len(stack) > 0 {
		k := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		i, j := k/w, k%w
		if i == len(a) && j == len(b) {
			return true
		}
		aStar := i < len(a) && a[i] == '*'
		bStar := j < len(b) && b[j] == '*'
		switch {
		case aStar || bStar:
			if aStar {
				push(i+1, j) // a's '*' takes nothing more
				if j < len(b) && !bStar {
					push(i, j+1) // a's '*' takes b's next character
				}
			}
			if bStar {
				push(i, j+1)
				if i < len(a) && !aStar {
					push(i+1, j)
				}
			}
		case i < len(a) && j < len(b) && a[i] == b[j]:
			push(i+1, j+1)
		}
	}
	return false
}
