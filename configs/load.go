package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
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
// Every step runs, however many problems the earlier ones found, so one
// pass reports every problem of the file: the decoder is lenient (a value
// of the wrong type is a problem, and the rest is still decoded; a list
// element that does not fit keeps its place, so the elements after it keep
// their indices and are all checked), and Validate's problems about a path
// whose value was set aside or held an unset variable (or about one of its
// parents or children) are left out, as they would only repeat it. Each problem names its YAML path and line, type and
// duration errors included (their path is found from their line). They are
// joined with errors.Join (see Problems), in file order.
func ParseWithEnv(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	root, err := decodeDocument(data)
	if err != nil {
		return nil, err
	}
	var envProbs []Problem
	substituted := make(map[int]bool)
	expandEnv(root, "", lookup, &envProbs, substituted)
	fc := &fieldChecker{lines: make(map[string]int), seen: make(map[fieldVisit]bool),
		substituted: substituted, envPaths: make(map[string]bool),
		asideNodes: make(map[*yaml.Node]bool), order: make(map[string]int)}
	for _, p := range envProbs {
		fc.envPaths[p.Path] = true
	}
	fc.check(root, reflect.TypeFor[Config](), "")
	probs := append(slices.Clip(envProbs), fc.probs...)
	lines := fc.lines
	// A value left holding an unset ${NAME}, or set aside as it did not
	// fit, is reported once: Validate's problems about it are left out.
	// (An unknown field or a repeated key is not decoded, so it hides
	// nothing.)
	reported := append(slices.Clip(envProbs), fc.setAside...)

	c := Default()
	if err := root.Decode(c); err != nil {
		typeProbs, fatal := decodeProblems(err, substituted)
		if fatal != nil {
			return nil, fatal
		}
		probs = append(probs, withPaths(typeProbs, lines)...)
	}
	c.applyDerived()
	if err := c.Validate(); err != nil {
		probs = append(probs, unreported(Problems(withLines(err, lines)), reported)...)
	}
	if len(probs) > 0 {
		sortProblems(probs, fc.order)
		return nil, joinProblems(probs)
	}
	return c, nil
}

// unreported returns the problems of later whose path is not already
// named, nor a parent or child of one named, by a problem in earlier: a
// value that did not decode or came from a missing variable is then also
// invalid, and saying so twice helps nobody.
func unreported(later, earlier []Problem) []Problem {
	var out []Problem
	for _, p := range later {
		dup := false
		for _, e := range earlier {
			if e.Path != "" && p.Path != "" && (within(p.Path, e.Path) || within(e.Path, p.Path)) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, p)
		}
	}
	return out
}

// within reports whether path is p itself or lies below it.
func within(path, p string) bool {
	return path == p || strings.HasPrefix(path, p+".") || strings.HasPrefix(path, p+"[")
}

// withPaths gives each problem that has a line but no path the deepest
// YAML path recorded on that line.
func withPaths(probs []Problem, lines map[string]int) []Problem {
	byLine := make(map[int]string, len(lines))
	for p, l := range lines {
		if q, ok := byLine[l]; !ok || len(p) > len(q) || (len(p) == len(q) && p < q) {
			byLine[l] = p
		}
	}
	for i := range probs {
		if probs[i].Path == "" && probs[i].Line > 0 {
			probs[i].Path = byLine[probs[i].Line]
		}
	}
	return probs
}

// sortProblems orders problems by line (those without one go last) and
// those on the same line, as in a flow list, by where their path (or its
// nearest ancestor in order) comes in the file, keeping the order of
// problems about the same place.
func sortProblems(probs []Problem, order map[string]int) {
	rank := func(p string) int {
		for ; p != ""; p = parentPath(p) {
			if r, ok := order[p]; ok {
				return r
			}
		}
		return -1
	}
	slices.SortStableFunc(probs, func(a, b Problem) int {
		switch {
		case a.Line == b.Line:
			return rank(a.Path) - rank(b.Path)
		case a.Line == 0:
			return 1
		case b.Line == 0:
			return -1
		}
		return a.Line - b.Line
	})
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

// fieldChecker walks the node tree against the schema before decoding:
// it reports every mapping key that is not a field of its struct type and
// every value that does not fit its field's type, and records the line of
// every path it sees. A value that does not fit is set aside, so that
// decoding, which then cannot fail on it, goes on with the rest of the file
// and every problem is reported in one pass: a mapping's value becomes
// null (the field keeps its default) and a list element becomes a
// placeholder that decodes to the element type's zero value, as yaml.v3
// would drop a null element and shift the indices of those after it.
type fieldChecker struct {
	probs       []Problem
	lines       map[string]int
	seen        map[fieldVisit]bool
	substituted map[int]bool        // lines whose values came from the environment
	envPaths    map[string]bool     // paths whose unset variables are reported
	setAside    []Problem           // the paths of the values set aside
	asideNodes  map[*yaml.Node]bool // the nodes set aside, now null
	order       map[string]int      // each path's rank in file order
}

// check checks n against type t at path.
func (fc *fieldChecker) check(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	v := fieldVisit{n, t}
	if fc.seen[v] {
		return
	}
	fc.seen[v] = true
	if !fc.fits(n, t, path) {
		return
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fc.dropDuplicateKeys(n, path)
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if isMerge(k) {
				fc.checkMerge(val, t, path)
				continue
			}
			p := joinPath(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok || k.Kind != yaml.ScalarNode {
				fc.probs = append(fc.probs, Problem{Path: p, Msg: "unknown field", Line: k.Line})
				continue
			}
			fc.record(p, k.Line)
			fc.check(val, ft, p)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			fc.record(p, item.Line)
			n.Content[i] = fc.checkElem(item, t.Elem(), p)
		}
	}
}

// checkElem checks the list element n against type t at path and
// returns the node to decode in its place. yaml.v3 drops a null element of
// a type that cannot be nil, and the elements after it would then move up
// one index: so a null element is a problem, and an element that is null
// or was set aside is replaced by a placeholder of t's zero value, keeping
// every index. (An alias of a value set aside elsewhere is set aside
// without a problem of its own: the value's is reported where it is.)
func (fc *fieldChecker) checkElem(n *yaml.Node, t reflect.Type, path string) *yaml.Node {
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice:
		fc.check(n, t, path)
		return n // yaml.v3 keeps a null element of these as nil
	}
	target := n
	for target.Kind == yaml.AliasNode && target.Alias != nil {
		target = target.Alias
	}
	switch {
	case isNull(target) && !fc.asideNodes[target]:
		fc.probs = append(fc.probs, Problem{Path: path, Line: target.Line,
			Msg: "empty list element; give it a value or remove it"})
	case !isNull(target):
		fc.check(n, t, path)
		if !isNull(target) {
			return n
		}
	}
	fc.setAside = append(fc.setAside, Problem{Path: path})
	ph := placeholder(t)
	if ph == nil {
		return n
	}
	ph.Line, ph.Column = n.Line, n.Column
	return ph
}

