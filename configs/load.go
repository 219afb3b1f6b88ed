package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads the YAML file at path, expands ${NAME} from the process
// environment and returns the validated configuration. It is
// LoadWithEnv(path, os.LookupEnv).
func Load(path string) (*Config, error) {
	return LoadWithEnv(path, os.LookupEnv)
}

// LoadWithEnv is Load with the environment given as a lookup function (for
// example a map in tests). A nil lookup is an empty environment.
func LoadWithEnv(path string, lookup func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseWithEnv(data, lookup)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes one YAML document into a validated configuration, expanding
// ${NAME} from the process environment (os.LookupEnv), so its result
// depends on the environment; use ParseWithEnv for a pure function.
func Parse(data []byte) (*Config, error) {
	return ParseWithEnv(data, os.LookupEnv)
}

// ParseWithEnv decodes one YAML document into a validated configuration.
//
// Steps, in order:
//   - the data must hold exactly one YAML document whose root is a mapping;
//   - ${NAME} in scalar values is replaced by lookup(NAME), and $$ by a
//     literal $; an unset variable is a problem naming it, the YAML path
//     and the line (a nil lookup is an empty environment);
//   - every mapping key must be a field of the schema;
//   - the document is decoded over Default(), so left-out fields keep
//     their defaults, and derived defaults are filled in (see Default);
//   - Validate runs.
//
// Problems found by one step are all reported together, as Problem values
// joined with errors.Join (see Problems); later steps do not run.
func ParseWithEnv(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	root, err := decodeDocument(data)
	if err != nil {
		return nil, err
	}
	var probs []Problem
	substituted := make(map[int]bool)
	expandEnv(root, "", lookup, &probs, substituted)
	lines := make(map[string]int)
	checkFields(root, reflect.TypeFor[Config](), "", &probs, lines, make(map[fieldVisit]bool))
	if len(probs) > 0 {
		return nil, joinProblems(probs)
	}

	c := Default()
	if err := root.Decode(c); err != nil {
		return nil, decodeError(err, substituted)
	}
	c.applyDerived()
	if err := c.Validate(); err != nil {
		return nil, withLines(err, lines)
	}
	return c, nil
}

// decodeDocument parses data into the root mapping node of its only document.
func decodeDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("parse config: empty document")
		}
		return nil, fmt.Errorf("parse config: %w", err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, fmt.Errorf("parse config: %w", err)
	default:
		return nil, fmt.Errorf("parse config: line %d: more than one YAML document; want exactly one", extra.Line)
	}
	if len(doc.Content) != 1 {
		return nil, errors.New("parse config: empty document")
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, errors.New("parse config: empty document")
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("parse config: line %d: the document must be a mapping, not a %s", root.Line, kindName(root.Kind))
	}
	return root, nil
}

// fieldVisit marks a node already checked against a type, so aliases cost
// nothing extra.
type fieldVisit struct {
	n *yaml.Node
	t reflect.Type
}

// checkFields reports every mapping key that is not a field of the struct
// type it is decoded into, and records the line of every path it sees.
// Type mismatches are left to the decoder.
func checkFields(n *yaml.Node, t reflect.Type, path string, probs *[]Problem, lines map[string]int, seen map[fieldVisit]bool) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	v := fieldVisit{n, t}
	if seen[v] {
		return
	}
	seen[v] = true
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if isMerge(k) {
				checkMerge(val, t, path, probs, lines, seen)
				continue
			}
			p := joinPath(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok || k.Kind != yaml.ScalarNode {
				*probs = append(*probs, Problem{Path: p, Msg: "unknown field", Line: k.Line})
				continue
			}
			if _, dup := lines[p]; !dup {
				lines[p] = k.Line
			}
			checkFields(val, ft, p, probs, lines, seen)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if _, dup := lines[p]; !dup {
				lines[p] = item.Line
			}
			checkFields(item, t.Elem(), p, probs, lines, seen)
		}
	}
}

// isMerge reports whether k is a "<<" merge key, as yaml.v3 decides it.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" &&
		(k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

// checkMerge checks the value of a "<<" merge key: a mapping, an alias of
// one, or a sequence of those.
func checkMerge(n *yaml.Node, t reflect.Type, path string, probs *[]Problem, lines map[string]int, seen map[fieldVisit]bool) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.SequenceNode {
		checkFields(n, t, path, probs, lines, seen)
		return
	}
	for _, item := range n.Content {
		checkFields(item, t, path, probs, lines, seen)
	}
}

// yamlFields maps a struct type's YAML field names to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

// typeErrLine matches the "line N: " prefix of yaml.v3 type errors.
var typeErrLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// quoted matches a value that yaml.v3 quotes in an error message.
var quoted = regexp.MustCompile("`[^`]*`")

// decodeError turns a yaml.v3 decoding error into problems, one per type
// error. Values on lines that came from the environment are redacted, as
// they may be secrets.
func decodeError(err error, substituted map[int]bool) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("decode config: %w", err)
	}
	// The local types of the UnmarshalYAML methods read as the schema's.
	names := strings.NewReplacer("configs.laneYAML", "configs.Lane",
		"configs.providerYAML", "configs.Provider", "configs.simulatorYAML", "configs.Simulator")
	probs := make([]Problem, 0, len(te.Errors))
	for _, msg := range te.Errors {
		msg = names.Replace(msg)
		p := Problem{Msg: msg}
		if m := typeErrLine.FindStringSubmatch(msg); m != nil {
			p.Line, _ = strconv.Atoi(m[1])
			p.Msg = m[2]
		}
		if substituted[p.Line] {
			p.Msg = quoted.ReplaceAllString(p.Msg, "`[redacted]`")
		}
		probs = append(probs, p)
	}
	return joinProblems(probs)
}

// withLines adds the line of each problem's path (or of its nearest
// ancestor that is in the file) to the problems in err.
func withLines(err error, lines map[string]int) error {
	probs := Problems(err)
	for i := range probs {
		for p := probs[i].Path; p != "" && probs[i].Line == 0; p = parentPath(p) {
			probs[i].Line = lines[p]
		}
	}
	return joinProblems(probs)
}

// parentPath strips the last element of a YAML path: "a.b[1]" -> "a.b",
// "a.b" -> "a", "a" -> "".
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}
