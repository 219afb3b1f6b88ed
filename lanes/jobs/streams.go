package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The JetStream streams, buckets and consumers the package uses, and how
// they are declared (Open, RepairStore) and named (subjects).

// Names of the JetStream streams, buckets and consumers (see the package
// doc).
const (
	// JobsStream holds accepted jobs (WorkQueue).
	JobsStream = "RELAY_JOBS"
	// StateBucket holds job records.
	StateBucket = "RELAY_JOB_STATE"
	// IdemBucket maps idempotency keys to job ids.
	IdemBucket = "RELAY_JOB_IDEM"
	// ResultsStream holds finished jobs for NATS consumers.
	ResultsStream = "RELAY_RESULTS"
	// CallbacksStream holds pending callback deliveries (WorkQueue).
	CallbacksStream = "RELAY_CALLBACKS"
	// ExecutorConsumer is the durable consumer on JobsStream.
	ExecutorConsumer = "relay-jobs"
	// CallbackConsumer is the durable consumer on CallbacksStream.
	CallbackConsumer = "relay-callbacks"

	jobsSubjectPrefix    = "relay.jobs."
	resultsSubjectPrefix = "relay.results."
	callbacksSubject     = "relay.callbacks.pending"
)

// declare creates or converges the streams, buckets and consumers (by
// package assets' rule: what exists is never made less safe), and
// returns the state and idempotency buckets. Open and RepairStore use it.
func (s *Service) declare(ctx context.Context) (state, idem jetstream.KeyValue, err error) {
	dup := min(s.opts.ResultTTL, 24*time.Hour)
	streams := []jetstream.StreamConfig{
		{Name: JobsStream, Subjects: []string{jobsSubjectPrefix + "*"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Duplicates: dup, Description: "relay: accepted asynchronous jobs",
			AllowDirect: true}, // a queued job's position (position.go)
		{Name: ResultsStream, Subjects: []string{resultsSubjectPrefix + ">"}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, MaxAge: s.opts.ResultTTL, Duplicates: dup, Description: "relay: finished jobs"},
		{Name: CallbacksStream, Subjects: []string{callbacksSubject}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Duplicates: dup, Description: "relay: pending callback deliveries"},
	}
	for _, sc := range streams {
		if _, err := s.assets.Stream(ctx, sc); err != nil {
			return nil, nil, fmt.Errorf("jobs: declare stream %s: %w", sc.Name, err)
		}
	}
	// No direct gets: a record read must see the writes acknowledged
	// before it, which only the bucket's leader is sure to have.
	state, err = s.assets.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: StateBucket, TTL: s.opts.ResultTTL,
		Storage: jetstream.FileStorage, History: 1, Description: "relay: job records"}, false)
	if err != nil {
		return nil, nil, fmt.Errorf("jobs: declare bucket %s: %w", StateBucket, err)
	}
	idem, err = s.assets.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: IdemBucket, TTL: s.opts.ResultTTL,
		Storage: jetstream.FileStorage, History: 1, Description: "relay: job idempotency keys"}, false)
	if err != nil {
		return nil, nil, fmt.Errorf("jobs: declare bucket %s: %w", IdemBucket, err)
	}
	consumers := []struct {
		stream string
		cfg    jetstream.ConsumerConfig
	}{
		{JobsStream, jetstream.ConsumerConfig{Durable: ExecutorConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: s.opts.AckWait, MaxDeliver: -1, MaxAckPending: -1, Description: "relay: job executor"}},
		{CallbacksStream, jetstream.ConsumerConfig{Durable: CallbackConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: s.opts.CallbackTimeout + 20*time.Second, MaxDeliver: -1, MaxAckPending: -1, Description: "relay: callback deliveries"}},
	}
	for _, c := range consumers {
		if _, err := s.assets.Consumer(ctx, c.stream, c.cfg); err != nil {
			return nil, nil, fmt.Errorf("jobs: declare consumer %s: %w", c.cfg.Durable, err)
		}
	}
	return state, idem, nil
}

// declareBatches creates or updates BatchesBucket. Its TTL covers a
// batch's whole life: the window, then result_ttl for the results.
func (s *Service) declareBatches(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := s.assets.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: BatchesBucket,
		TTL: s.opts.BatchWindow + s.opts.ResultTTL, Storage: jetstream.FileStorage, History: 1,
		Description: "relay: message batches"}, false)
	if err != nil {
		return nil, fmt.Errorf("jobs: declare bucket %s: %w", BatchesBucket, err)
	}
	return kv, nil
}

// token makes s usable as one subject token: characters other than
// letters, digits, '-' and '_' become '_'.
func token(s string) string {
	if s == "" {
		return "_"
	}
	ok := true
	for i := 0; i < len(s); i++ {
		if !tokenChar(s[i]) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i := range b {
		if !tokenChar(b[i]) {
			b[i] = '_'
		}
	}
	return string(b)
}

func tokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// ResultSubject returns the subject a job's result is published on.
func ResultSubject(keyName, id string) string {
	return resultsSubjectPrefix + token(keyName) + "." + id
}
