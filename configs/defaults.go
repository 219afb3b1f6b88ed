// This file owns every default of the relay's settings: packages take
// explicit values and declare none of their own.

package configs

import (
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/relaygw/relay/workers/modelglob"
)

// Default values, as documented on Default and in configs/relay.yaml.
const (
	defaultListen         = "127.0.0.1:8080"
	defaultShutdownGrace  = 30 * time.Second
	defaultMaxBodyBytes   = 32 << 20 // 32 MiB
	defaultMaxJSONDepth   = 128
	defaultBodyMemory     = 512 << 20 // 512 MiB
	defaultNATSStoreDir   = "./data/nats"
	defaultLaneMaxDepth   = 10000
	defaultLaneMaxWait    = 60 * time.Second
	defaultTimeout        = 10 * time.Minute
	defaultFirstByteTime  = time.Minute
	defaultMaxIdleConns   = 64
	defaultFailureRatio   = 0.5
	defaultMinRequests    = 10
	defaultBreakerWindow  = 30 * time.Second
	defaultBreakerOpenFor = 15 * time.Second
	defaultRetryAttempts  = 3
	defaultRetryRatio     = 0.2
	defaultRetryFloor     = 3
	defaultJobsWorkers    = 128
	defaultResultTTL      = 72 * time.Hour
	defaultUsageRetention = 720 * time.Hour
	defaultCounterKeep    = 9600 * time.Hour
	defaultLogLevel       = "info"
	defaultSampleRatio    = 1.0
	defaultSimLatency     = 20 * time.Millisecond
	defaultSimTokenGap    = 10 * time.Millisecond
)

// Default returns a configuration holding every default and no providers,
// routes or keys (so it does not validate on its own). Parse starts from it,
// so a field left out of the YAML keeps the value below, while a field
// written in the YAML, even as "" or 0, overrides it:
//
//	listen: 127.0.0.1:8080
//	admin_listen: ""                   # off
//	admin.token: ""                    # admin endpoints (/status) refused
//	shutdown_grace: 30s
//	max_body_bytes: 33554432           # 32 MiB
//	max_json_depth: 128
//	body_memory_bytes: 536870912       # 512 MiB
//	nats.url: ""                       # embedded server
//	nats.listen: ""                    # in-process only: no client port
//	nats.store_dir: ./data/nats
//	nats.users: []                     # tenants log in with their relay key
//	nats.credentials, nkey_seed_file, user, password, token, tls: "" (nats.url only)
//	nats.server_name: ""               # "relay"; required with nats.cluster
//	nats.cluster: none                 # a single embedded node
//	lanes:                             # only when the whole list is absent
//	  interactive (max_depth 10000,  max_wait 30s)
//	  standard    (max_depth 10000,  max_wait 60s)
//	  batch       (max_depth 100000, max_wait 24h, min_share 0.1)
//	callbacks.retry_schedule: [5s, 5m, 30m, 2h, 5h, 10h]
//	callbacks.max_attempts: unset (deprecated; the schedule's length + 1)
//	jobs.result_ttl: 72h
//	usage.retention: 720h              # usage events on RELAY_USAGE
//	usage.counter_retention: 9600h     # per-key day counters; 0: forever
//	log.level: info
//	tracing.otlp_endpoint: ""          # off
//	tracing.sample_ratio: 1
//
// Defaults inside list entries are applied while decoding them:
//
//	lane:      max_depth 10000, max_wait 60s, min_share 0
//	provider:  timeout 10m, first_byte_timeout 1m (or timeout, when that is
//	           shorter), max_idle_conns 64, no rate or concurrency limits,
//	           breaker {failure_ratio 0.5, min_requests 10, window 30s, open_for 15s},
//	           each breaker field separately
//	simulator: latency 20ms, token_interval 10ms, echo false (when the block
//	           is present)
//
// and after decoding, from the rest of the file:
//
//	target weight 0        -> 1
//	target model ""        -> the route's model
//	key lanes []           -> every lane
//	key default_lane ""    -> the first lane (in priority order) the key may use
//	key routes []          -> ["*"] (every route)
//	retry                  -> {max_attempts: 3, budget_ratio: 0.2, budget_floor: 3}
//	jobs.workers           -> 128
//	nats.replicas 0        -> 3 with nats.cluster of 2+ routes, else 1
//	nats.lease_period      -> 3s
func Default() *Config {
	return &Config{
		Listen:          defaultListen,
		ShutdownGrace:   Duration(defaultShutdownGrace),
		MaxBodyBytes:    defaultMaxBodyBytes,
		MaxJSONDepth:    defaultMaxJSONDepth,
		BodyMemoryBytes: defaultBodyMemory,
		NATS: NATS{
			StoreDir:    defaultNATSStoreDir,
			LeasePeriod: Duration(DefaultLeasePeriod),
		},
		Lanes: []Lane{
			{Name: "interactive", MaxDepth: defaultLaneMaxDepth, MaxWait: Duration(30 * time.Second)},
			{Name: "standard", MaxDepth: defaultLaneMaxDepth, MaxWait: Duration(60 * time.Second)},
			{Name: "batch", MaxDepth: 100000, MaxWait: Duration(24 * time.Hour), MinShare: 0.1},
		},
		Retry:     Retry{MaxAttempts: defaultRetryAttempts, BudgetRatio: defaultRetryRatio, BudgetFloor: defaultRetryFloor},
		Callbacks: Callbacks{RetrySchedule: defaultRetrySchedule()},
		Jobs:      Jobs{ResultTTL: Duration(defaultResultTTL), Workers: defaultJobsWorkers},
		Usage:     Usage{Retention: Duration(defaultUsageRetention), CounterRetention: Duration(defaultCounterKeep)},
		Log:       Log{Level: defaultLogLevel},
		Tracing:   Tracing{SampleRatio: defaultSampleRatio},
	}
}

