package main

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers"
)

// TestBuildBodyLimits: max_body_bytes and body_memory_bytes reach the
// gateway's configuration, defaults included.
func TestBuildBodyLimits(t *testing.T) {
	const rest = "providers:\n  - {name: p, type: anthropic, base_url: 'http://127.0.0.1:1', api_key: k}\n" +
		"routes:\n  - {model: m, targets: [{provider: p}]}\n" +
		"keys:\n  - {name: k, key: secret-key-1}\n"
	for _, tc := range []struct {
		name              string
		yaml              string
		wantBody, wantMem int64
	}{
		{"defaults", rest, 32 << 20, 512 << 20},
		{"set", "max_body_bytes: 1024\nbody_memory_bytes: 4096\n" + rest, 1024, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := configs.ParseWithEnv([]byte(tc.yaml), nil)
			if err != nil {
				t.Fatal(err)
			}
			b := &builder{log: slog.New(slog.DiscardHandler), metrics: workers.NewMetrics(prometheus.NewRegistry()), onRelease: func() {}}
			gc, err := b.build(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.closeIdle)
			if gc.MaxBodyBytes != tc.wantBody || gc.BodyMemoryBytes != tc.wantMem {
				t.Errorf("MaxBodyBytes %d, BodyMemoryBytes %d; want %d, %d", gc.MaxBodyBytes, gc.BodyMemoryBytes, tc.wantBody, tc.wantMem)
			}
		})
	}
}
