package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"
)

// readRepo returns the text of a file at the repository root's path.
func readRepo(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	reBenchList   = regexp.MustCompile("`go run ./bench ([a-z|-]+)`")
	reBenchOne    = regexp.MustCompile("`go run ./bench ([a-z-]+) \\[(-[a-z0-9]+)\\]`")
	reBenchCase   = regexp.MustCompile(`(?m)^\tcase ((?:"[a-z_-]+",? ?)+):`)
	reMicroBench  = regexp.MustCompile("`go test -run '\\^\\$' -bench (\\S+)(?: -benchmem)?((?:\\s+\\./[a-z/]+)+)`")
	reBenchFunc   = regexp.MustCompile(`(?m)^func (Benchmark\w*)\(b \*testing\.B\)`)
	reFlagDefined = `fs\.(?:Bool|BoolVar|String|StringVar|Int|IntVar|Duration|DurationVar)\((?:&[\w.]+, )?"%s"`
)

// TestReadmeBenchCommands checks the README's inline benchmark commands
// against the code they name: the scenarios of `go run ./bench a|b|…` are
// exactly bench/main.go's, a `go run ./bench NAME [-FLAG]` names a
// scenario and a flag it defines, and each `go test -run '^$' -bench X
// PKG…` names packages with a benchmark matching X.
func TestReadmeBenchCommands(t *testing.T) {
	t.Parallel()
	readme := readRepo(t, "README.md")
	benchMain := readRepo(t, "bench/main.go")
	var scenarios []string
	for _, m := range reBenchCase.FindAllStringSubmatch(benchMain, -1) {
		for _, q := range strings.Split(m[1], ",") {
			name := strings.Trim(strings.TrimSpace(q), `"`)
			if !strings.HasPrefix(name, "_") && !strings.HasPrefix(name, "-") && name != "help" {
				scenarios = append(scenarios, name)
			}
		}
	}
	slices.Sort(scenarios)
	lists := reBenchList.FindAllStringSubmatch(readme, -1)
	if len(lists) == 0 {
		t.Fatal("README lacks its `go run ./bench a|b|…` list")
	}
	for _, m := range lists {
		names := strings.Split(m[1], "|")
		if len(names) == 1 { // one scenario named in the text
			if !slices.Contains(scenarios, names[0]) {
				t.Errorf("README's `go run ./bench %s`: no such scenario (%v)", m[1], scenarios)
			}
			continue
		}
		slices.Sort(names)
		if !slices.Equal(names, scenarios) {
			t.Errorf("README's `go run ./bench %s`: bench/main.go's scenarios are %v", m[1], scenarios)
		}
	}
	ones := reBenchOne.FindAllStringSubmatch(readme, -1)
	if len(ones) == 0 {
		t.Fatal("README lacks its `go run ./bench NAME [-FLAG]` command")
	}
	for _, m := range ones {
		if !slices.Contains(scenarios, m[1]) {
			t.Errorf("README's `go run ./bench %s`: no such scenario (%v)", m[1], scenarios)
		}
		src := readRepo(t, filepath.Join("bench", m[1]+".go"))
		if !regexp.MustCompile(fmtFlag(m[2][1:])).MatchString(src) {
			t.Errorf("README's `go run ./bench %s [%s]`: bench/%s.go defines no flag %s", m[1], m[2], m[1], m[2])
		}
	}
	micro := reMicroBench.FindAllStringSubmatch(readme, -1)
	if len(micro) < 2 {
		t.Fatalf("README's `go test -run '^$' -bench …` commands: found %d, want the CheckDepth one and the micro-benchmarks", len(micro))
	}
	for _, m := range micro {
		pattern := regexp.MustCompile(m[1])
		for _, pkg := range strings.Fields(m[2]) {
			files, err := filepath.Glob(filepath.Join("..", "..", pkg, "*_test.go"))
			if err != nil || len(files) == 0 {
				t.Errorf("README's -bench %s %s: no test files (%v)", m[1], pkg, err)
				continue
			}
			found := false
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				for _, fm := range reBenchFunc.FindAllStringSubmatch(string(b), -1) {
					found = found || pattern.MatchString(strings.TrimPrefix(fm[1], "Benchmark"))
				}
			}
			if !found {
				t.Errorf("README's `go test -bench %s %s`: no benchmark there matches", m[1], pkg)
			}
		}
	}
}

