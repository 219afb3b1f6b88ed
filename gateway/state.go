package gateway

// This file owns what the gateway serves (Config, swapped in whole on
// reload), its prepared form (state), authentication, and the
// interfaces of its collaborators (Dispatcher, Parker).

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/pricing"
	"github.com/relaygw/relay/workers/wire"
)

// Dispatcher serves requests upstream. *workers.Router implements it.
type Dispatcher interface {
	// Admit takes capacity for req without calling upstream, or returns a
	// *workers.Error saying why there is none.
	Admit(req *workers.Request) (*workers.Grant, error)
	// Do serves req, with grant (may be nil) for the first call, and
	// returns the answer in the client's format.
	Do(ctx context.Context, req *workers.Request, grant *workers.Grant) (*workers.Response, error)
	// Route returns the name of the route serving model (a pattern route's
	// pattern), and whether one does.
	Route(model string) (string, bool)
	// ListModels returns the models served, sorted by id: exact routes, and
	// what pattern routes' upstreams list, as known when ctx ends.
	ListModels(ctx context.Context) []workers.ModelInfo
}

// Parker parks requests no provider can take yet. *lanes.Set implements it.
type Parker interface {
	// Park queues w until capacity is granted to it, or its wait ends;
	// the Ticket's Wait returns the outcome.
	Park(ctx context.Context, w lanes.Waiter) (*lanes.Ticket, error)
	// Parked reports whether requests for route are parked.
	Parked(route string) bool
	// RetryAfter estimates when a client refused by lane should return.
	RetryAfter(lane string) time.Duration
}

// Key is one relay API key as the gateway sees it.
type Key struct {
	// Name identifies the key in logs and metrics.
	Name string
	// SHA256 is the SHA-256 of the secret.
	SHA256 [32]byte
	// DefaultLane is used when a request names no lane.
	DefaultLane string
	// Lanes the key may use.
	Lanes []string
	// Routes the key may use, by route name (a pattern route's pattern,
	// as written); "*" allows all. A model is allowed when the route
	// serving it is.
	Routes []string
	// Limits are the key's own limits (zero: none of that kind).
	Limits configs.KeyLimits
	// Budget caps the key's spend per period; nil when it has none.
	Budget *configs.Budget
	// Grace is an earlier secret still accepted until its expiry (the
	// grace period of a rotation); nil when there is none. Only keys made
	// through the admin API have one.
	Grace *GraceSecret
}

// GraceSecret is a key's previous secret, valid until Until.
type GraceSecret struct {
	// SHA256 is the SHA-256 of the previous secret.
	SHA256 [32]byte
	// Until is when the previous secret stops working.
	Until time.Time
}

// Lane is one priority lane as the gateway sees it.
type Lane struct {
	// Name identifies the lane.
	Name string
	// MaxWait is the longest a synchronous request may wait parked.
	MaxWait time.Duration
}

// Config is one immutable snapshot of what the gateway serves. A reload
// builds a new Config and swaps it in with SetConfig; requests in flight
// keep the snapshot they started with.
type Config struct {
	// Keys are the relay API keys.
	Keys []Key
	// Lanes are the priority lanes, highest first.
	Lanes []Lane
	// Dispatcher serves requests upstream.
	Dispatcher Dispatcher
	// MaxBodyBytes bounds request bodies (default 32 MiB).
	MaxBodyBytes int64
	// MaxJSONDepth bounds the nesting of request JSON on every endpoint:
	// deeper bodies get 400 before any parser sees them (max_json_depth;
	// 0 means wire.FallbackMaxDepth).
	MaxJSONDepth int
	// BodyMemoryBytes bounds the bytes of request bodies held at once,
	// charged as they arrive (default 512 MiB); past it a request waits
	// briefly for room, then gets 503 with retry-after.
	BodyMemoryBytes int64
	// MaxBatchRequests bounds the requests of one message batch (0:
	// jobs.DefaultMaxBatchRequests, Anthropic's 100,000). It should match
	// the job service's own jobs.Options.MaxBatchRequests.
	MaxBatchRequests int
	// MaxBatchBytes bounds a message batch creation body (0:
	// MaxBatchBytes, Anthropic's 256 MB).
	MaxBatchBytes int64
	// Prices turn metered usage into cost and price upstream models for
	// USD budgets; nil prices nothing.
	Prices *pricing.Table
}

// state is a Config prepared for fast lookups.
type state struct {
	// keys are the configuration's keys by the SHA-256 of their secret;
	// names holds their names, which shadow runtime keys of the same name.
	keys  map[[32]byte]*key
	names map[string]bool
	// runtime is the Server's table of keys made through the admin API,
	// shared by every state (it changes without a reload).
	runtime      *atomic.Pointer[keyTable]
	lanes        map[string]Lane
	dispatcher   Dispatcher
	maxBodyBytes int64
	maxJSONDepth int // > 0
	// bodyMemoryBytes is the body memory budget's size.
	bodyMemoryBytes int64
	// maxBatchRequests and maxBatchBytes bound a message batch (> 0).
	maxBatchRequests int
	maxBatchBytes    int64
}

type key struct {
	Key
	lanes     map[string]bool
	allRoutes bool
	routes    map[string]bool
}

const defaultMaxBodyBytes = 32 << 20

