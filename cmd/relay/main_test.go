package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// relayBin is the relay binary TestMain builds once for every test.
var relayBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "relay-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay test:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	relayBin = filepath.Join(dir, "relay")
	// go test puts its own GOROOT/bin first on PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay test:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", relayBin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "relay test: go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// baseEnv is the environment of every relay subprocess: the test's own
// without the variables the relay reads, plus extra.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "RELAY_CONFIG", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "RELAY_KEY_TEAM_A", "RELAY_WEBHOOK_SECRET":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// runRelay runs the relay binary to completion in dir and returns its
// output and exit code.
func runRelay(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relayBin, args...)
	cmd.Dir = dir
	cmd.Env = baseEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run relay %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-version"} {
		t.Run(arg, func(t *testing.T) {
			stdout, stderr, code := runRelay(t, t.TempDir(), nil, arg)
			if code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", code, stderr)
			}
			for _, want := range []string{"relay dev", "commit ", runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH} {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantUsage bool   // usage text on stderr
		wantErr   string // on stderr
	}{
		{name: "no_args", args: nil, wantCode: 1, wantUsage: true},
		{name: "unknown_command", args: []string{"frobnicate"}, wantCode: 1, wantUsage: true, wantErr: `unknown command "frobnicate"`},
		{name: "config_without_validate", args: []string{"config"}, wantCode: 1, wantUsage: true},
		{name: "config_unknown_subcommand", args: []string{"config", "check"}, wantCode: 1, wantUsage: true},
		{name: "validate_unknown_flag", args: []string{"config", "validate", "--nope"}, wantCode: 1, wantUsage: true, wantErr: "flag provided but not defined"},
		{name: "validate_extra_argument", args: []string{"config", "validate", "extra"}, wantCode: 1, wantErr: `unexpected argument "extra"`},
		{name: "serve_extra_argument", args: []string{"serve", "extra"}, wantCode: 1, wantErr: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runRelay(t, t.TempDir(), nil, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d", code, tt.wantCode)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want empty", stdout)
			}
			if tt.wantUsage && !strings.Contains(stderr, "usage:") && !strings.Contains(stderr, "Usage of") {
				t.Errorf("stderr lacks usage:\n%s", stderr)
			}
			if tt.wantErr != "" && !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, stderr)
			}
		})
	}

	t.Run("help_to_stdout", func(t *testing.T) {
		stdout, _, code := runRelay(t, t.TempDir(), nil, "help")
		if code != 0 || !strings.Contains(stdout, "relay serve") {
			t.Errorf("exit %d, stdout:\n%s", code, stdout)
		}
	})
}

// badConfig holds several independent problems.
const badConfig = `listen: 127.0.0.1:8080
nats:
  listen: ""
  store_dir: ./data
providers:
  - name: p1
    type: bogus
    base_url: http://127.0.0.1:1
    api_key: k
    rpm: -5
routes:
  - model: m
    targets:
      - {provider: nope}
keys:
  - name: a
    key: canary-bad-config-key-0123456789
`

func TestConfigValidate(t *testing.T) {
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.yaml", badConfig)
	missingVar := write("missing-var.yaml", strings.Replace(badConfig, "type: bogus", "type: anthropic", 1)+
		"callbacks:\n  signing_secret: ${RELAY_TEST_UNSET_SECRET}\n")
	demo := filepath.Join(repoRoot, "configs", "demo.yaml")
	prod := filepath.Join(repoRoot, "configs", "relay.yaml")
	prodEnv := []string{
		"ANTHROPIC_API_KEY=sk-ant-test-not-real",
		"OPENAI_API_KEY=sk-test-not-real",
		"RELAY_KEY_TEAM_A=relay-team-a-test-key-0123456789",
		"RELAY_WEBHOOK_SECRET=whsec_dGVzdC1zaWduaW5nLXNlY3JldC0zMi1ieXRlcyE=",
	}

	tests := []struct {
		name       string
		dir        string
		env        []string
		args       []string
		wantCode   int
		wantStdout string
		wantErr    []string // every string must be on stderr
		notErr     []string // no string may be on stderr
	}{
		{
			name: "demo_ok", dir: dir,
			args:     []string{"config", "validate", "--config", demo},
			wantCode: 0, wantStdout: "ok\n",
		},
		{
			name: "demo_relative_path", dir: filepath.Join(repoRoot, "cmd", "relay"),
			args:     []string{"config", "validate", "--config", "../../configs/demo.yaml"},
			wantCode: 0, wantStdout: "ok\n",
		},
		{
			name: "every_problem_listed", dir: dir,
			args:     []string{"config", "validate", "--config", bad},
			wantCode: 1,
			wantErr:  []string{bad, "providers[0].type", "providers[0].rpm", "routes[0].targets[0].provider"},
			notErr:   []string{"canary-bad-config-key"},
		},
		{
			name: "relay_config_env", dir: dir,
			env:      []string{"RELAY_CONFIG=" + bad},
			args:     []string{"config", "validate"},
			wantCode: 1,
			wantErr:  []string{bad, "providers[0].type"},
		},
		{
			name: "flag_beats_env", dir: dir,
			env:      []string{"RELAY_CONFIG=" + bad},
			args:     []string{"config", "validate", "--config", demo},
			wantCode: 0, wantStdout: "ok\n",
		},
		{
			name: "default_path_in_working_dir", dir: repoRoot,
			env:      prodEnv,
			args:     []string{"config", "validate"},
			wantCode: 0, wantStdout: "ok\n",
		},
		{
			name: "missing_env_var", dir: dir,
			args:     []string{"config", "validate", "--config", missingVar},
			wantCode: 1,
			// A missing variable stops the load before validation, so
			// only the variable problems are listed.
			wantErr: []string{"RELAY_TEST_UNSET_SECRET", "callbacks.signing_secret"},
		},
		{
			name: "missing_file", dir: dir,
			args:     []string{"config", "validate", "--config", filepath.Join(dir, "absent.yaml")},
			wantCode: 1,
			wantErr:  []string{"absent.yaml"},
		},
		{
			name: "relay_yaml_with_env", dir: dir,
			env:      prodEnv,
			args:     []string{"config", "validate", "--config", prod},
			wantCode: 0, wantStdout: "ok\n",
		},
		{
			name: "relay_yaml_without_env", dir: dir,
			args:     []string{"config", "validate", "--config", prod},
			wantCode: 1,
			wantErr:  []string{"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "RELAY_KEY_TEAM_A", "RELAY_WEBHOOK_SECRET"},
		},
		{
			name: "relay_yaml_bad_secret", dir: dir,
			env:      append(append([]string(nil), prodEnv[:3]...), "RELAY_WEBHOOK_SECRET=not-a-whsec"),
			args:     []string{"config", "validate", "--config", prod},
			wantCode: 1,
			wantErr:  []string{"callbacks.signing_secret"},
			notErr:   []string{"not-a-whsec", "relay-team-a-test-key", "sk-ant-test-not-real"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runRelay(t, tt.dir, tt.env, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if stdout != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout, tt.wantStdout)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			for _, bad := range tt.notErr {
				if strings.Contains(stderr, bad) {
					t.Errorf("stderr holds %q:\n%s", bad, stderr)
				}
			}
		})
	}
}
