// Package configs defines the relay's YAML configuration: its schema, its
// defaults, ${ENV} substitution and validation.
//
// configs is a leaf package: it imports none of the relay's other packages,
// opens no sockets and starts nothing. Other packages take their own plain
// option structs, which cmd/relay fills from a validated *Config.
//
// Loading is strict: unknown fields are errors (a typo must not silently
// disable a limit), a ${NAME} whose variable is not set is an error (never an
// empty string), and Validate reports every problem at once, each naming its
// YAML path, for example "providers[1].rpm: must be >= 0 (line 12)".
//
// Entry points: Load and Parse (environment from the process), LoadWithEnv
// and ParseWithEnv (environment from a lookup function), Default (every
// default), (*Config).Validate, and Problems to list the Problem values in
// an error. A *Config is plain data: safe for concurrent reads, and a
// reload builds a new one rather than changing the old.
package configs

import (
	"strings"
	"time"
)

// Config is the whole relay configuration, as read from YAML.
type Config struct {
	// Listen is the address of the API, /metrics, /healthz and /readyz.
	Listen string `yaml:"listen"`
	// AdminListen is the address of pprof and admin endpoints; "" turns them off.
	AdminListen string `yaml:"admin_listen"`
	// ShutdownGrace bounds how long in-flight requests may run after SIGTERM.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
	// MaxBodyBytes is the largest request body accepted; larger ones get 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxJSONDepth bounds how deeply arrays and objects may nest in any
	// JSON the relay reads: request bodies (each batch item and job body
	// included) and upstream answers and stream events. Deeper client
	// JSON gets 400; a deeper upstream answer counts as garbage (502).
	MaxJSONDepth int `yaml:"max_json_depth"`
	// BodyMemoryBytes bounds the bytes of request bodies the relay holds
	// at once, counted as they arrive (never as Content-Length promises);
	// past it a request waits up to 1s for room, then gets 503 with
	// retry-after. It must exceed MaxBodyBytes.
	BodyMemoryBytes int64 `yaml:"body_memory_bytes"`
	// NATS configures the embedded or external NATS server.
	NATS NATS `yaml:"nats"`
	// Lanes are the priority lanes, highest priority first.
	Lanes []Lane `yaml:"lanes"`
	// Providers are the upstream APIs and their limits.
	Providers []Provider `yaml:"providers"`
	// Routes map the model a client sends onto provider targets.
	Routes []Route `yaml:"routes"`
	// Keys are the relay API keys clients authenticate with.
	Keys []Key `yaml:"keys"`
	// Prices turn usage into cost, by upstream model; optional.
	Prices []Price `yaml:"prices"`
	// Retry bounds the upstream calls made for one request and for all.
	Retry Retry `yaml:"retry"`
	// Callbacks configures job result delivery to callback URLs.
	Callbacks Callbacks `yaml:"callbacks"`
	// Jobs configures asynchronous jobs.
	Jobs Jobs `yaml:"jobs"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Admin configures the admin endpoints on AdminListen.
	Admin Admin `yaml:"admin"`
	// Tracing configures OpenTelemetry traces (off unless OTLPEndpoint).
	Tracing Tracing `yaml:"tracing"`
	// Simulator, when set, starts a simulated upstream inside the relay
	// process (configs/demo.yaml uses it; never needed in production).
	Simulator *Simulator `yaml:"simulator"`
}

// NATS configures the NATS server the relay uses.
type NATS struct {
	// URL of an external NATS server or cluster (comma-separated seeds);
	// empty starts an embedded JetStream server.
	URL string `yaml:"url"`
	// Listen is the embedded server's client address for outside
	// subscribers; "" keeps it in-process only.
	Listen string `yaml:"listen"`
	// StoreDir is the embedded server's JetStream file storage directory.
	StoreDir string `yaml:"store_dir"`
	// Sync is how often JetStream file storage is fsynced ("always" for
	// every write); empty keeps the server's default.
	Sync string `yaml:"sync"`
	// Users may log in on the embedded server's client port besides
	// tenants (who log in with their relay key), with exactly the
	// permissions listed (plus subscribe on _INBOX.<user>.>).
	Users []NATSUser `yaml:"users"`
	// Credentials is a .creds file (user JWT and nkey seed) for nats.url.
	Credentials string `yaml:"credentials"`
	// NkeySeedFile is a file holding a user nkey seed (SU...) for nats.url.
	NkeySeedFile string `yaml:"nkey_seed_file"`
	// User is the user name for nats.url; Password goes with it.
	User string `yaml:"user"`
	// Password is the password for nats.url; User goes with it.
	Password string `yaml:"password"`
	// Token is the authentication token for nats.url.
	Token string `yaml:"token"`
	// TLS configures TLS to nats.url.
	TLS NATSTLS `yaml:"tls"`
	// ServerName names the embedded server; unique per node of a
	// cluster and kept across restarts on the same store_dir. Empty:
	// "relay" (required with cluster).
	ServerName string `yaml:"server_name"`
	// Cluster, when set, makes the embedded server a node of a JetStream
	// cluster with its peers (embedded only).
	Cluster *NATSCluster `yaml:"cluster"`
	// Replicas is the replica count of every file-storage stream, KV
	// bucket and durable consumer the relay creates: 1 or 3. 0 (or left
	// out): 3 with a cluster of 3 or more nodes, else 1.
	Replicas int `yaml:"replicas"`
	// LeasePeriod is how long a relay's share of the providers' limits
	// (a capacity lease) lasts when several relays share NATS (nats.url,
	// nats.cluster or nats.listen): demands are reported and grants renewed
	// every sixth of it. 0 (left out): 3s. Within [3s, 1m].
	LeasePeriod Duration `yaml:"lease_period"`
}

// NATSCluster makes the embedded server a node of a JetStream cluster.
type NATSCluster struct {
	// Name is the cluster's name, the same on every node.
	Name string `yaml:"name"`
	// Listen is the route address "host:port" peers connect to.
	Listen string `yaml:"listen"`
	// Routes are every node's route address ("host:port" or
	// "nats-route://host:port"); this node's own may be listed, so every
	// node can share one list.
	Routes []string `yaml:"routes"`
	// Password, when set (usually "${ENV}"), is required from every route
	// and presented to every peer; the same on every node.
	Password string `yaml:"password"`
}

// NATSUser is a static user of the embedded server's client port.
type NATSUser struct {
	// User is the name the client logs in with: letters, digits, _ and -.
	User string `yaml:"user"`
	// Password is the password, in clear (usually "${ENV}") or as a bcrypt
	// hash ($2a$...). Exactly one of Password and Nkey is set.
	Password string `yaml:"password"`
	// Nkey is the user's public nkey (U...); the client signs in with the
	// matching seed.
	Nkey string `yaml:"nkey"`
	// Publish lists the subjects the user may publish to; empty: none.
	Publish []string `yaml:"publish"`
	// Subscribe lists the subjects the user may subscribe to; empty:
	// none besides its inbox _INBOX.<user>.>.
	Subscribe []string `yaml:"subscribe"`
}

// NATSTLS configures TLS to an external NATS server.
type NATSTLS struct {
	// CAFile is a PEM file of the CAs that sign the server's certificate;
	// empty trusts the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile is the client certificate (PEM), for servers that verify
	// clients; KeyFile goes with it.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the client certificate's private key (PEM).
	KeyFile string `yaml:"key_file"`
}

// Enabled reports whether any TLS setting is given.
func (t NATSTLS) Enabled() bool { return t != NATSTLS{} }

// Lane is one priority lane.
type Lane struct {
	// Name identifies the lane in x-relay-lane and in keys' lane lists.
	Name string `yaml:"name"`
	// MaxDepth is the most requests that may be parked on the lane.
	MaxDepth int `yaml:"max_depth"`
	// MaxWait is the longest a synchronous request waits parked.
	MaxWait Duration `yaml:"max_wait"`
	// MinShare is the share of dispatches the lane is guaranteed while
	// backlogged, between 0 and 1.
	MinShare float64 `yaml:"min_share"`
}

// Provider is one upstream API endpoint with one API key and its limits.
type Provider struct {
	// Name identifies the provider in routes, metrics and logs.
	Name string `yaml:"name"`
	// Type is the upstream API format: "anthropic" or "openai".
	Type string `yaml:"type"`
	// BaseURL is the upstream's base URL. For anthropic it has no /v1
	// (https://api.anthropic.com); for openai it includes it
	// (https://api.openai.com/v1).
	BaseURL string `yaml:"base_url"`
	// APIKey is sent upstream in place of the client's relay key.
	APIKey string `yaml:"api_key"`
	// MaxConcurrency bounds in-flight upstream calls; 0 means no limit.
	MaxConcurrency int `yaml:"max_concurrency"`
	// RPM is the requests-per-minute limit; 0 means no limit.
	RPM int `yaml:"rpm"`
	// InputTPM is the input-tokens-per-minute limit; 0 means no limit.
	InputTPM int `yaml:"input_tpm"`
	// OutputTPM is the output-tokens-per-minute limit; 0 means no limit.
	OutputTPM int `yaml:"output_tpm"`
	// Timeout bounds one upstream call, streaming included.
	Timeout Duration `yaml:"timeout"`
	// FirstByteTimeout bounds the wait for the response headers of a
	// streaming call, so a hung upstream is left for another target long
	// before Timeout. A non-streaming call gets its headers only when the
	// whole answer is ready, so Timeout alone bounds it. At most Timeout.
	FirstByteTimeout Duration `yaml:"first_byte_timeout"`
	// MaxIdleConns bounds idle keep-alive connections to the upstream.
	MaxIdleConns int `yaml:"max_idle_conns"`
	// Breaker configures the provider's circuit breaker.
	Breaker Breaker `yaml:"breaker"`
}

// Breaker configures a provider's circuit breaker.
type Breaker struct {
	// FailureRatio opens the breaker when this share of calls in Window fail.
	FailureRatio float64 `yaml:"failure_ratio"`
	// MinRequests is the fewest calls in Window before the ratio counts.
	MinRequests int `yaml:"min_requests"`
	// Window is the rolling window over which failures are counted.
	Window Duration `yaml:"window"`
	// OpenFor is how long the breaker stays open before probing.
	OpenFor Duration `yaml:"open_for"`
}

// Route maps a public model name onto weighted provider targets.
type Route struct {
	// Model is the model name clients send.
	Model string `yaml:"model"`
	// Targets are the providers that serve the route.
	Targets []Target `yaml:"targets"`
	// Fallbacks name other routes tried when no target can serve.
	Fallbacks []string `yaml:"fallbacks"`
}

// Target is one provider serving a route.
type Target struct {
	// Provider names an entry of providers.
	Provider string `yaml:"provider"`
	// Model is the upstream model name; empty keeps the route's model.
	Model string `yaml:"model"`
	// Weight is the target's share of traffic; 0 means 1.
	Weight int `yaml:"weight"`
}

// Key is one relay API key.
type Key struct {
	// Name identifies the key in logs, metrics and NATS subjects.
	Name string `yaml:"name"`
	// Key is the secret itself. Exactly one of Key and KeySHA256 is set.
	Key string `yaml:"key"`
	// KeySHA256 is the hex SHA-256 of the secret, so the file need not
	// hold the secret.
	KeySHA256 string `yaml:"key_sha256"`
	// DefaultLane is the lane used when a request names none.
	DefaultLane string `yaml:"default_lane"`
	// Lanes are the lanes the key may use; empty means all.
	Lanes []string `yaml:"lanes"`
	// Routes are the route models the key may use; "*" means all.
	Routes []string `yaml:"routes"`
	// KeyLimits are the key's own limits, checked together with the
	// providers' before a request is admitted; zero means no limit of
	// that kind.
	KeyLimits `yaml:",inline"`
	// Budget, when set, caps what the key may spend per period.
	Budget *Budget `yaml:"budget"`
}

// KeyLimits are a key's own limits. Zero means "no limit of that kind".
type KeyLimits struct {
	// RPM is the key's requests per minute.
	RPM int `yaml:"rpm" json:"rpm,omitempty"`
	// InputTPM is the key's input tokens per minute.
	InputTPM int `yaml:"input_tpm" json:"input_tpm,omitempty"`
	// OutputTPM is the key's output tokens per minute.
	OutputTPM int `yaml:"output_tpm" json:"output_tpm,omitempty"`
	// MaxConcurrency bounds the key's in-flight upstream calls.
	MaxConcurrency int `yaml:"max_concurrency" json:"max_concurrency,omitempty"`
}

// Budget periods.
const (
	// BudgetDay resets at midnight UTC.
	BudgetDay = "day"
	// BudgetMonth resets at midnight UTC on the first of each month.
	BudgetMonth = "month"
	// BudgetTotal never resets.
	BudgetTotal = "total"
)

// Budget caps a key's spend per period: in USD (priced by the prices
// table) or in tokens (input plus output, cache tokens included).
// Exactly one of USD and Tokens is set.
type Budget struct {
	// USD is the most the key may spend per period, in US dollars.
	USD float64 `yaml:"usd" json:"usd,omitempty"`
	// Tokens is the most tokens the key may use per period.
	Tokens int64 `yaml:"tokens" json:"tokens,omitempty"`
	// Period is day, month or total.
	Period string `yaml:"period" json:"period"`
}

// Price is what one upstream model costs, in USD per million tokens.
type Price struct {
	// Model is the upstream model id, or a glob of them ("claude-sonnet-*");
	// the exact entry wins, then the one with the most literal characters.
	Model string `yaml:"model"`
	// Input is the price of a million input tokens.
	Input float64 `yaml:"input"`
	// Output is the price of a million output tokens.
	Output float64 `yaml:"output"`
	// CacheRead is the price of a million input tokens read from the
	// prompt cache; 0 means Input.
	CacheRead float64 `yaml:"cache_read"`
	// CacheWrite is the price of a million input tokens written to the
	// prompt cache; 0 means Input.
	CacheWrite float64 `yaml:"cache_write"`
	// BatchDiscount is the share taken off for batch items (0.5 for the
	// providers' batch APIs' half price); 0 means none.
	BatchDiscount float64 `yaml:"batch_discount"`
}

// Retry bounds retries. Before the first byte reaches a client, a failed
// upstream call moves to another target or fallback route within these
// bounds.
type Retry struct {
	// MaxAttempts bounds the upstream calls for one request (default 3).
	MaxAttempts int `yaml:"max_attempts"`
	// BudgetRatio is how much retries may add to the request rate across
	// all requests (default 0.2, that is 20%).
	BudgetRatio float64 `yaml:"budget_ratio"`
	// BudgetFloor is the retries per second allowed whatever the request
	// rate (default 3).
	BudgetFloor float64 `yaml:"budget_floor"`
}

// Callbacks configures job result delivery.
type Callbacks struct {
	// SigningSecret signs callbacks per Standard Webhooks (whsec_<base64>).
	// Several secrets separated by spaces all sign each callback (the
	// webhook-signature header then holds one v1 signature per secret), so
	// a secret can be rotated without receivers missing a callback.
	SigningSecret string `yaml:"signing_secret"`
	// AllowPrivateNetworks lets callback URLs reach private addresses.
	AllowPrivateNetworks bool `yaml:"allow_private_networks"`
	// RetrySchedule holds the delays between a callback's delivery
	// attempts, each jittered by ±10%: the first attempt is made when the
	// job finishes, attempt n+1 RetrySchedule[n-1] after attempt n, and a
	// callback still undelivered after the last is a dead letter (default
	// 5s, 5m, 30m, 2h, 5h, 10h: 7 attempts over about 18 hours).
	RetrySchedule []Duration `yaml:"retry_schedule"`
	// MaxAttempts is deprecated (the schedule says it): when set, the
	// schedule is cut to MaxAttempts-1 delays, or its last delay repeated
	// up to that many.
	MaxAttempts *int `yaml:"max_attempts"`
}

// Schedule returns the delays between delivery attempts in effect:
// RetrySchedule, fitted to the deprecated MaxAttempts when that is set.
func (c Callbacks) Schedule() []time.Duration {
	out := make([]time.Duration, 0, len(c.RetrySchedule))
	for _, d := range c.RetrySchedule {
		out = append(out, d.Std())
	}
	if c.MaxAttempts == nil || *c.MaxAttempts < 1 {
		return out
	}
	n := *c.MaxAttempts - 1
	if n <= len(out) {
		return out[:n]
	}
	for len(out) > 0 && len(out) < n {
		out = append(out, out[len(out)-1])
	}
	return out
}

// SigningSecrets returns the callback signing secrets, in order.
func (c Callbacks) SigningSecrets() []string { return strings.Fields(c.SigningSecret) }

// Jobs configures asynchronous jobs.
type Jobs struct {
	// ResultTTL is how long finished jobs and their results are kept.
	ResultTTL Duration `yaml:"result_ttl"`
	// Workers bounds the jobs taken from the queue at once: running, or
	// waiting on their lane for capacity (default 128).
	Workers int `yaml:"workers"`
}

// Tracing configures OpenTelemetry traces, exported over OTLP/HTTP.
type Tracing struct {
	// OTLPEndpoint is the OTLP/HTTP traces URL, e.g.
	// http://127.0.0.1:4318/v1/traces; "" turns tracing off.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRatio is the share of new traces recorded, from 0 to 1; a
	// request that arrives with a traceparent follows its sampled flag.
	SampleRatio float64 `yaml:"sample_ratio"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
}

// Admin configures the admin endpoints served on admin_listen.
type Admin struct {
	// Token is the bearer token the admin endpoints (the status page
	// included) require; "" leaves them refused (pprof excepted).
	Token string `yaml:"token"`
}

// Simulator configures the in-process simulated upstream of the demo.
type Simulator struct {
	// Listen is the simulator's address; it must be a loopback address.
	Listen string `yaml:"listen"`
	// Latency is the simulated time to first byte.
	Latency Duration `yaml:"latency"`
	// TokenInterval is the pause between streamed tokens.
	TokenInterval Duration `yaml:"token_interval"`
	// Echo makes the simulator answer from the prompt: it echoes the last
	// user text, calls an offered tool when asked, and reports tool results
	// (see package workers/simupstream). Default false: fixed "tok0 tok1 ..."
	// replies of 24 tokens.
	Echo bool `yaml:"echo"`
}

// Duration is a time.Duration written in YAML as a Go duration ("30s").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
