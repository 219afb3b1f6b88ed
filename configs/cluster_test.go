package configs

import (
	"strings"
	"testing"
)

// TestNATSCluster checks nats.server_name, nats.cluster and nats.replicas:
// the derived replica count, and each problem with its YAML path and line
// (minimalYAML has 12 lines; the nats block starts on line 13).
func TestNATSCluster(t *testing.T) {
	const three = "  cluster: {name: c1, listen: 127.0.0.1:6222, routes: [127.0.0.1:6222, 127.0.0.1:6223, nats-route://127.0.0.1:6224]}\n"
	tests := []struct {
		name         string
		nats         string
		wantReplicas int
		wantErr      []string
	}{
		{"single node default", "  store_dir: /tmp/x\n", 1, nil},
		{"cluster of three", "  server_name: n1\n" + three, 3, nil},
		{"cluster of three at R1", "  server_name: n1\n  replicas: 1\n" + three, 1, nil},
		{"url at R3", "  url: nats://a:4222\n  replicas: 3\n", 3, nil},
		{"replicas 2", "  replicas: 2\n", 0, []string{"nats.replicas: must be 1 or 3 (line 14)"}},
		{"R3 without cluster", "  replicas: 3\n", 0, []string{"nats.replicas: 3 needs a cluster of 3 or more nodes"}},
		{"R3 on two nodes", "  server_name: n1\n  replicas: 3\n  cluster: {name: c, listen: 127.0.0.1:6222, routes: [127.0.0.1:6223]}\n", 0,
			[]string{"nats.replicas: 3 needs a cluster"}},
		{"cluster without server name", three, 0, []string{"nats.server_name: must be set, unique per node, with nats.cluster"}},
		{"cluster with url", "  url: nats://a:4222\n  server_name: n1\n" + three, 0, []string{"nats.cluster: clusters the embedded server"}},
		{"bad cluster fields", "  server_name: n 1\n  cluster:\n    name: a.b\n    listen: nope\n    routes: [127.0.0.1:6222, 'http://x:1']\n", 0,
			[]string{"nats.server_name: must be one word", "nats.cluster.name: must be one word of letters, digits, _ and - (line 16)",
				"nats.cluster.listen:", "nats.cluster.routes[1]: must be host:port or nats-route://host:port (line 18)"}},
		{"no routes", "  server_name: n1\n  cluster: {name: c, listen: 127.0.0.1:6222}\n", 0, []string{"nats.cluster.routes: must list"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWithEnv([]byte(minimalYAML+"nats:\n"+tc.nats), nil)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error; want %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.NATS.Replicas != tc.wantReplicas {
				t.Errorf("replicas = %d; want %d", c.NATS.Replicas, tc.wantReplicas)
			}
		})
	}
}
