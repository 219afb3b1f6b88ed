package main

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// upstreamModel is the model name the relay sends to simulated upstreams.
const upstreamModel = "claude-sim"

// relayConfig is the subset of the relay's YAML configuration (SPEC §2) the
// bench writes. Limits left out mean no limit.
type relayConfig struct {
	Listen string `yaml:"listen"`
	// AdminListen serves /debug/pprof/ when set.
	AdminListen   string          `yaml:"admin_listen,omitempty"`
	ShutdownGrace string          `yaml:"shutdown_grace,omitempty"`
	NATS          relayNATS       `yaml:"nats"`
	Callbacks     *relayCallbacks `yaml:"callbacks,omitempty"`
	Jobs          *relayJobs      `yaml:"jobs,omitempty"`
	Lanes         []relayLane     `yaml:"lanes,omitempty"`
	Providers     []relayProvider `yaml:"providers"`
	Routes        []relayRoute    `yaml:"routes"`
	Keys          []relayKey      `yaml:"keys"`
	Log           relayLog        `yaml:"log"`
}

type relayNATS struct {
	Listen     string          `yaml:"listen"` // "" keeps the embedded server in-process
	StoreDir   string          `yaml:"store_dir"`
	Users      []relayNATSUser `yaml:"users,omitempty"`
	ServerName string          `yaml:"server_name,omitempty"`
	Cluster    *relayCluster   `yaml:"cluster,omitempty"`
}

// relayCluster makes the embedded server a node of a JetStream cluster.
type relayCluster struct {
	Name   string   `yaml:"name"`
	Listen string   `yaml:"listen"`
	Routes []string `yaml:"routes"`
}

// relayNATSUser is a user of the embedded server's client port.
type relayNATSUser struct {
	User      string   `yaml:"user"`
	Password  string   `yaml:"password"`
	Publish   []string `yaml:"publish"`
	Subscribe []string `yaml:"subscribe"`
}

// relayCallbacks configures job callbacks: the bench's receiver listens on
// loopback, so private networks must be allowed.
type relayCallbacks struct {
	SigningSecret        string `yaml:"signing_secret"`
	AllowPrivateNetworks bool   `yaml:"allow_private_networks"`
}

// relayJobs configures the jobs executor; a zero Workers leaves the relay's
// default (jobs.workers).
type relayJobs struct {
	Workers int `yaml:"workers,omitempty"`
}

type relayProvider struct {
	Name    string        `yaml:"name"`
	Type    string        `yaml:"type"`
	BaseURL string        `yaml:"base_url"`
	APIKey  string        `yaml:"api_key"`
	Breaker *relayBreaker `yaml:"breaker,omitempty"`
	// MaxConcurrency and RPM are the provider's limits; 0 means none.
	MaxConcurrency int `yaml:"max_concurrency,omitempty"`
	RPM            int `yaml:"rpm,omitempty"`
}

// relayLane is a priority lane, highest first in relayConfig.Lanes.
type relayLane struct {
	Name     string  `yaml:"name"`
	MaxDepth int     `yaml:"max_depth"`
	MaxWait  string  `yaml:"max_wait"`
	MinShare float64 `yaml:"min_share,omitempty"`
}

type relayBreaker struct {
	FailureRatio float64 `yaml:"failure_ratio"`
	MinRequests  int     `yaml:"min_requests"`
	Window       string  `yaml:"window"`
	OpenFor      string  `yaml:"open_for"`
}

type relayRoute struct {
	Model   string        `yaml:"model"`
	Targets []relayTarget `yaml:"targets"`
}

type relayTarget struct {
	Provider string `yaml:"provider"`
	Model    string `yaml:"model"`
	Weight   int    `yaml:"weight"`
}

type relayKey struct {
	Name        string   `yaml:"name"`
	Key         string   `yaml:"key"`
	DefaultLane string   `yaml:"default_lane,omitempty"`
	Lanes       []string `yaml:"lanes,omitempty"` // empty: all lanes
}

type relayLog struct {
	Level string `yaml:"level"`
}

// newRelayConfig returns a relay configuration listening on listen, with one
// anthropic provider per upstream base URL (named sim-a, sim-b, ...), the
// route bench-model spread over all of them with weight 1, and the key
// bench-key. breaker, when not nil, is set on every provider.
func newRelayConfig(listen, storeDir string, upstreams []string, breaker *relayBreaker) relayConfig {
	cfg := relayConfig{
		Listen: listen,
		NATS:   relayNATS{Listen: "", StoreDir: storeDir},
		Keys:   []relayKey{{Name: "bench", Key: benchKey}},
		Log:    relayLog{Level: "warn"},
	}
	route := relayRoute{Model: benchModel}
	for i, u := range upstreams {
		name := providerName(i)
		cfg.Providers = append(cfg.Providers, relayProvider{
			Name: name, Type: "anthropic", BaseURL: u, APIKey: "sim-key", Breaker: breaker,
		})
		route.Targets = append(route.Targets, relayTarget{Provider: name, Model: upstreamModel, Weight: 1})
	}
	cfg.Routes = []relayRoute{route}
	return cfg
}

// providerName names the i-th provider: sim-a, sim-b, ...
func providerName(i int) string {
	return "sim-" + string(rune('a'+i))
}

// YAML encodes the configuration.
func (c relayConfig) YAML() ([]byte, error) {
	data, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode relay config: %w", err)
	}
	return data, nil
}