// fmtFlag is the pattern of a flag set's definition of flag name.
func fmtFlag(name string) string {
	return strings.Replace(reFlagDefined, "%s", regexp.QuoteMeta(name), 1)
}

var (
	reAnthropicBase = regexp.MustCompile("`ANTHROPIC_BASE_URL=(http://127\\.0\\.0\\.1:8080)`")
	reOpenAIBase    = regexp.MustCompile("`OPENAI_BASE_URL=(http://127\\.0\\.0\\.1:8080/v1)`")
)

// TestReadmeSDKEnv sets the environment variables the README gives the
// SDKs (ANTHROPIC_BASE_URL without /v1, OPENAI_BASE_URL with it, the
// relay key as ANTHROPIC_API_KEY, as ANTHROPIC_AUTH_TOKEN and as
// OPENAI_API_KEY), with the demo's port, and asks the demo through the
// official Go SDKs configured from the environment alone. It sets
// environment variables, so it cannot run in parallel.
func TestReadmeSDKEnv(t *testing.T) {
	readme := readRepo(t, "README.md")
	am, om := reAnthropicBase.FindStringSubmatch(readme), reOpenAIBase.FindStringSubmatch(readme)
	if am == nil || om == nil {
		t.Fatalf("README lacks `ANTHROPIC_BASE_URL=…` (%v) or `OPENAI_BASE_URL=…` (%v)", am, om)
	}
	for _, name := range []string{"ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"} {
		if !strings.Contains(readme, "`"+name+"`") {
			t.Fatalf("README no longer names `%s`", name)
		}
	}
	p := startDemo(t)
	port := func(u string) string { return strings.Replace(u, "127.0.0.1:8080", p.addr, 1) }
	for _, v := range []string{"ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_BASE_URL", "OPENAI_API_KEY"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	t.Setenv("ANTHROPIC_BASE_URL", port(am[1]))
	t.Setenv("OPENAI_BASE_URL", port(om[1]))
	t.Setenv("OPENAI_API_KEY", "relay-demo-key")
	ask := func(t *testing.T) {
		c := anthropic.NewClient(aoption.WithMaxRetries(0), aoption.WithHTTPClient(sdkHTTPClient(t)))
		msg, err := c.Messages.New(t.Context(), anthropic.MessageNewParams{Model: "claude-sonnet", MaxTokens: 16,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
		if err != nil {
			t.Fatalf("Anthropic SDK from the README's environment: %v", err)
		}
		if len(msg.Content) == 0 || !strings.Contains(msg.Content[0].Text, "You said: hi") {
			t.Errorf("Anthropic SDK: %+v; want the demo's echo", msg.Content)
		}
	}
	t.Run("ANTHROPIC_API_KEY", func(t *testing.T) {
		t.Setenv("ANTHROPIC_API_KEY", "relay-demo-key")
		ask(t)
	})
	t.Run("ANTHROPIC_AUTH_TOKEN", func(t *testing.T) {
		t.Setenv("ANTHROPIC_AUTH_TOKEN", "relay-demo-key")
		ask(t)
	})
	t.Run("OPENAI", func(t *testing.T) {
		c := openai.NewClient(ooption.WithMaxRetries(0), ooption.WithHTTPClient(sdkHTTPClient(t)))
		r, err := c.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{Model: "gpt-4o",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		if err != nil {
			t.Fatalf("OpenAI SDK from the README's environment: %v", err)
		}
		if len(r.Choices) == 0 || !strings.Contains(r.Choices[0].Message.Content, "You said: hi") {
			t.Errorf("OpenAI SDK: %+v; want the demo's echo", r.Choices)
		}
	})
}