// isNull reports whether n is a null scalar.
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// placeholderCandidates are the zero values a list element set aside may
// be replaced by, tried in order: the first that decodes into the
// element's type is its placeholder.
var placeholderCandidates = []yaml.Node{
	{Kind: yaml.ScalarNode, Tag: "!!str", Value: ""},
	{Kind: yaml.ScalarNode, Tag: "!!int", Value: "0"},
	{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "false"},
	{Kind: yaml.ScalarNode, Tag: "!!str", Value: "0s"},
	{Kind: yaml.MappingNode, Tag: "!!map"},
	{Kind: yaml.SequenceNode, Tag: "!!seq"},
}

// placeholder returns a new node that decodes into t as a zero value, or
// nil when none of placeholderCandidates does.
func placeholder(t reflect.Type) *yaml.Node {
	for _, c := range placeholderCandidates {
		if c.Decode(reflect.New(t).Interface()) == nil {
			return &c
		}
	}
	return nil
}

// record notes the line of path and its rank in file order, the first
// time path is seen.
func (fc *fieldChecker) record(path string, line int) {
	if _, dup := fc.lines[path]; dup {
		return
	}
	fc.lines[path] = line
	fc.order[path] = len(fc.order)
}

// dropDuplicateKeys reports every key of mapping n written again after
// its first time and removes the later pairs: yaml.v3 would otherwise
// refuse the whole mapping, and every field in it would then look missing.
func (fc *fieldChecker) dropDuplicateKeys(n *yaml.Node, path string) {
	first := make(map[string]int, len(n.Content)/2)
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		id := strconv.Itoa(int(k.Kind)) + ":" + k.Value
		if line, dup := first[id]; dup {
			fc.probs = append(fc.probs, Problem{Path: joinPath(path, k.Value),
				Msg: fmt.Sprintf("mapping key %q already defined at line %d", k.Value, line), Line: k.Line})
			continue
		}
		first[id] = k.Line
		kept = append(kept, k, n.Content[i+1])
	}
	n.Content = kept
}

// fits reports whether n can be decoded into t. A struct or map needs a
// mapping and a slice a sequence (null fits all three); any other type is
// tried by decoding n alone. When n does not fit, the problem is recorded
// and n becomes null.
func (fc *fieldChecker) fits(n *yaml.Node, t reflect.Type, path string) bool {
	var probs []Problem
	null := isNull(n)
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		if n.Kind != yaml.MappingNode && !null {
			probs = []Problem{{Msg: fmt.Sprintf("cannot unmarshal %s into %s", n.ShortTag(), t), Line: n.Line}}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode && !null {
			probs = []Problem{{Msg: fmt.Sprintf("cannot unmarshal %s into %s", n.ShortTag(), t), Line: n.Line}}
		}
	default:
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			var fatal error
			if probs, fatal = decodeProblems(err, fc.substituted); fatal != nil {
				probs = []Problem{{Msg: fatal.Error(), Line: n.Line}}
			}
		}
	}
	if len(probs) == 0 {
		return true
	}
	if fc.envPaths[path] {
		probs = nil // the unset variable is the problem, reported already
	}
	for _, p := range probs {
		p.Path = path
		fc.probs = append(fc.probs, p)
	}
	fc.setAside = append(fc.setAside, Problem{Path: path})
	*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line, Column: n.Column}
	fc.asideNodes[n] = true
	return false
}

// isMerge reports whether k is a "<<" merge key, as yaml.v3 decides it.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" &&
		(k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

// checkMerge checks the value of a "<<" merge key: a mapping, an alias of
// one, or a sequence of those.
func (fc *fieldChecker) checkMerge(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.SequenceNode {
		fc.check(n, t, path)
		return
	}
	for _, item := range n.Content {
		fc.check(item, t, path)
	}
}

// yamlFields maps a struct type's YAML field names to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" && opts == "inline" && f.Type.Kind() == reflect.Struct {
			maps.Copy(m, yamlFields(f.Type))
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

// decodeProblems turns a yaml.v3 decoding error into problems, one per
// type error; an error that is not a type error is returned as fatal.
// Values on lines that came from the environment are redacted, as they
// may be secrets.
func decodeProblems(err error, substituted map[int]bool) ([]Problem, error) {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return nil, fmt.Errorf("decode config: %w", err)
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
	return probs, nil
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
