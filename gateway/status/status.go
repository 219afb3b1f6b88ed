// Package status serves the operator's status page on admin_listen: GET
// /status (server-rendered HTML, refreshed by a small script) and GET
// /status.json (the same data), behind the admin token (see auth.go).
//
// The page reads its data through small read-only interfaces that the
// owners implement (lanes.Set, the providers' actors, the router, the jobs
// service, JetStream) and, for the figures "over the last minute", from
// the relay's own Prometheus registry, which a Window samples every few
// seconds. Sections whose source is absent are left out: the granted
// share shows only when the relay is clustered, and the keys' usage today
// only when metering (the usage counters) exists.
package status

import (
	"context"
	"errors"
	"time"

	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
)

// LaneSource reads the lanes (lanes.Set implements it).
type LaneSource interface {
	Snapshot() []lanes.LaneState
}

// WaitEstimator estimates how long a new request would wait parked on a
// lane. When the lane source implements it, the page shows its estimate;
// otherwise the page divides the depth by the recent dispatch rate.
type WaitEstimator interface {
	EstimateWait(lane string) time.Duration
}

// ProviderSource reads the providers' admission state.
type ProviderSource interface {
	ProviderStates() []actor.State
}

// RouteSource describes the routes of the running configuration.
type RouteSource interface {
	RouteInfos() []workers.RouteInfo
}

// JobSource reads the jobs' queues (jobs.Service implements it).
type JobSource interface {
	Stats(ctx context.Context) (jobs.Stats, error)
}

// StreamSource lists the NATS streams (NewStreamSource adapts JetStream).
type StreamSource interface {
	Streams(ctx context.Context) ([]Stream, error)
}

// ShareSource reports, per provider, the share of its limits this relay
// is granted when clustered (a hook: nil until clustering provides it).
type ShareSource interface {
	GrantedShares() map[string]float64
}

// SpendSource reports requests, tokens and spend per key on one UTC day
// (cmd/relay adapts the metering counters, as GET /admin/usage reads
// them).
type SpendSource interface {
	KeySpend(ctx context.Context, day time.Time) ([]KeySpend, error)
}

// ErrNoMetering is what a SpendSource returns when the relay keeps no
// usage counters: the keys section is then left out, as without a source.
var ErrNoMetering = errors.New("metering is off")

// Sources are what a Collector reads. Every field may be nil: its section
// is then left out of the report.
type Sources struct {
	Lanes     LaneSource
	Providers ProviderSource
	Routes    RouteSource
	Jobs      JobSource
	Streams   StreamSource
	Shares    ShareSource
	Spend     SpendSource
	// Window supplies the figures over the last minute (lane waits, route
	// error rates, dead letters).
	Window *Window
	// Ready reports why the relay is not ready, or nil.
	Ready func() error
	// Version is the relay's version string.
	Version string
}

// Report is everything the status page shows; /status.json serves it.
type Report struct {
	GeneratedAt time.Time `json:"generated_at"`
	Version     string    `json:"version,omitempty"`
	StartedAt   time.Time `json:"started_at"`
	Ready       bool      `json:"ready"`
	NotReady    string    `json:"not_ready,omitempty"`
	// WindowSeconds is the span the "last minute" figures cover: 60, or
	// less shortly after start.
	WindowSeconds float64    `json:"window_seconds"`
	Lanes         []Lane     `json:"lanes"`
	Providers     []Provider `json:"providers"`
	Routes        []Route    `json:"routes"`
	Jobs          *Jobs      `json:"jobs,omitempty"`
	NATS          *NATS      `json:"nats,omitempty"`
	// Keys is the keys' usage today; nil when metering is off.
	Keys *Keys `json:"keys,omitempty"`
	// Problems lists sections that could not be read.
	Problems []string `json:"problems,omitempty"`
}

// Lane is one lane's row.
type Lane struct {
	Name     string  `json:"name"`
	Depth    int     `json:"depth"`
	MaxDepth int     `json:"max_depth"`
	MaxWait  float64 `json:"max_wait_seconds"`
	// WaitP50 and WaitP99 are the waits of requests dispatched in the
	// window, in seconds; nil when none was.
	WaitP50    *float64 `json:"wait_p50_seconds"`
	WaitP99    *float64 `json:"wait_p99_seconds"`
	Dispatched uint64   `json:"dispatched"`
	// EstWait is the estimated wait of a request parked now, in seconds,
	// and EstBasis how it was estimated.
	EstWait  float64 `json:"est_wait_seconds"`
	EstBasis string  `json:"est_basis"`
}

// Provider is one provider's row.
type Provider struct {
	Name    string `json:"name"`
	Breaker string `json:"breaker"`
	// HalfOpenAt is when an open breaker lets a probe through.
	HalfOpenAt     *time.Time `json:"half_open_at,omitempty"`
	InFlight       int        `json:"in_flight"`
	MaxConcurrency int        `json:"max_concurrency"`
	Requests       Bucket     `json:"requests"`
	InputTokens    Bucket     `json:"input_tokens"`
	OutputTokens   Bucket     `json:"output_tokens"`
	// CoolingUntil is the end of a cool-down after upstream 429s.
	CoolingUntil *time.Time `json:"cooling_until,omitempty"`
	// KeySuspectUntil is when the provider key, refused upstream, is
	// tried again.
	KeySuspectUntil *time.Time `json:"key_suspect_until,omitempty"`
	// GrantedShare is this relay's share of the limits when clustered.
	GrantedShare *float64 `json:"granted_share,omitempty"`
}

