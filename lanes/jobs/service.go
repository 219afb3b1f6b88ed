package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/workers/callbacks"
)

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

// Defaults for Options.
const (
	// DefaultResultTTL is jobs.result_ttl's default.
	DefaultResultTTL = 72 * time.Hour
	// DefaultWorkers bounds the jobs run at once.
	DefaultWorkers = 64
	// DefaultCallbackWorkers bounds the callback deliveries at once.
	DefaultCallbackWorkers = 16
	// DefaultAckWait is the executor's ack wait: how long a job whose
	// run was lost (a crash) waits before it runs again. Running jobs
	// send in-progress heartbeats every third of it.
	DefaultAckWait = 10 * time.Second
	// DefaultMaxInterrupted is the lost runs before a dead letter.
	DefaultMaxInterrupted = 5
	// DefaultLaneMaxWait is the retry patience of a lane not in Options.Lanes.
	DefaultLaneMaxWait = 24 * time.Hour
	// DefaultRetryBase is the first retry backoff ceiling.
	DefaultRetryBase = time.Second
	// DefaultRetryMax caps the retry backoff.
	DefaultRetryMax = 5 * time.Minute
)

// Options configure a Service. Zero fields take the defaults.
type Options struct {
	// ResultTTL is how long job records, idempotency keys and results are
	// kept (jobs.result_ttl); default DefaultResultTTL.
	ResultTTL time.Duration
	// Lanes maps lane names to their max_wait: how long after creation a
	// job keeps being retried when no provider can serve it. Lanes not
	// named get DefaultLaneMaxWait.
	Lanes map[string]time.Duration
	// Workers bounds the jobs run at once (default 64).
	Workers int
	// CallbackWorkers bounds the callback deliveries at once (default 16).
	CallbackWorkers int
	// CallbackMaxAttempts is callbacks.max_attempts (default 10).
	CallbackMaxAttempts int
	// CallbackBaseBackoff is the callback backoff base (default 1s).
	CallbackBaseBackoff time.Duration
	// CallbackMaxBackoff caps the callback backoff (default 10m).
	CallbackMaxBackoff time.Duration
	// Signer signs callbacks. It is required: callbacks are always signed.
	Signer *callbacks.Signer
	// AllowPrivate is callbacks.allow_private_networks: callback URLs may
	// reach loopback and private addresses.
	AllowPrivate bool
	// CallbackClient, if set, replaces the callback HTTP client (tests
	// with a TLS receiver); nil is callbacks.NewClient with AllowPrivate.
	CallbackClient *http.Client
	// Resolver resolves callback hosts for CheckCallbackURL; nil is the
	// system resolver.
	Resolver callbacks.Resolver
	// AckWait is the executor's ack wait; in-progress heartbeats go every
	// third of it while a job runs (default 10s).
	AckWait time.Duration
	// MaxInterrupted is how many runs of a job may be lost to crashes or
	// hangs before it is dead-lettered as failed (default 5).
	MaxInterrupted int
	// RetryBase and RetryMax shape the full-jitter backoff between tries
	// of a job no provider could serve (defaults 1s and 5m).
	RetryBase, RetryMax time.Duration
	// ShutdownGrace is how long running jobs may go on after Run's ctx
	// ends before their upstream calls are cancelled (and the jobs left
	// queued for the next start). Default 0: cancel at once.
	ShutdownGrace time.Duration
	// Logger logs problems; nil discards.
	Logger *slog.Logger
	// Registry registers the metrics; nil registers none.
	Registry prometheus.Registerer
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// BatchWindow is how long a message batch may process before its
	// unfinished items expire (default DefaultBatchWindow, 24h).
	BatchWindow time.Duration
	// MaxBatchRequests bounds the requests of one message batch (default
	// DefaultMaxBatchRequests, 100,000).
	MaxBatchRequests int
	// MaxJSONDepth bounds the nesting of batch items' params
	// (max_json_depth; 0 means wire.FallbackMaxDepth).
	MaxJSONDepth int
}

