package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/relaygw/relay/configs"
)

// readmeEnvValue is what every ${NAME} of a README YAML example expands
// to: the examples name secrets from the environment, and their values
// do not matter to validation.
const readmeEnvValue = "readme-example-value-0123456789abcdef"

// TestReadmeYAML validates every ```yaml block of the README the way
// `relay config validate` does (configs.ParseWithEnv, every ${NAME} set).
// A block with a top-level `listen` is a whole configuration and is
// validated as it is; any other block is a fragment: its top-level
// sections replace those of configs/demo.yaml, and the result is
// validated. So an unknown or misspelled field, a wrong type or an
// invalid value in a README example fails this test.
func TestReadmeYAML(t *testing.T) {
	t.Parallel()
	demoText, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, "yaml")
	if len(blocks) == 0 {
		t.Fatal("README has no ```yaml blocks; readmeBlocks lost them?")
	}
	lookup := func(string) (string, bool) { return readmeEnvValue, true }
	for i, b := range blocks {
		b = dedent(b)
		var frag map[string]any
		if err := yaml.Unmarshal([]byte(b), &frag); err != nil {
			t.Errorf("README yaml block %d does not parse: %v\n%s", i, err, b)
			continue
		}
		doc := []byte(b)
		if _, whole := frag["listen"]; !whole {
			var base map[string]any
			if err := yaml.Unmarshal(demoText, &base); err != nil {
				t.Fatal(err)
			}
			for k, v := range frag {
				base[k] = v
			}
			if doc, err = yaml.Marshal(base); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := configs.ParseWithEnv(doc, lookup); err != nil {
			t.Errorf("README yaml block %d is refused by config validation (merged into configs/demo.yaml):\n%v\nblock:\n%s", i, err, b)
		}
	}
}

// dedent removes the indentation common to every non-blank line of s
// (README examples inside list items are indented).
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	cut := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " "))
		if cut < 0 || n < cut {
			cut = n
		}
	}
	for i, l := range lines {
		if len(l) >= cut && cut > 0 {
			lines[i] = l[cut:]
		}
	}
	return strings.Join(lines, "\n")
}
