package wire

import (
	"bytes"
	"errors"
	"strconv"
)

// FallbackMaxDepth is the nesting limit CheckDepth and DepthScanner apply
// when given 0 or less. The configured limit (max_json_depth, whose
// default lives in configs) is always passed explicitly in the relay; the
// fallback only keeps a zero-valued options struct safe.
const FallbackMaxDepth = 128

// ErrTooDeep is matched (errors.Is) by every error reporting JSON nested
// deeper than the limit.
var ErrTooDeep = errors.New("JSON nested too deep")

// DepthError reports JSON nested deeper than Max. It matches ErrTooDeep and
// is safe to show clients.
type DepthError struct {
	// Max is the limit that was exceeded.
	Max int
}

// Error names the limit.
func (e *DepthError) Error() string {
	return "JSON nested deeper than the limit of " + strconv.Itoa(e.Max) + " levels"
}

// Is reports whether target is ErrTooDeep.
func (e *DepthError) Is(target error) bool { return target == ErrTooDeep }

// CheckDepth returns a *DepthError when b holds arrays or objects nested
// deeper than max levels (max <= 0 means FallbackMaxDepth); "[]" and "{}"
// are one level, a bare scalar is none. It looks only at brackets outside
// strings and does not otherwise validate b, so run it before any parser
// that recurses once per level (gjson.Valid, encoding/json): it is
// iterative, linear in len(b), and allocates nothing.
//
// A closing bracket at depth 0 is ignored rather than counted, so the
// count never falls below zero: no input can hide nesting behind stray
// closers.
func CheckDepth(b []byte, max int) error {
	s := DepthScanner{Max: max}
	return s.Scan(b)
}

// DepthScanner is CheckDepth over a body read in chunks: feed it every
// chunk in order. The zero value (plus Max) is ready to use. It is not
// safe for concurrent use.
type DepthScanner struct {
	// Max is the nesting limit; 0 or less means FallbackMaxDepth.
	Max int

	depth    int
	inString bool
	escaped  bool // the previous byte, inside a string, was an escaping '\'
}

// Scan consumes the next chunk and returns a *DepthError once the nesting
// has gone past Max; it keeps returning it afterwards.
func (s *DepthScanner) Scan(b []byte) error {
	limit := s.Max
	if limit <= 0 {
		limit = FallbackMaxDepth
	}
	if s.depth > limit {
		return &DepthError{Max: limit}
	}
	i := 0
	for i < len(b) {
		if s.inString {
			i = s.skipString(b, i)
			continue
		}
		switch b[i] {
		case '"':
			s.inString = true
		case '[', '{':
			s.depth++
			if s.depth > limit {
				return &DepthError{Max: limit}
			}
		case ']', '}':
			if s.depth > 0 {
				s.depth--
			}
		}
		i++
	}
	return nil
}

// skipString advances past string content from b[i], ending after the
// closing quote (leaving the string) or at len(b) (still inside it).
func (s *DepthScanner) skipString(b []byte, i int) int {
	if s.escaped {
		s.escaped = false
		i++
		if i >= len(b) {
			return i
		}
	}
	for {
		q := bytes.IndexByte(b[i:], '"')
		end := len(b)
		if q >= 0 {
			end = i + q
		}
		// The backslashes right before end decide: an odd run escapes the
		// quote (or, at the chunk's end, the next chunk's first byte).
		n := 0
		for j := end - 1; j >= i && b[j] == '\\'; j-- {
			n++
		}
		if q < 0 {
			s.escaped = n%2 == 1
			return len(b)
		}
		if n%2 == 0 {
			s.inString = false
			return end + 1
		}
		i = end + 1
		if i >= len(b) {
			return i
		}
	}
}