// Service stores, runs and reports asynchronous jobs. It is safe for
// concurrent use. Submit, Get and Cancel work as soon as Open returns; Run
// executes jobs and delivers callbacks until its ctx ends.
type Service struct {
	js      jetstream.JetStream
	state   jetstream.KeyValue
	idem    jetstream.KeyValue
	batches jetstream.KeyValue // message batches (batch.go)
	bcache  *batchCache
	runner  Runner
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	checker callbacks.Checker
	deliver *callbacks.Deliverer
	metrics *metrics

	runMu   sync.Mutex
	running bool

	trouble chan struct{} // one slot: a store error happened (StoreErrors)
	active  sync.Map      // ids of the jobs the executor handles now
}

// Open creates the streams and buckets idempotently and returns a Service
// that runs jobs with r.
func Open(ctx context.Context, js jetstream.JetStream, r Runner, o Options) (*Service, error) {
	if js == nil || r == nil {
		return nil, errors.New("jobs: JetStream and Runner are required")
	}
	if o.Signer == nil {
		return nil, fmt.Errorf("jobs: %w", callbacks.ErrUnsigned)
	}
	if o.ResultTTL <= 0 {
		o.ResultTTL = DefaultResultTTL
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.CallbackWorkers <= 0 {
		o.CallbackWorkers = DefaultCallbackWorkers
	}
	if o.CallbackMaxAttempts <= 0 {
		o.CallbackMaxAttempts = callbacks.DefaultMaxAttempts
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxInterrupted <= 0 {
		o.MaxInterrupted = DefaultMaxInterrupted
	}
	if o.RetryBase <= 0 {
		o.RetryBase = DefaultRetryBase
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.BatchWindow <= 0 {
		o.BatchWindow = DefaultBatchWindow
	}
	if o.MaxBatchRequests <= 0 {
		o.MaxBatchRequests = DefaultMaxBatchRequests
	}
	client := o.CallbackClient
	if client == nil {
		client = callbacks.NewClient(callbacks.ClientOptions{AllowPrivate: o.AllowPrivate})
	}
	s := &Service{
		js:      js,
		runner:  r,
		opts:    o,
		log:     o.Logger,
		now:     o.Now,
		checker: callbacks.Checker{Resolver: o.Resolver, AllowPrivate: o.AllowPrivate},
		trouble: make(chan struct{}, 1),
		deliver: callbacks.NewDeliverer(callbacks.DelivererOptions{
			Client:      client,
			Signer:      o.Signer,
			MaxAttempts: o.CallbackMaxAttempts,
			BaseBackoff: o.CallbackBaseBackoff,
			MaxBackoff:  o.CallbackMaxBackoff,
			Now:         o.Now,
		}),
	}
	var err error
	if s.state, s.idem, err = s.declare(ctx); err != nil {
		return nil, err
	}
	if s.batches, err = s.declareBatches(ctx); err != nil {
		return nil, err
	}
	s.bcache = &batchCache{entries: map[string]*cacheEntry{}}
	if o.Registry != nil {
		s.metrics = newMetrics(o.Registry, s)
	} else {
		s.metrics = newMetrics(nil, s)
	}
	return s, nil
}

// declare creates or updates the streams, buckets and consumers, and
// returns the state and idempotency buckets. Open and RepairStore use it.
func (s *Service) declare(ctx context.Context) (state, idem jetstream.KeyValue, err error) {
	dup := min(s.opts.ResultTTL, 24*time.Hour)
	streams := []jetstream.StreamConfig{
		{Name: JobsStream, Subjects: []string{jobsSubjectPrefix + "*"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Duplicates: dup, Description: "relay: accepted asynchronous jobs"},
		{Name: ResultsStream, Subjects: []string{resultsSubjectPrefix + ">"}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, MaxAge: s.opts.ResultTTL, Duplicates: dup, Description: "relay: finished jobs"},
		{Name: CallbacksStream, Subjects: []string{callbacksSubject}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Duplicates: dup, Description: "relay: pending callback deliveries"},
	}
	for _, sc := range streams {
		if _, err := s.js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, nil, fmt.Errorf("jobs: declare stream %s: %w", sc.Name, err)
		}
	}
	state, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: StateBucket, TTL: s.opts.ResultTTL,
		Storage: jetstream.FileStorage, History: 1, Description: "relay: job records"})
	if err != nil {
		return nil, nil, fmt.Errorf("jobs: declare bucket %s: %w", StateBucket, err)
	}
	idem, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: IdemBucket, TTL: s.opts.ResultTTL,
		Storage: jetstream.FileStorage, History: 1, Description: "relay: job idempotency keys"})
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
			AckWait: callbacks.DefaultTimeout + 20*time.Second, MaxDeliver: -1, MaxAckPending: -1, Description: "relay: callback deliveries"}},
	}
	for _, c := range consumers {
		if _, err := s.js.CreateOrUpdateConsumer(ctx, c.stream, c.cfg); err != nil {
			return nil, nil, fmt.Errorf("jobs: declare consumer %s: %w", c.cfg.Durable, err)
		}
	}
	return state, idem, nil
}

