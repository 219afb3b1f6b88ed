package configs

import (
	"errors"
	"fmt"
	"strconv"
)

// Problem is one thing wrong with a configuration. Parse, Load and Validate
// return their problems joined with errors.Join; Problems lists them.
// No Problem ever holds a relay key, an upstream API key or a signing
// secret.
type Problem struct {
	// Path is the YAML path of the offending value, such as
	// "providers[1].rpm"; empty when unknown.
	Path string
	// Msg says what is wrong, such as "must be >= 0".
	Msg string
	// Line is the 1-based line in the YAML file; 0 when unknown (for
	// example a problem found by Validate on a Config built in code).
	Line int
}

// Error formats p as "path: msg (line N)", leaving out what is unknown.
func (p Problem) Error() string {
	s := p.Msg
	if p.Path != "" {
		s = p.Path + ": " + s
	}
	if p.Line > 0 {
		if p.Path == "" {
			return "line " + strconv.Itoa(p.Line) + ": " + s
		}
		s += " (line " + strconv.Itoa(p.Line) + ")"
	}
	return s
}

// Problems returns every Problem in err's tree (errors.Join and %w
// wrapping are followed), in order. It returns nil when err holds none,
// for example for a YAML syntax error or a missing file.
func Problems(err error) []Problem {
	var out []Problem
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if p, ok := e.(Problem); ok {
			out = append(out, p)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// joinProblems joins probs into one error, or returns nil for none.
func joinProblems(probs []Problem) error {
	if len(probs) == 0 {
		return nil
	}
	errs := make([]error, len(probs))
	for i, p := range probs {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// problems collects Problems during validation.
type problems []Problem

// add records a problem at path.
func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// adder returns a function that records a problem at prefix.field.
func (ps *problems) adder(prefix string) func(field, reason string) {
	return func(field, reason string) { ps.add(prefix+"."+field, "%s", reason) }
}
