package configs

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// expandEnv replaces ${NAME} in every scalar value of the tree rooted at n
// (mapping keys and comments are left alone) and turns $$ into $. It works
// on decoded nodes, not on the file's text, so a value holding ": ", "#" or
// a newline stays one scalar. It returns a problem for every variable that
// is not set and every malformed reference, and the lines it changed.
func expandEnv(n *yaml.Node, path string, lookup func(string) (string, bool), probs *[]Problem, lines map[int]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			expandEnv(c, path, lookup, probs, lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expandEnv(n.Content[i+1], joinPath(path, n.Content[i].Value), lookup, probs, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			expandEnv(c, fmt.Sprintf("%s[%d]", path, i), lookup, probs, lines)
		}
	case yaml.ScalarNode:
		expandScalar(n, path, lookup, probs, lines)
	}
	// Alias nodes are not followed: their anchor is expanded where it
	// is defined, exactly once.
}

// expandScalar expands one scalar node in place.
func expandScalar(n *yaml.Node, path string, lookup func(string) (string, bool), probs *[]Problem, lines map[int]bool) {
	if !strings.Contains(n.Value, "$") {
		return
	}
	out, errs := substitute(n.Value, lookup)
	for _, msg := range errs {
		*probs = append(*probs, Problem{Path: path, Msg: msg, Line: n.Line})
	}
	if len(errs) > 0 || out == n.Value {
		return
	}
	n.Value = out
	lines[n.Line] = true
	const explicit = yaml.TaggedStyle | yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle |
		yaml.LiteralStyle | yaml.FoldedStyle
	if n.Style&explicit != 0 {
		return // quoted or tagged: the author said what type it is
	}
	// A plain scalar is typed by its final text, as if it had been
	// written in the file (max_concurrency: ${N} is an int), except that
	// an empty or null-looking value stays a string.
	switch out {
	case "", "~", "null", "Null", "NULL":
		n.Tag = "!!str"
	default:
		n.Tag = ""
	}
}

// substitute expands ${NAME} and $$ in s. A $ followed by anything else is
// kept as is. It returns one message per unset variable or bad reference;
// the messages never hold a variable's value.
func substitute(s string, lookup func(string) (string, bool)) (string, []string) {
	var b strings.Builder
	var errs []string
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				errs = append(errs, "unterminated ${ (write $$ for a literal $)")
				return s, errs
			}
			name := s[i+2 : i+2+end]
			i += 2 + end
			if !validEnvName(name) {
				errs = append(errs, fmt.Sprintf("invalid variable name %q in ${...}", name))
				continue
			}
			v, ok := lookupEnv(lookup, name)
			if !ok {
				msg := fmt.Sprintf("environment variable %s is not set", name)
				if !slices.Contains(errs, msg) {
					errs = append(errs, msg)
				}
				continue
			}
			b.WriteString(v)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), errs
}

// lookupEnv calls lookup, treating a nil lookup as an empty environment.
func lookupEnv(lookup func(string) (string, bool), name string) (string, bool) {
	if lookup == nil {
		return "", false
	}
	return lookup(name)
}

// validEnvName reports whether s is a shell-style variable name.
func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// joinPath appends a field name to a YAML path.
func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