// CheckCallbackURL applies the callback URL policy (SSRF protection unless
// AllowPrivate). Its errors wrap callbacks.ErrBadURL or
// callbacks.ErrForbiddenAddress and are safe to show clients.
func (s *Service) CheckCallbackURL(ctx context.Context, raw string) error {
	return s.checker.Check(ctx, raw)
}

// message is a job as stored in RELAY_JOBS: everything needed to create
// its record and run it.
type message struct {
	ID          string          `json:"id"`
	Key         string          `json:"key"`
	Endpoint    string          `json:"endpoint"`
	Model       string          `json:"model"`
	Lane        string          `json:"lane"`
	CallbackURL string          `json:"callback_url,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	BatchID     string          `json:"batch_id,omitempty"`
	CustomID    string          `json:"custom_id,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	Body        json.RawMessage `json:"body"`
}

// record returns the queued record of m.
func (m *message) record() Job {
	return Job{ID: m.ID, Object: "job", Status: StatusQueued, Endpoint: m.Endpoint, Model: m.Model, Lane: m.Lane,
		KeyName: m.Key, CallbackURL: m.CallbackURL, Metadata: m.Metadata, BatchID: m.BatchID, CustomID: m.CustomID,
		CreatedAt: m.CreatedAt}
}

// validate checks what the service itself owns about a submission.
func validate(sub *Submission) error {
	switch {
	case sub.Key == "":
		return fmt.Errorf("%w: no key", ErrInvalid)
	case sub.Endpoint != EndpointMessages && sub.Endpoint != EndpointChatCompletions:
		return fmt.Errorf("%w: endpoint must be %s or %s", ErrInvalid, EndpointMessages, EndpointChatCompletions)
	case sub.Model == "":
		return fmt.Errorf("%w: body has no model", ErrInvalid)
	case sub.Lane == "":
		return fmt.Errorf("%w: no lane", ErrInvalid)
	case len(sub.Body) == 0 || !json.Valid(sub.Body) || firstNonSpace(sub.Body) != '{':
		return fmt.Errorf("%w: body must be a JSON object", ErrInvalid)
	case len(sub.Metadata) > 0 && (!json.Valid(sub.Metadata) || firstNonSpace(sub.Metadata) != '{'):
		return fmt.Errorf("%w: metadata must be a JSON object", ErrInvalid)
	case len(sub.IdempotencyKey) > 255:
		return fmt.Errorf("%w: idempotency key longer than 255 characters", ErrInvalid)
	}
	return nil
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c
		}
	}
	return 0
}

