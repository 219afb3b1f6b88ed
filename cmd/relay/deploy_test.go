package main

import (
	"context"
	"debug/elf"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// repoFile reads a file of the repository.
func repoFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dockerfileBuild returns the Dockerfile's `RUN CGO_ENABLED=0 ... go build`
// command, its continuation lines joined.
func dockerfileBuild(t *testing.T) string {
	t.Helper()
	var cmd []string
	in := false
	for _, line := range strings.Split(repoFile(t, "Dockerfile"), "\n") {
		if strings.HasPrefix(line, "RUN CGO_ENABLED=0 ") {
			in = true
			line = strings.TrimPrefix(line, "RUN ")
		}
		if !in {
			continue
		}
		trimmed := strings.TrimSpace(line)
		cmd = append(cmd, strings.TrimSuffix(trimmed, "\\"))
		if !strings.HasSuffix(trimmed, "\\") {
			break
		}
	}
	if len(cmd) == 0 {
		t.Fatal("Dockerfile has no `RUN CGO_ENABLED=0 ... go build` line")
	}
	return strings.Join(cmd, " ")
}

// TestDockerfileBinary builds the relay exactly as the Dockerfile's build
// stage does (its RUN line, with the build arguments filled in and the
// output path moved), and checks the binary: static, reporting the
// version and commit given through -ldflags, and able to serve as the
// image's HEALTHCHECK. No container engine runs here, so the image
// itself is not built.
func TestDockerfileBinary(t *testing.T) {
	if os.Getenv("RELAY_DOCKERFILE_BUILD") != "1" {
		t.Skip("set RELAY_DOCKERFILE_BUILD=1 to build the relay with the Dockerfile's command (a full -trimpath build; .ci/run does)")
	}
	out := filepath.Join(t.TempDir(), "relay")
	script := strings.NewReplacer("${VERSION}", "v9.8.7-test", "${COMMIT}", "0123abcdtest", "/out/relay", out).Replace(dockerfileBuild(t))
	// exec: the shell becomes go build, so the timeout's kill reaches it.
	script = strings.Replace(script, " go build ", " exec go build ", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	build := exec.CommandContext(ctx, "sh", "-c", script)
	build.Dir = filepath.Join("..", "..")
	build.Env = append(os.Environ(), "PATH="+filepath.Dir(goTool)+string(os.PathListSeparator)+os.Getenv("PATH"))
	build.WaitDelay = 10 * time.Second
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, b)
	}

	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a dynamic loader (PT_INTERP): not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}

	v, err := exec.CommandContext(ctx, out, "version").Output()
	if err != nil {
		t.Fatalf("relay version: %v", err)
	}
	for _, want := range []string{"relay v9.8.7-test\n", "commit 0123abcdtest\n"} {
		if !strings.Contains(string(v), want) {
			t.Errorf("relay version printed %q, want %q", v, want)
		}
	}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	if b, err := exec.CommandContext(ctx, out, "healthcheck", "--url", up.URL+"/healthz").CombinedOutput(); err != nil {
		t.Errorf("healthcheck of a healthy server: %v\n%s", err, b)
	}
}

// TestHealthcheck: `relay healthcheck` succeeds on 200 only, and fails
// fast on an unreachable or slow server.
func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"healthy", []string{"--url", srv.URL + "/healthz"}, 0, "ok"},
		{"unhealthy", []string{"--url", srv.URL + "/down"}, 1, "503"},
		{"unreachable", []string{"--url", "http://" + freePort(t) + "/healthz"}, 1, "refused"},
		{"slow", []string{"--url", srv.URL + "/slow"}, 1, "deadline"},
		{"not a URL", []string{"--url", "::"}, 1, "healthcheck"},
		{"extra argument", []string{"extra"}, 1, "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			stdout, stderr, code := runRelay(t, t.TempDir(), nil, append([]string{"healthcheck"}, tc.args...)...)
			if code != tc.wantCode || !strings.Contains(stdout+stderr, tc.wantOut) {
				t.Errorf("exit %d, want %d with %q; stdout %q stderr %q", code, tc.wantCode, tc.wantOut, stdout, stderr)
			}
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("took %v; the check is bounded by %v", d, healthcheckTimeout)
			}
		})
	}
}

