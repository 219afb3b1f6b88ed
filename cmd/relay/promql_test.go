package main

// A careful extraction of the metric names a PromQL expression selects,
// for checking the shipped dashboard and alert rules against a relay's
// /metrics. (The Prometheus module's own parser would bring a 35 MB
// module and its dependency graph into go.sum for one test.)

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// labelListKeywords are followed by a parenthesised list of label names.
var labelListKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true}

// operatorKeywords are PromQL words that are neither metrics nor functions.
var operatorKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true,
	"offset": true, "atan2": true, "inf": true, "nan": true}

// aggregators may put their by or without clause before their
// parentheses: sum by (route) (x).
var aggregators = map[string]bool{"sum": true, "min": true, "max": true, "avg": true, "group": true,
	"stddev": true, "stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true}

// metricNames returns the metric names expr selects, in order of
// appearance, without repeats. It skips strings, label matchers ({...}),
// ranges and subqueries ([...]), numbers and durations, comments,
// Grafana variables ($name), function and aggregation names (an
// identifier followed by "("), operator keywords, and the label lists of
// by, without, on, ignoring, group_left and group_right.
func metricNames(expr string) ([]string, error) {
	var names []string
	s := &promScanner{src: expr}
	for s.i < len(s.src) {
		c := s.src[s.i]
		switch {
		case c == '#':
			s.skipTo('\n')
		case c == '"' || c == '\'' || c == '`':
			if err := s.skipString(); err != nil {
				return nil, err
			}
		case c == '{':
			if strings.Contains(s.src[s.i:], "__name__") {
				return nil, fmt.Errorf("%q: select metrics by name, not with __name__", expr)
			}
			if err := s.skipGroup('{', '}'); err != nil {
				return nil, err
			}
		case c == '[':
			if err := s.skipGroup('[', ']'); err != nil {
				return nil, err
			}
		case isDigit(c) || c == '.' && s.i+1 < len(s.src) && isDigit(s.src[s.i+1]):
			s.skipWord()
		case c == '$':
			s.i++
			s.skipWord()
		case isIdentStart(c):
			word := s.word()
			next := s.peekNonSpace()
			switch lw := strings.ToLower(word); {
			case labelListKeywords[lw]:
				if next == '(' {
					s.skipSpace()
					if err := s.skipGroup('(', ')'); err != nil {
						return nil, err
					}
				}
			case operatorKeywords[lw], next == '(', aggregators[lw] && s.nextWordIn(labelListKeywords):
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
		default:
			s.i++
		}
	}
	return names, nil
}

// promScanner walks a PromQL expression byte by byte.
type promScanner struct {
	src string
	i   int
}

func (s *promScanner) skipTo(b byte) {
	for s.i < len(s.src) && s.src[s.i] != b {
		s.i++
	}
}

func (s *promScanner) skipSpace() {
	for s.i < len(s.src) && strings.IndexByte(" \t\r\n", s.src[s.i]) >= 0 {
		s.i++
	}
}

// nextWordIn reports whether the word after the spaces at s.i is in set.
func (s *promScanner) nextWordIn(set map[string]bool) bool {
	j := s.i
	for j < len(s.src) && strings.IndexByte(" \t\r\n", s.src[j]) >= 0 {
		j++
	}
	k := j
	for k < len(s.src) && (isIdentStart(s.src[k]) || isDigit(s.src[k])) {
		k++
	}
	return set[strings.ToLower(s.src[j:k])]
}

func (s *promScanner) peekNonSpace() byte {
	j := s.i
	for j < len(s.src) && strings.IndexByte(" \t\r\n", s.src[j]) >= 0 {
		j++
	}
	if j == len(s.src) {
		return 0
	}
	return s.src[j]
}

// skipString skips the string starting at s.i (backslash escapes in "
// and ' strings, none in raw ` strings).
func (s *promScanner) skipString() error {
	q := s.src[s.i]
	start := s.i
	for s.i++; s.i < len(s.src); s.i++ {
		switch c := s.src[s.i]; {
		case c == '\\' && q != '`':
			s.i++
		case c == q:
			s.i++
			return nil
		}
	}
	return fmt.Errorf("%q: unterminated string at %d", s.src, start)
}

// skipGroup skips from the open byte at s.i to its matching close,
// strings inside included.
func (s *promScanner) skipGroup(open, close byte) error {
	start, depth := s.i, 0
	for s.i < len(s.src) {
		switch c := s.src[s.i]; c {
		case '"', '\'', '`':
			if err := s.skipString(); err != nil {
				return err
			}
			continue
		case open:
			depth++
		case close:
			depth--
			if depth == 0 {
				s.i++
				return nil
			}
		}
		s.i++
	}
	return fmt.Errorf("%q: unclosed %c at %d", s.src, open, start)
}

func (s *promScanner) word() string {
	start := s.i
	s.skipWord()
	return s.src[start:s.i]
}

func (s *promScanner) skipWord() {
	for s.i < len(s.src) && (isIdentStart(s.src[s.i]) || isDigit(s.src[s.i]) || s.src[s.i] == '.') {
		s.i++
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':'
}

// TestMetricNames checks the extraction on the shapes the dashboard and
// alert rules use, and on the traps around them.
func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`sum by (route) (rate(relay_requests_total{code=~"5..", job=~"$job"}[5m]))`, []string{"relay_requests_total"}},
		{`sum(rate(a_total[$__rate_interval])) by (route, code)`, []string{"a_total"}},
		{"histogram_quantile(0.99, sum by (lane, le) (rate(x_bucket[5m])))\n  > 0.8 * max by (lane) (y)", []string{"x_bucket", "y"}},
		{`a / on (job, instance) group_left(provider) b`, []string{"a", "b"}},
		{`deriv(m[1h]) * 3600 > 64 * 1024 * 1024 and on (job, instance) n`, []string{"m", "n"}},
		{`foo offset 5m unless bar @ start()`, []string{"foo", "bar"}},
		{`sum without (le) (y) or z`, []string{"y", "z"}},
		{`rate(x{l="a}b{c[", k='q\'}'}[1m:30s])`, []string{"x"}},
		{`1e3 + 0x1f + .5 - Inf + NaN`, nil},
		{"# a comment naming not_a_metric\nfoo and bool_metric", []string{"foo", "bool_metric"}},
		{`count(x) == count(x)`, []string{"x"}},
		{`max without (le) (sum by (a) (y))`, []string{"y"}},
		{`sum_total + by_route`, []string{"sum_total", "by_route"}},
		{`ns:recorded:rate5m > 1`, []string{"ns:recorded:rate5m"}},
	}
	for _, tc := range tests {
		got, err := metricNames(tc.expr)
		if err != nil {
			t.Errorf("metricNames(%q): %v", tc.expr, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `rate(x[5m)`, `x{l="a}`} {
		if _, err := metricNames(bad); err == nil {
			t.Errorf("metricNames(%q): no error", bad)
		}
	}
}