// Submit stores a job and returns its record. It returns only once the job
// message is in RELAY_JOBS (file storage, PubAck received) and its record
// is in RELAY_JOB_STATE. created is false when sub.IdempotencyKey named an
// earlier submission of the same key, whose job is returned instead.
//
// Order, and why it is crash-safe: (1) with an idempotency key, claim it
// with kv.Create (first wins) for a fresh id; (2) publish the whole
// submission to RELAY_JOBS with Nats-Msg-Id = id; (3) create the queued
// record. A crash after (1) leaves a claimed key with no job: the next
// submission with that key publishes and records it under the claimed id.
// A crash after (2) leaves a stored job without a record: the executor
// creates the record from the message, so nothing accepted is lost. A
// retried (2) is de-duplicated by its message id.
func (s *Service) Submit(ctx context.Context, sub Submission) (Job, bool, error) {
	if err := validate(&sub); err != nil {
		return Job{}, false, err
	}
	j, created, err := s.submit(ctx, sub)
	if err != nil && !errors.Is(err, ErrTooLarge) && ctx.Err() == nil {
		s.storeTrouble()
	}
	return j, created, err
}

// submit is Submit after validation.
func (s *Service) submit(ctx context.Context, sub Submission) (Job, bool, error) {
	now := s.now().UTC()
	id := NewID(now)
	if sub.IdempotencyKey != "" {
		ik := idemKey(sub.Key, sub.IdempotencyKey)
		fp := fingerprint(&sub)
		if _, err := s.idem.Create(ctx, ik, []byte(id+" "+fp)); err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return Job{}, false, fmt.Errorf("jobs: idempotency key: %w", err)
			}
			e, err := s.idem.Get(ctx, ik)
			if err != nil {
				return Job{}, false, fmt.Errorf("jobs: idempotency key: %w", err)
			}
			prev, prevFP, hasFP := strings.Cut(string(e.Value()), " ")
			if hasFP && prevFP != fp {
				return Job{}, false, fmt.Errorf("%w: %q", ErrIdempotencyMismatch, sub.IdempotencyKey)
			}
			if j, _, err := s.load(ctx, prev); err == nil {
				return j, false, nil
			} else if !errors.Is(err, ErrNotFound) {
				return Job{}, false, err
			}
			// Claimed but never recorded: finish that submission now,
			// under the claimed id.
			id = prev
			if t, err := TimeOf(id); err == nil {
				now = t.UTC()
			}
			j, err := s.store(ctx, id, now, &sub, false)
			return j, false, err
		}
	}
	j, err := s.store(ctx, id, now, &sub, true)
	return j, true, err
}

// fingerprint is the hex SHA-256 of what a submission asks for: its
// endpoint, lane, callback URL, metadata and body, byte for byte. It is
// stored with the idempotency claim (as "<job id> <fingerprint>"), so that
// a reused Idempotency-Key with another request is refused rather than
// silently answered with the first job, as Stripe does. Claims written
// before fingerprints existed hold only the id and are not checked.
func fingerprint(sub *Submission) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(sub.Endpoint), []byte(sub.Lane), []byte(sub.CallbackURL), sub.Metadata, sub.Body} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// idemKey is the RELAY_JOB_IDEM key of an Idempotency-Key.
func idemKey(key, idem string) string {
	sum := sha256.Sum256([]byte(key + "\x00" + idem))
	return hex.EncodeToString(sum[:])
}

// store publishes the job message and creates its record. It returns
// the record as stored, or with fresh (a new id) the queued record: a
// worker may pull the message and claim the job before the record is
// created here, but the submitter is told the job as it was accepted.
func (s *Service) store(ctx context.Context, id string, now time.Time, sub *Submission, fresh bool) (Job, error) {
	m, err := s.publishJob(ctx, id, now, sub)
	if err != nil {
		return Job{}, err
	}
	j, _, err := s.ensure(ctx, &m)
	if err == nil && fresh {
		j = m.record()
	}
	return j, err
}