// DefaultLeasePeriod is nats.lease_period's default.
const DefaultLeasePeriod = 3 * time.Second

// defaultRetrySchedule is callbacks.retry_schedule's default: about a
// day of retries, as webhook senders do.
func defaultRetrySchedule() []Duration {
	return []Duration{Duration(5 * time.Second), Duration(5 * time.Minute), Duration(30 * time.Minute),
		Duration(2 * time.Hour), Duration(5 * time.Hour), Duration(10 * time.Hour)}
}

// fitDefaultSchedule returns the default retry schedule without the delays
// a job record kept ttl would not outlive (a shorter jobs.result_ttl than
// the default's longest delay, 10 h); any other schedule is returned as
// it is, and validation refuses delays that do not fit.
func fitDefaultSchedule(s []Duration, ttl Duration) []Duration {
	if ttl <= 0 || !slices.Equal(s, defaultRetrySchedule()) {
		return s
	}
	return slices.DeleteFunc(s, func(d Duration) bool { return d >= ttl })
}

// DefaultBreaker returns the breaker settings used for fields a provider
// leaves out.
func DefaultBreaker() Breaker {
	return Breaker{
		FailureRatio: defaultFailureRatio,
		MinRequests:  defaultMinRequests,
		Window:       Duration(defaultBreakerWindow),
		OpenFor:      Duration(defaultBreakerOpenFor),
	}
}

// UnmarshalYAML decodes a lane, defaulting max_depth to 10000 and max_wait
// to 60s when they are left out.
func (l *Lane) UnmarshalYAML(n *yaml.Node) error {
	type laneYAML Lane
	p := laneYAML{MaxDepth: defaultLaneMaxDepth, MaxWait: Duration(defaultLaneMaxWait)}
	err := n.Decode(&p) // a type error still decodes the other fields
	*l = Lane(p)
	return err
}

// DefaultProvider returns the settings a provider entry gets for the
// fields it leaves out: timeout 10m, first_byte_timeout 1m, max_idle_conns
// 64 and DefaultBreaker, with no rate or concurrency limits and no name,
// type, URL or key. (A first_byte_timeout left out is cut to a shorter
// timeout.) Tests that build workers by hand take their values from here.
func DefaultProvider() Provider {
	return Provider{
		Timeout:          Duration(defaultTimeout),
		FirstByteTimeout: Duration(defaultFirstByteTime),
		MaxIdleConns:     defaultMaxIdleConns,
		Breaker:          DefaultBreaker(),
	}
}