// Bucket is one token bucket: per-minute limit (0 = none) and what it
// could hand out now (nil when unlimited).
type Bucket struct {
	PerMinute   int        `json:"per_minute"`
	Available   *float64   `json:"available,omitempty"`
	CappedUntil *time.Time `json:"capped_until,omitempty"`
}

// Route is one route's row.
type Route struct {
	Model     string   `json:"model"`
	Targets   []Target `json:"targets"`
	Fallbacks []string `json:"fallbacks,omitempty"`
	// Requests and Errors count answers in the window; errors are 5xx
	// and 429 answers. ErrorRate is nil without requests.
	Requests  uint64   `json:"requests"`
	Errors    uint64   `json:"errors"`
	ErrorRate *float64 `json:"error_rate"`
}

// Target is one target of a route.
type Target struct {
	Provider string `json:"provider"`
	Model    string `json:"model"`
	Weight   int    `json:"weight"`
}

// Jobs are the asynchronous jobs' and batches' queues (batch items are
// jobs).
type Jobs struct {
	Queued           uint64 `json:"queued"`
	Running          int    `json:"running"`
	CallbacksPending uint64 `json:"callbacks_pending"`
	// DeadLetters are the callbacks dead-lettered now (given up and not
	// re-sent, of jobs not yet expired), read from the job store: the
	// relay_callbacks_dead_letters gauge, the same on every relay and
	// after a restart.
	DeadLetters uint64 `json:"dead_letters"`
	// JobsGivenUp counts, on this relay since it started, jobs given up
	// after too many interrupted runs; CallbacksGivenUp the callbacks
	// given up (dead-lettered) here.
	JobsGivenUp      uint64 `json:"jobs_given_up_since_start"`
	CallbacksGivenUp uint64 `json:"callbacks_given_up_since_start"`
}

// NATS is the JetStream view.
type NATS struct {
	Streams []Stream `json:"streams"`
	// Peers are the cluster's servers as the streams' replica sets see
	// them (absent when not clustered).
	Peers []ClusterPeer `json:"peers,omitempty"`
}

// Peer is one replica of a clustered stream, as its leader sees it.
type Peer struct {
	Name string `json:"name"`
	// Current is whether it has caught up with the leader.
	Current bool `json:"current"`
	// Offline is whether the leader cannot reach it: NATS flags it
	// offline, or it is not current and was not heard from for over 10 s.
	Offline bool `json:"offline,omitempty"`
	// Lag is how many operations it is behind.
	Lag uint64 `json:"lag,omitempty"`
	// ActiveSeconds is how long ago the leader last heard from it.
	ActiveSeconds float64 `json:"active_seconds"`
}

// ClusterPeer is one server of the cluster, summed over the streams: the
// streams it leads, and its worst state as a replica.
type ClusterPeer struct {
	Name string `json:"name"`
	// Leads counts the streams it leads.
	Leads int `json:"leads"`
	// State is "current", "lagging" (behind on some stream) or
	// "offline" (unreachable from some stream's leader).
	State string `json:"state"`
	// Lag is the most operations it is behind on any stream.
	Lag uint64 `json:"lag,omitempty"`
	// ActiveSeconds is the longest a stream leader has not heard from it.
	ActiveSeconds float64 `json:"active_seconds"`
}

// Stream is one JetStream stream.
type Stream struct {
	Name      string `json:"name"`
	Messages  uint64 `json:"messages"`
	Bytes     uint64 `json:"bytes"`
	Consumers int    `json:"consumers"`
	Replicas  int    `json:"replicas"`
	// Leader and Peers (the other replicas) are set when the stream is
	// clustered.
	Leader string `json:"leader,omitempty"`
	Peers  []Peer `json:"peers,omitempty"`
}

// Keys are the keys' usage on one UTC day, from the metering counters.
type Keys struct {
	// Day is the UTC day, YYYY-MM-DD.
	Day string `json:"day"`
	// Rows are the keys with usage that day, highest spend first.
	Rows []KeySpend `json:"rows"`
	// Error says why the counters could not be read (Rows is then empty).
	Error string `json:"error,omitempty"`
}

// KeySpend is one key's usage on one day. The token kinds are disjoint,
// as in the usage API.
type KeySpend struct {
	Key      string `json:"key"`
	Requests uint64 `json:"requests"`
	// InputTokens is input that neither read nor wrote the prompt cache.
	InputTokens      uint64  `json:"input_tokens"`
	CacheReadTokens  uint64  `json:"cache_read_tokens"`
	CacheWriteTokens uint64  `json:"cache_write_tokens"`
	OutputTokens     uint64  `json:"output_tokens"`
	SpendUSD         float64 `json:"spend_usd"`
}