// publishJob stores the job message of sub under id.
func (s *Service) publishJob(ctx context.Context, id string, now time.Time, sub *Submission) (message, error) {
	m := message{ID: id, Key: sub.Key, Endpoint: sub.Endpoint, Model: sub.Model, Lane: sub.Lane,
		CallbackURL: sub.CallbackURL, Metadata: sub.Metadata, BatchID: sub.BatchID, CustomID: sub.CustomID,
		CreatedAt: now.Truncate(time.Millisecond), Body: sub.Body}
	data, err := json.Marshal(&m)
	if err != nil {
		return m, fmt.Errorf("jobs: encode: %w", err)
	}
	msg := &nats.Msg{Subject: jobsSubjectPrefix + token(sub.Lane), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set("Relay-Job-Id", id)
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		if errors.Is(err, nats.ErrMaxPayload) {
			return m, ErrTooLarge
		}
		return m, fmt.Errorf("jobs: store job: %w", err)
	}
	return m, nil
}

// ensure returns the record of m, creating it (queued) when missing.
func (s *Service) ensure(ctx context.Context, m *message) (Job, uint64, error) {
	j := m.record()
	data, _ := json.Marshal(&j)
	rev, err := s.state.Create(ctx, m.ID, data)
	if err == nil {
		return j, rev, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return Job{}, 0, fmt.Errorf("jobs: record job: %w", err)
	}
	return s.load(ctx, m.ID)
}

// load returns a job's record and its revision, or ErrNotFound.
func (s *Service) load(ctx context.Context, id string) (Job, uint64, error) {
	e, err := s.state.Get(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Job{}, 0, ErrNotFound
		}
		return Job{}, 0, fmt.Errorf("jobs: read job: %w", err)
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return Job{}, 0, fmt.Errorf("jobs: decode job %s: %w", id, err)
	}
	return j, e.Revision(), nil
}

// update applies f to the record of id with optimistic concurrency,
// re-reading on a conflict. f returns false to leave the record alone.
func (s *Service) update(ctx context.Context, id string, f func(j *Job) bool) (Job, bool, error) {
	for {
		j, rev, err := s.load(ctx, id)
		if err != nil {
			return Job{}, false, err
		}
		if !f(&j) {
			return j, false, nil
		}
		data, err := json.Marshal(&j)
		if err != nil {
			return Job{}, false, fmt.Errorf("jobs: encode: %w", err)
		}
		if _, err := s.state.Update(ctx, id, data, rev); err != nil {
			if isConflict(err) {
				continue
			}
			return Job{}, false, fmt.Errorf("jobs: write job: %w", err)
		}
		return j, true, nil
	}
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		errors.Is(err, jetstream.ErrKeyExists)
}

// Get returns key's job id. Another key's job, or an unknown id, is
// ErrNotFound; a job past its retention is ErrExpired.
func (s *Service) Get(ctx context.Context, key, id string) (Job, error) {
	if !ValidID(id) {
		return Job{}, ErrNotFound
	}
	j, _, err := s.load(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		if s.ExpiredAt(id).Before(s.now()) {
			return Job{}, ErrExpired
		}
		return Job{}, ErrNotFound
	case err != nil:
		return Job{}, err
	case j.KeyName != key:
		return Job{}, ErrNotFound
	case j.ExpiresAt != nil && !s.now().Before(*j.ExpiresAt):
		return Job{}, ErrExpired
	}
	return j.clone(), nil
}

// ExpiredAt returns the time after which a job id is surely past its
// retention whatever became of it: its creation time plus the result TTL.
// (A job finishing late is kept result_ttl after it finished.)
func (s *Service) ExpiredAt(id string) time.Time {
	t, err := TimeOf(id)
	if err != nil {
		return time.Time{}
	}
	return t.Add(s.opts.ResultTTL)
}

