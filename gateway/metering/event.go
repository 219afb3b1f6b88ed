package metering

import (
	"crypto/rand"
	"encoding/base32"
	"time"

	"github.com/relaygw/relay/workers/wire"
)

// Modes of an Event: how the call was asked for.
const (
	// ModeSync is a synchronous request (POST /v1/messages or
	// /v1/chat/completions).
	ModeSync = "sync"
	// ModeJob is an asynchronous job (POST /v1/jobs).
	ModeJob = "job"
	// ModeBatch is an item of a message batch.
	ModeBatch = "batch"
)

// Tokens are a call's tokens by kind; the kinds are disjoint.
type Tokens struct {
	// Input is the input that neither read nor wrote the prompt cache.
	Input int64 `json:"input"`
	// Output is the output (completion) tokens.
	Output int64 `json:"output"`
	// CacheRead is the input read from the prompt cache.
	CacheRead int64 `json:"cache_read"`
	// CacheWrite is the input written to the prompt cache.
	CacheWrite int64 `json:"cache_write"`
}

// TokensOf splits u into disjoint kinds.
func TokensOf(u wire.Usage) Tokens {
	return Tokens{Input: int64(u.Uncached()), Output: int64(u.Output),
		CacheRead: int64(u.CacheRead), CacheWrite: int64(u.CacheWrite)}
}

// Total is every token counted.
func (t Tokens) Total() int64 { return t.Input + t.Output + t.CacheRead + t.CacheWrite }

// Call is what the gateway knows of one finished upstream call; Record
// turns it into an Event.
type Call struct {
	// Mode is ModeSync, ModeJob or ModeBatch.
	Mode string
	// RequestID is the request's id (for jobs: the submitting request's).
	RequestID string
	// JobID and BatchID name the job and its batch, if any.
	JobID, BatchID string
	// Key is the key's name.
	Key string
	// Route is the route that served the call (a pattern route's pattern).
	Route string
	// Provider names the provider that answered.
	Provider string
	// Model is the upstream model.
	Model string
	// Usage is what the upstream reported.
	Usage wire.Usage
	// Time is when the call finished; zero means now.
	Time time.Time
}

// Event is one usage record, as published on NATS (JSON).
type Event struct {
	// ID is unique per event ("usage_" and 26 base32 characters); it is
	// the message's Nats-Msg-Id.
	ID string `json:"id"`
	// Time is when the call finished, UTC.
	Time time.Time `json:"time"`
	// Mode is sync, job or batch.
	Mode string `json:"mode"`
	// RequestID is the id of the request (for jobs and batch items: of
	// the request that submitted them).
	RequestID string `json:"request_id,omitempty"`
	// JobID names the job, for jobs and batch items.
	JobID string `json:"job_id,omitempty"`
	// BatchID names the message batch, for batch items.
	BatchID string `json:"batch_id,omitempty"`
	// Key is the key's name (never its secret).
	Key string `json:"key"`
	// Route is the route that served it (a pattern route's pattern).
	Route string `json:"route"`
	// Provider names the provider that answered.
	Provider string `json:"provider"`
	// Model is the upstream model.
	Model string `json:"model"`
	// Tokens are the tokens used, by kind.
	Tokens Tokens `json:"tokens"`
	// CostUSD is the cost at the prices table's rates (batch items with
	// the batch discount); 0 when the model is not priced.
	CostUSD float64 `json:"cost_usd"`
	// Priced reports whether the prices table priced the model.
	Priced bool `json:"priced"`
	// UsageKnown reports whether the upstream stated its usage; when not,
	// the tokens are 0.
	UsageKnown bool `json:"usage_known"`
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newEventID returns a unique event id: 128 random bits.
func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "usage_" + idEncoding.EncodeToString(b[:])
}
