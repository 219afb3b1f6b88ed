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
	// Prices price upstream models for USD budgets (nil prices nothing).
	Prices *pricing.Table
}

// state is a Config prepared for fast lookups.
type state struct {
	keys         []*key
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

func newState(c Config) *state {
	st := &state{
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
		st.keys = append(st.keys, kk)
	}
	return st
}

// positiveOr returns v, or def when v is not positive (unset).
func positiveOr[T int | int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// authenticate returns the key whose secret the request presents, from
// x-api-key or Authorization: Bearer. Every configured key is compared, in
// constant time over SHA-256 digests, so timing reveals nothing about which
// key, or how much of one, matched.
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
	var found *key
	for _, k := range st.keys {
		if subtle.ConstantTimeCompare(sum[:], k.SHA256[:]) == 1 {
			found = k
		}
	}
	if found == nil {
		return nil, errAuth("invalid API key")
	}
	return found, nil
}

// mayUseRoute reports whether k may use the route named route.
func (k *key) mayUseRoute(route string) bool { return k.allRoutes || k.routes[route] }