// Cancel cancels key's job id while it is queued (also between retries).
// The canceled job is terminal: its result is published to NATS and its
// callback sent like any other. A running or finished job is
// ErrNotCancelable; another key's or an unknown job ErrNotFound.
func (s *Service) Cancel(ctx context.Context, key, id string) (Job, error) {
	if _, err := s.Get(ctx, key, id); err != nil {
		return Job{}, err
	}
	var notCancelable bool
	now := s.now().UTC()
	j, changed, err := s.update(ctx, id, func(j *Job) bool {
		if j.Status != StatusQueued {
			notCancelable = true
			return false
		}
		j.Status = StatusCanceled
		s.finishFields(j, now)
		j.Error = &Error{Type: "canceled", Message: "the job was canceled before it ran"}
		return true
	})
	if err != nil {
		return Job{}, err
	}
	if notCancelable || !changed {
		return j.clone(), fmt.Errorf("%w: it is %s", ErrNotCancelable, j.Status)
	}
	s.metrics.jobs.WithLabelValues(StatusCanceled).Inc()
	// Publishing can fail here; the executor repeats these steps when it
	// meets the canceled job's message.
	if err := s.afterTerminal(ctx, &j); err != nil {
		s.log.Warn("publish canceled job", "job", id, "error", err)
	}
	return j.clone(), nil
}

// finishFields sets the terminal timestamps of j.
func (s *Service) finishFields(j *Job, now time.Time) {
	j.FinishedAt = &now
	exp := now.Add(s.opts.ResultTTL)
	j.ExpiresAt = &exp
}

// afterTerminal publishes the finished job to RELAY_RESULTS and enqueues
// its callback. Both are de-duplicated by the job id, so repeating them
// after a crash has no visible effect.
func (s *Service) afterTerminal(ctx context.Context, j *Job) error {
	data, err := s.publishResult(ctx, j)
	if err != nil {
		return err
	}
	return s.enqueueCallback(ctx, j, data)
}

// publishResult publishes j's final JSON (without the callback field) to
// RELAY_RESULTS and returns it.
func (s *Service) publishResult(ctx context.Context, j *Job) ([]byte, error) {
	payload := *j
	payload.Callback = nil
	payload.Interrupted = 0
	data, err := json.Marshal(&payload)
	if err != nil {
		return nil, fmt.Errorf("jobs: encode: %w", err)
	}
	msg := &nats.Msg{Subject: ResultSubject(j.KeyName, j.ID), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, j.ID)
	msg.Header.Set("Content-Type", "application/json")
	msg.Header.Set("Relay-Job-Id", j.ID)
	msg.Header.Set("Relay-Status", j.Status)
	if j.Result != nil && j.Result.Provider != "" {
		msg.Header.Set("Relay-Provider", j.Result.Provider)
	}
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return nil, fmt.Errorf("jobs: publish result: %w", err)
	}
	return data, nil
}

// enqueueCallback stores the pending delivery of j's callback, if any.
func (s *Service) enqueueCallback(ctx context.Context, j *Job, data []byte) error {
	if j.CallbackURL == "" {
		return nil
	}
	cb, err := json.Marshal(&callbackMsg{ID: j.ID, URL: j.CallbackURL, Body: data})
	if err != nil {
		return fmt.Errorf("jobs: encode: %w", err)
	}
	msg := &nats.Msg{Subject: callbacksSubject, Data: cb, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, j.ID)
	msg.Header.Set("Relay-Job-Id", j.ID)
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("jobs: enqueue callback: %w", err)
	}
	if _, _, err := s.update(ctx, j.ID, func(j *Job) bool {
		if j.Callback != nil {
			return false
		}
		j.Callback = &CallbackState{Outcome: "pending"}
		return true
	}); err != nil {
		s.log.Warn("record callback state", "job", j.ID, "error", err)
	}
	return nil
}

// callbackMsg is a pending delivery in RELAY_CALLBACKS.
type callbackMsg struct {
	ID   string          `json:"id"`
	URL  string          `json:"url"`
	Body json.RawMessage `json:"body"`
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

// jitter returns a full-jitter delay in [0, min(max, base*2^(n-1))].
func jitter(base, maxD time.Duration, n int) time.Duration {
	ceiling := maxD
	if n < 1 {
		n = 1
	}
	if shift := n - 1; shift < 40 {
		if b := base << shift; b > 0 && b < ceiling {
			ceiling = b
		}
	}
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}