// UnmarshalYAML decodes a provider, defaulting timeout to 10m,
// first_byte_timeout to 1m (or to timeout, when that is shorter),
// max_idle_conns to 64 and each left-out breaker field to DefaultBreaker's.
func (p *Provider) UnmarshalYAML(n *yaml.Node) error {
	type providerYAML Provider
	v := providerYAML(DefaultProvider())
	err := n.Decode(&v) // a type error still decodes the other fields
	if !hasKey(n, "first_byte_timeout") {
		v.FirstByteTimeout = Duration(defaultFirstByteTime)
		if v.Timeout > 0 && v.Timeout < v.FirstByteTimeout {
			v.FirstByteTimeout = v.Timeout
		}
	}
	*p = Provider(v)
	return err
}

// hasKey reports whether the mapping node n holds key, directly or through
// an alias or a merge key ("<<: *anchor"). A mapping that merges itself
// (yaml.v3 refuses it when decoding) is looked at once.
func hasKey(n *yaml.Node, key string) bool {
	return hasKeyOnce(n, key, make(map[*yaml.Node]bool))
}

// hasKeyOnce is hasKey, skipping the mappings in seen.
func hasKeyOnce(n *yaml.Node, key string, seen map[*yaml.Node]bool) bool {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode || seen[n] {
		return false
	}
	seen[n] = true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Value == key:
			return true
		case k.Value == "<<" && v.Kind == yaml.SequenceNode:
			for _, m := range v.Content {
				if hasKeyOnce(m, key, seen) {
					return true
				}
			}
		case k.Value == "<<" && hasKeyOnce(v, key, seen):
			return true
		}
	}
	return false
}

// UnmarshalYAML decodes a simulator block, defaulting latency to 20ms and
// token_interval to 10ms when they are left out.
func (s *Simulator) UnmarshalYAML(n *yaml.Node) error {
	type simulatorYAML Simulator
	v := simulatorYAML{Latency: Duration(defaultSimLatency), TokenInterval: Duration(defaultSimTokenGap)}
	err := n.Decode(&v) // a type error still decodes the other fields
	*s = Simulator(v)
	return err
}

// applyDerived fills the defaults that depend on other parts of the file:
// target weights and models, and keys' lanes, default lane and routes.
func (c *Config) applyDerived() {
	c.NATS.Replicas = c.NATS.ReplicaCount()
	c.Callbacks.RetrySchedule = fitDefaultSchedule(c.Callbacks.RetrySchedule, c.Jobs.ResultTTL)
	for i := range c.Routes {
		r := &c.Routes[i]
		for j := range r.Targets {
			t := &r.Targets[j]
			if t.Weight == 0 {
				t.Weight = 1
			}
			if t.Model == "" && !modelglob.IsPattern(r.Model) {
				t.Model = r.Model // a pattern route's target passes the client's model through
			}
		}
	}
	for i := range c.Keys {
		k := &c.Keys[i]
		if len(k.Lanes) == 0 {
			k.Lanes = make([]string, 0, len(c.Lanes))
			for _, l := range c.Lanes {
				k.Lanes = append(k.Lanes, l.Name)
			}
		}
		if k.DefaultLane == "" {
			k.DefaultLane = firstAllowedLane(c.Lanes, k.Lanes)
		}
		if len(k.Routes) == 0 {
			k.Routes = []string{"*"}
		}
	}
}

// firstAllowedLane returns the highest-priority lane among allowed, or "".
func firstAllowedLane(lanes []Lane, allowed []string) string {
	for _, l := range lanes {
		for _, a := range allowed {
			if a == l.Name {
				return l.Name
			}
		}
	}
	return ""
}

// ReplicaCount returns nats.replicas, or when it is 0 its derived value:
// 3 for an embedded cluster of 3 or more nodes (2 or more routes), else 1.
func (n NATS) ReplicaCount() int {
	switch {
	case n.Replicas != 0:
		return n.Replicas
	case n.URL == "" && n.Cluster != nil && len(n.Cluster.Routes) >= 2:
		return 3
	}
	return 1
}