// TestDeployFiles checks what the container and the systemd unit promise:
// a non-root user, the HEALTHCHECK through `relay healthcheck`, the
// JetStream store on the volume, a container configuration that
// validates, and a unit that restarts on failure, reloads with SIGHUP,
// is hardened, and passes `systemd-analyze verify` where systemd exists.
func TestDeployFiles(t *testing.T) {
	df := repoFile(t, "Dockerfile")
	for _, re := range []string{
		`(?m)^FROM golang:\S+ AS build$`,
		`(?m)^USER 65532:65532$`,
		`(?m)^VOLUME \["/data"\]$`,
		`(?m)^\s+CMD \["/usr/local/bin/relay", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"\]$`,
		`(?m)^COPY deploy/container.yaml /etc/relay/relay.yaml$`,
	} {
		if !regexp.MustCompile(re).MatchString(df) {
			t.Errorf("Dockerfile lacks %s", re)
		}
	}
	if !strings.Contains(repoFile(t, "deploy/container.yaml"), "store_dir: /data/nats") {
		t.Error("deploy/container.yaml does not keep JetStream on the /data volume")
	}
	env := []string{"ANTHROPIC_API_KEY=a", "OPENAI_API_KEY=o", "RELAY_KEY=container-test-key-0123456789",
		"RELAY_ADMIN_TOKEN=container-admin-token-0123456789"}
	abs, _ := filepath.Abs(filepath.Join("..", "..", "deploy", "container.yaml"))
	if out, stderr, code := runRelay(t, t.TempDir(), env, "config", "validate", "--config", abs); code != 0 {
		t.Errorf("deploy/container.yaml does not validate: %s%s", out, stderr)
	}

	unit := repoFile(t, "deploy/relay.service")
	for _, want := range []string{"Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "DynamicUser=yes", "CapabilityBoundingSet=\n", "StateDirectory=relay"} {
		if !strings.Contains(unit, want) {
			t.Errorf("deploy/relay.service lacks %q", want)
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("no systemd-analyze: the unit is not verified")
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/relay", relayBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if b, err := exec.CommandContext(ctx, sa, "verify", path).CombinedOutput(); err != nil || len(b) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, b)
	}
}

// TestClusterCompose checks the three-relay example deploy/cluster: one
// compose service per node, each with its own name and volume and the
// shared config, which validates for every node's environment. (No
// container engine runs here; TestClusterEmbeddedKillRelay runs three
// relays with embedded clustering as real processes.)
func TestClusterCompose(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Hostname    string            `yaml:"hostname"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal([]byte(repoFile(t, "deploy/cluster/compose.yaml")), &compose); err != nil {
		t.Fatalf("deploy/cluster/compose.yaml: %v", err)
	}
	cfg := repoFile(t, "deploy/cluster/relay.yaml")
	abs, _ := filepath.Abs(filepath.Join("..", "..", "deploy", "cluster", "relay.yaml"))
	for _, node := range []string{"relay-1", "relay-2", "relay-3"} {
		svc, ok := compose.Services[node]
		switch {
		case !ok:
			t.Fatalf("compose.yaml has no service %s", node)
		case svc.Image != "relay" || svc.Hostname != node || svc.Environment["RELAY_NODE"] != node:
			t.Errorf("service %s: image %q, hostname %q, RELAY_NODE %q", node, svc.Image, svc.Hostname, svc.Environment["RELAY_NODE"])
		case !slices.Contains(svc.Volumes, node+":/data") || !slices.Contains(svc.Volumes, "./relay.yaml:/etc/relay/relay.yaml:ro"):
			t.Errorf("service %s: volumes %q: want its own %s:/data and the shared config", node, svc.Volumes, node)
		case svc.Environment["RELAY_CLUSTER_PASSWORD"] == "":
			t.Errorf("service %s does not pass RELAY_CLUSTER_PASSWORD", node)
		}
		if _, ok := compose.Volumes[node]; !ok {
			t.Errorf("compose.yaml declares no volume %s", node)
		}
		if !strings.Contains(cfg, node+":6222") {
			t.Errorf("deploy/cluster/relay.yaml's routes lack %s:6222", node)
		}
		env := []string{"ANTHROPIC_API_KEY=a", "OPENAI_API_KEY=o", "RELAY_KEY=cluster-test-key-0123456789",
			"RELAY_ADMIN_TOKEN=cluster-admin-token-0123456789", "RELAY_CLUSTER_PASSWORD=cluster-password-0123", "RELAY_NODE=" + node}
		if out, stderr, code := runRelay(t, t.TempDir(), env, "config", "validate", "--config", abs); code != 0 {
			t.Errorf("deploy/cluster/relay.yaml does not validate for %s: %s%s", node, out, stderr)
		}
	}
}
