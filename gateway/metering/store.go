package metering

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/lanes/assets"
)

// Names of the JetStream assets the package declares.
const (
	// StreamName is the stream of usage events.
	StreamName = "RELAY_USAGE"
	// SubjectPrefix starts every event's subject: relay.usage.<key>.
	SubjectPrefix = "relay.usage."
	// CountersBucket is the KV bucket of per-key, per-day counters.
	CountersBucket = "RELAY_USAGE_COUNTERS"
	// duplicates is RELAY_USAGE's duplicates window: a publish retried
	// within it (the publisher retries for at most retryFor) is stored
	// once.
	duplicates = 10 * time.Minute
)

// StoreOptions configure OpenStore.
type StoreOptions struct {
	// Retention is how long events stay on RELAY_USAGE (usage.retention).
	Retention time.Duration
	// CounterRetention is how long a day's counters are kept after their
	// last update; 0 keeps them forever (usage.counter_retention).
	CounterRetention time.Duration
}

// Store is where a Meter publishes events and keeps counters: the
// RELAY_USAGE stream and the RELAY_USAGE_COUNTERS bucket.
type Store struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
	// publish stores one message; tests wrap it to lose acknowledgements.
	publish func(ctx context.Context, msg *nats.Msg) error
}

// OpenStore declares the stream and the bucket through decl (replicas
// from nats.replicas; retention raised, never lowered, across relays) and
// returns the Store over them.
func OpenStore(ctx context.Context, js jetstream.JetStream, decl *assets.Declarer, o StoreOptions) (*Store, error) {
	if o.Retention <= 0 {
		return nil, fmt.Errorf("metering: retention must be > 0")
	}
	if _, err := decl.Stream(ctx, jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{SubjectPrefix + "*"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, MaxAge: o.Retention, Duplicates: min(duplicates, o.Retention),
		Description: "relay: usage of every request, job and batch item (relay.usage.<key>)",
	}); err != nil {
		return nil, fmt.Errorf("metering: declare %s: %w", StreamName, err)
	}
	kv, err := decl.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: CountersBucket, History: 1, TTL: o.CounterRetention, Storage: jetstream.FileStorage,
		Description: "relay: usage counters per key, UTC day and upstream model",
	}, false)
	if err != nil {
		return nil, fmt.Errorf("metering: declare %s: %w", CountersBucket, err)
	}
	s := &Store{js: js, kv: kv}
	s.publish = func(ctx context.Context, msg *nats.Msg) error {
		_, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(StreamName))
		return err
	}
	return s, nil
}

// Subject returns the subject of key's events.
func Subject(key string) string { return SubjectPrefix + token(key) }

// token makes s one subject token (and one KV key token): key names are
// validated to be one already; anything else is replaced by '_'.
func token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}
