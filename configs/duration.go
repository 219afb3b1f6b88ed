package configs

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// String returns d in Go duration syntax, for example "1m30s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes d as a Go duration string ("30s").
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a Go duration string such as "30s", "10m" or "24h".
// A bare number ("30") is an error: its unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{
			fmt.Sprintf("line %d: want a duration such as \"30s\", got a %s", n.Line, kindName(n.Kind)),
		}}
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

// parseDuration is time.ParseDuration with a clearer message for numbers
// written without a unit.
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if isBareNumber(t) {
		return 0, fmt.Errorf("duration `%s` has no unit; write it like \"30s\", \"10m\" or \"24h\"", s)
	}
	v, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("invalid duration `%s`; write it like \"30s\", \"10m\" or \"24h\"", s)
	}
	return v, nil
}

// isBareNumber reports whether s is a number without a unit, such as
// "30", "-5" or "1.5".
func isBareNumber(s string) bool {
	s = strings.TrimLeft(s, "+-")
	if s == "" {
		return false
	}
	digits := 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '.' || r == '_':
		default:
			return false
		}
	}
	return digits > 0
}

// kindName names a YAML node kind for error messages.
func kindName(k yaml.Kind) string {
	switch k {
	case yaml.DocumentNode:
		return "document"
	case yaml.SequenceNode:
		return "sequence"
	case yaml.MappingNode:
		return "mapping"
	case yaml.ScalarNode:
		return "scalar"
	case yaml.AliasNode:
		return "alias"
	default:
		return "node"
	}
}