func newState(c Config, runtime *atomic.Pointer[keyTable]) *state {
	st := &state{
		keys:             make(map[[32]byte]*key, len(c.Keys)),
		names:            make(map[string]bool, len(c.Keys)),
		runtime:          runtime,
		lanes:            make(map[string]Lane, len(c.Lanes)),
		dispatcher:       c.Dispatcher,
		maxBodyBytes:     positiveOr(c.MaxBodyBytes, defaultMaxBodyBytes),
		maxJSONDepth:     positiveOr(c.MaxJSONDepth, wire.FallbackMaxDepth),
		bodyMemoryBytes:  positiveOr(c.BodyMemoryBytes, defaultBodyMemoryBytes),
		maxBatchRequests: positiveOr(c.MaxBatchRequests, jobs.DefaultMaxBatchRequests),
		maxBatchBytes:    positiveOr(c.MaxBatchBytes, MaxBatchBytes),
	}
	for _, l := range c.Lanes {
		st.lanes[l.Name] = l
	}
	for _, k := range c.Keys {
		st.keys[k.SHA256] = newKey(k)
		st.names[k.Name] = true
	}
	return st
}

// newKey prepares k for lookups.
func newKey(k Key) *key {
	kk := &key{Key: k, lanes: map[string]bool{}, routes: map[string]bool{}}
	for _, l := range k.Lanes {
		kk.lanes[l] = true
	}
	for _, r := range k.Routes {
		if r == "*" {
			kk.allRoutes = true
		}
		kk.routes[r] = true
	}
	return kk
}

// keyTable holds the keys made through the admin API, by the SHA-256 of
// their current secret and of a rotated one still in its grace period.
type keyTable struct {
	bySum  map[[32]byte]tableEntry
	byName map[string]Key // runtime keys only (RuntimeKey)
}

// tableEntry is one accepted secret: its key, and when it stops working
// (zero: never; set for a rotated secret's grace period).
type tableEntry struct {
	key   *key
	until time.Time
}

// newKeyTable indexes keys by secret.
func newKeyTable(keys []Key) *keyTable {
	t := &keyTable{bySum: make(map[[32]byte]tableEntry, len(keys))}
	for _, k := range keys {
		kk := newKey(k)
		if g := k.Grace; g != nil {
			t.bySum[g.SHA256] = tableEntry{key: kk, until: g.Until}
		}
		t.bySum[k.SHA256] = tableEntry{key: kk} // the current secret wins a clash
	}
	return t
}

// SetRuntimeKeys replaces the keys made at run time (through the admin
// API; see package gateway/keystore), which work next to the
// configuration's and survive its reloads. A runtime key with the name of
// a configuration key is ignored: the file wins. Requests already
// authenticated keep the key they started with.
func (s *Server) SetRuntimeKeys(keys []Key) {
	t := newKeyTable(keys)
	t.byName = make(map[string]Key, len(keys))
	for _, k := range keys {
		t.byName[k.Name] = k
	}
	s.runtime.Store(t)
}

// RuntimeKey returns the key made at run time called name (for
// Quotas.Lookup: jobs carry only their key's name).
func (s *Server) RuntimeKey(name string) (Key, bool) {
	t := s.runtime.Load()
	if t == nil {
		return Key{}, false
	}
	k, ok := t.byName[name]
	return k, ok
}

// positiveOr returns v, or def when v is not positive (unset).
func positiveOr[T int | int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// authenticate returns the key whose secret the request presents, from
// x-api-key or Authorization: Bearer: a configuration key, else a runtime
// key (a rotated secret only within its grace period). Keys are found by
// the SHA-256 of the secret in a map, so the cost does not grow with the
// number of keys, and what timing could reveal is about a digest, not
// about the secret; the digest found is compared again in constant time.
func (st *state) authenticate(r *http.Request) (*key, *apiError) {
	secret := r.Header.Get("X-Api-Key")
	if secret == "" {
		auth := r.Header.Get("Authorization")
		if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
			secret = strings.TrimSpace(auth[7:])
		}
	}
	if secret == "" {
		return nil, errAuth("missing API key: send x-api-key or Authorization: Bearer")
	}
	sum := sha256.Sum256([]byte(secret))
	if k := st.lookup(sum, time.Now()); k != nil {
		return k, nil
	}
	return nil, errAuth("invalid API key")
}

// lookup returns the key whose secret has the digest sum at now, or nil.
func (st *state) lookup(sum [32]byte, now time.Time) *key {
	if k, ok := st.keys[sum]; ok && subtle.ConstantTimeCompare(sum[:], k.SHA256[:]) == 1 {
		return k
	}
	if st.runtime == nil {
		return nil
	}
	t := st.runtime.Load()
	if t == nil {
		return nil
	}
	e, ok := t.bySum[sum]
	if !ok || st.names[e.key.Name] || (!e.until.IsZero() && !now.Before(e.until)) {
		return nil
	}
	want := e.key.SHA256
	if g := e.key.Grace; g != nil && !e.until.IsZero() {
		want = g.SHA256
	}
	if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
		return nil
	}
	return e.key
}

// mayUseRoute reports whether k may use the route named route.
func (k *key) mayUseRoute(route string) bool { return k.allRoutes || k.routes[route] }
