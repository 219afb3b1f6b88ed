package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/workers/wire"
)

// Message batches (Anthropic's Message Batches API) on top of jobs; see
// the package doc, section "Message batches".

// Names and limits of message batches.
const (
	// BatchesBucket holds batch records and their item lists.
	BatchesBucket = "RELAY_BATCHES"
	// BatchIDPrefix starts every batch id ("msgbatch_" and a ULID).
	BatchIDPrefix = "msgbatch_"
	// DefaultBatchWindow is how long a batch may process, as Anthropic's:
	// items not finished 24 hours after creation are expired.
	DefaultBatchWindow = 24 * time.Hour
	// DefaultMaxBatchRequests is Anthropic's limit of requests per batch.
	DefaultMaxBatchRequests = 100_000
	// MaxCustomIDLen is the longest custom_id.
	MaxCustomIDLen = 64
	// ErrorExpired is the Error.Type of a batch item ended, without
	// running, because its batch expired.
	ErrorExpired = "expired"
)

// Processing statuses of a batch.
const (
	// BatchInProgress: some items are still queued or running.
	BatchInProgress = "in_progress"
	// BatchCanceling: cancel was asked; items already running finish.
	BatchCanceling = "canceling"
	// BatchEnded: every item has a final result (or the batch expired).
	BatchEnded = "ended"
)

const (
	// batchChunkSize is the number of item references per KV value.
	batchChunkSize = 500
	// batchParallelism bounds the concurrent store calls of one batch
	// operation.
	batchParallelism = 32
	// batchResultsWindow is how many items' records are read ahead while
	// streaming results.
	batchResultsWindow = 256
	// batchCacheItems bounds the item references and outcomes cached
	// across batches.
	batchCacheItems = 400_000
)

// Errors of the batch operations (besides ErrNotFound, ErrInvalid and
// store errors). Their messages are safe to show clients.
var (
	// ErrBatchNotEnded means the batch is still processing: its results
	// cannot be read and it cannot be deleted yet.
	ErrBatchNotEnded = errors.New("message batch has not ended processing")
	// ErrBatchEnded means the batch has already ended and cannot be
	// canceled.
	ErrBatchEnded = errors.New("message batch has already ended processing")
	// ErrBatchTooLarge means a batch has more requests than allowed; it
	// wraps ErrInvalid.
	ErrBatchTooLarge = fmt.Errorf("%w: too many requests in the message batch", ErrInvalid)
)

// BatchItem is one request of a message batch.
type BatchItem struct {
	// CustomID is the client's id of the request, unique in the batch,
	// matching ^[a-zA-Z0-9_-]{1,64}$.
	CustomID string
	// Model is the route Params names; empty means read it from Params.
	Model string
	// Params is an Anthropic Messages request body, without
	// "stream": true.
	Params json.RawMessage
}

// RequestCounts counts a batch's items by outcome.
type RequestCounts struct {
	// Processing counts queued and running items.
	Processing int64 `json:"processing"`
	// Succeeded counts items the upstream answered 2xx.
	Succeeded int64 `json:"succeeded"`
	// Errored counts items that failed.
	Errored int64 `json:"errored"`
	// Canceled counts items canceled before they ran.
	Canceled int64 `json:"canceled"`
	// Expired counts items not finished when the batch expired.
	Expired int64 `json:"expired"`
}

// Batch is a message batch as Anthropic's API shows it (MessageBatch).
type Batch struct {
	// ID is "msgbatch_" and a ULID.
	ID string `json:"id"`
	// Type is always "message_batch".
	Type string `json:"type"`
	// ProcessingStatus is one of the Batch* statuses.
	ProcessingStatus string `json:"processing_status"`
	// RequestCounts counts the items by outcome.
	RequestCounts RequestCounts `json:"request_counts"`
	// CreatedAt is when the batch was accepted.
	CreatedAt time.Time `json:"created_at"`
	// EndedAt is when the last item got its final result.
	EndedAt *time.Time `json:"ended_at"`
	// ExpiresAt is when processing stops: CreatedAt + the batch window.
	ExpiresAt time.Time `json:"expires_at"`
	// ArchivedAt is always null (the relay does not archive).
	ArchivedAt *time.Time `json:"archived_at"`
	// CancelInitiatedAt is when cancel was asked.
	CancelInitiatedAt *time.Time `json:"cancel_initiated_at"`
	// ResultsURL is where the results are, once ended. The Service
	// leaves it nil; the HTTP layer, which knows the relay's address,
	// sets it.
	ResultsURL *string `json:"results_url"`
}

// BatchPage is one page of ListBatches, newest first.
type BatchPage struct {
	// Data are the batches of the page.
	Data []Batch `json:"data"`
	// HasMore says whether more batches lie beyond the page in the
	// direction of the listing.
	HasMore bool `json:"has_more"`
	// FirstID and LastID are the ids of the first and last batch of the
	// page (null when it is empty).
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
}

// batchRecord is a batch's mutable header in BatchesBucket.
type batchRecord struct {
	ID                string         `json:"id"`
	Key               string         `json:"key"`
	Lane              string         `json:"lane"`
	CallbackURL       string         `json:"callback_url,omitempty"`
	Count             int            `json:"count"`
	CreatedAt         time.Time      `json:"created_at"`
	ExpiresAt         time.Time      `json:"expires_at"`
	CancelInitiatedAt *time.Time     `json:"cancel_initiated_at,omitempty"`
	EndedAt           *time.Time     `json:"ended_at,omitempty"`
	Counts            *RequestCounts `json:"counts,omitempty"` // final, once ended
}

// batchRef is one item of a batch: its custom_id and job id.
type batchRef struct {
	CustomID string `json:"c"`
	JobID    string `json:"j"`
}

// outcome is an item's result type; outcomeProcessing is not final.
type outcome uint8

const (
	outcomeProcessing outcome = iota
	outcomeSucceeded
	outcomeErrored
	outcomeCanceled
	outcomeExpired
)

// headerKey is the BatchesBucket key of a batch's record: by key name
// first, so ListBatches reads only the key's own batches.
func headerKey(key, id string) string { return "b." + token(key) + "." + id }

// chunkKey is the BatchesBucket key of a batch's n-th chunk of items.
func chunkKey(id string, n int) string { return "i." + id + "." + strconv.Itoa(n) }

// NewBatchID returns a new batch id: "msgbatch_" and a ULID.
func NewBatchID(now time.Time) string { return BatchIDPrefix + NewID(now)[len(IDPrefix):] }

// ValidBatchID reports whether id has the form NewBatchID returns.
func ValidBatchID(id string) bool {
	return strings.HasPrefix(id, BatchIDPrefix) && ValidID(IDPrefix+id[len(BatchIDPrefix):])
}

// declareBatches creates or updates BatchesBucket. Its TTL covers a
// batch's whole life: the window, then result_ttl for the results.
func (s *Service) declareBatches(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BatchesBucket,
		TTL: s.opts.BatchWindow + s.opts.ResultTTL, Storage: jetstream.FileStorage, History: 1,
		Description: "relay: message batches"})
	if err != nil {
		return nil, fmt.Errorf("jobs: declare bucket %s: %w", BatchesBucket, err)
	}
	return kv, nil
}

// validCustomID reports whether id matches ^[a-zA-Z0-9_-]{1,64}$.
func validCustomID(id string) bool {
	if len(id) == 0 || len(id) > MaxCustomIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !tokenChar(id[i]) {
			return false
		}
	}
	return true
}

// ValidateBatch checks what SubmitBatch checks of items on its own: count
// (1 to Options.MaxBatchRequests), custom_id syntax and uniqueness, and
// that each params is a JSON object naming a model without
// "stream": true. It fills in empty Models. Errors wrap ErrInvalid.
func (s *Service) ValidateBatch(items []BatchItem) error {
	switch {
	case len(items) == 0:
		return fmt.Errorf("%w: requests: at least one request is required", ErrInvalid)
	case len(items) > s.opts.MaxBatchRequests:
		return fmt.Errorf("%w: %d requests; at most %d are allowed", ErrBatchTooLarge, len(items), s.opts.MaxBatchRequests)
	}
	seen := make(map[string]struct{}, len(items))
	for i := range items {
		it := &items[i]
		if !validCustomID(it.CustomID) {
			return fmt.Errorf("%w: requests.%d.custom_id: must match ^[a-zA-Z0-9_-]{1,64}$", ErrInvalid, i)
		}
		if _, dup := seen[it.CustomID]; dup {
			return fmt.Errorf("%w: requests.%d.custom_id: duplicate custom_id %q; custom_id must be unique within a batch",
				ErrInvalid, i, it.CustomID)
		}
		seen[it.CustomID] = struct{}{}
		f, err := wire.Peek(it.Params, s.opts.MaxJSONDepth)
		if errors.Is(err, wire.ErrTooDeep) {
			return fmt.Errorf("%w: requests.%d.params: %w", ErrInvalid, i, err)
		}
		if err != nil || firstNonSpace(it.Params) != '{' {
			return fmt.Errorf("%w: requests.%d.params: must be a JSON object", ErrInvalid, i)
		}
		if f.Stream {
			return fmt.Errorf("%w: requests.%d.params.stream: streaming is not supported in message batches", ErrInvalid, i)
		}
		if it.Model == "" {
			it.Model = f.Model
		}
		if it.Model == "" {
			return fmt.Errorf("%w: requests.%d.params.model: Field required", ErrInvalid, i)
		}
	}
	return nil
}

// SubmitBatch stores a message batch of key, one job per item (endpoint
// /v1/messages, BatchID and CustomID set, on lane, with callbackURL for
// per-item callbacks), and returns it in_progress. It returns only once
// the batch record and every item's job are stored (as Submit stores a
// job). The caller has authorized the items' models, lane and callback
// URL; SubmitBatch checks the rest (ValidateBatch).
//
// Order: the item list, then the batch record, then the jobs, so an item
// never runs without its batch. A crash midway leaves a batch (the
// client got no answer) whose stored items run and whose others end
// expired at expires_at; a store error midway cancels the batch and is
// returned.
func (s *Service) SubmitBatch(ctx context.Context, key string, items []BatchItem, lane, callbackURL string) (Batch, error) {
	if key == "" || lane == "" {
		return Batch{}, fmt.Errorf("%w: no key or lane", ErrInvalid)
	}
	if err := s.ValidateBatch(items); err != nil {
		return Batch{}, err
	}
	now := s.now().UTC()
	id := NewBatchID(now)
	created, _ := TimeOf(IDPrefix + id[len(BatchIDPrefix):])
	created = created.UTC()
	refs := make([]batchRef, len(items))
	for i := range items {
		refs[i] = batchRef{CustomID: items[i].CustomID, JobID: NewID(now)}
	}
	for c := 0; c*batchChunkSize < len(refs); c++ {
		data, err := json.Marshal(refs[c*batchChunkSize : min(len(refs), (c+1)*batchChunkSize)])
		if err != nil {
			return Batch{}, fmt.Errorf("jobs: encode: %w", err)
		}
		if _, err := s.batches.Put(ctx, chunkKey(id, c), data); err != nil {
			return Batch{}, fmt.Errorf("jobs: store batch: %w", err)
		}
	}
	rec := batchRecord{ID: id, Key: key, Lane: lane, CallbackURL: callbackURL, Count: len(items),
		CreatedAt: created, ExpiresAt: created.Add(s.opts.BatchWindow)}
	data, err := json.Marshal(&rec)
	if err != nil {
		return Batch{}, fmt.Errorf("jobs: encode: %w", err)
	}
	if _, err := s.batches.Create(ctx, headerKey(key, id), data); err != nil {
		return Batch{}, fmt.Errorf("jobs: store batch: %w", err)
	}
	err = parallel(ctx, len(items), func(ctx context.Context, i int) error {
		sub := Submission{Key: key, Endpoint: EndpointMessages, Model: items[i].Model, Body: items[i].Params,
			Lane: lane, CallbackURL: callbackURL, BatchID: id, CustomID: items[i].CustomID}
		if err := validate(&sub); err != nil {
			return err
		}
		_, err := s.store(ctx, refs[i].JobID, now, &sub, true)
		return err
	})
	if err != nil {
		// Items already stored must not run: the executor ends items of
		// a canceled batch without running them.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, _, uerr := s.updateBatch(cctx, key, id, func(r *batchRecord) bool {
			r.CancelInitiatedAt = &now
			return true
		}); uerr != nil {
			s.log.Warn("cancel partly stored batch", "batch", id, "error", uerr)
		}
		return Batch{}, err
	}
	s.bcache.put(id, refs)
	return rec.batch(RequestCounts{Processing: int64(len(items))}), nil
}

// parallel calls f(ctx, i) for i in [0, n) on up to batchParallelism
// goroutines and returns the first error (the others stop early).
func parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, batchParallelism) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// batch returns the API view of r with counts c.
func (r *batchRecord) batch(c RequestCounts) Batch {
	b := Batch{ID: r.ID, Type: "message_batch", RequestCounts: c, CreatedAt: r.CreatedAt, EndedAt: r.EndedAt,
		ExpiresAt: r.ExpiresAt, CancelInitiatedAt: r.CancelInitiatedAt}
	switch {
	case r.EndedAt != nil:
		b.ProcessingStatus = BatchEnded
	case r.CancelInitiatedAt != nil:
		b.ProcessingStatus = BatchCanceling
	default:
		b.ProcessingStatus = BatchInProgress
	}
	return b
}

// loadBatch returns key's batch record id and its revision, or
// ErrNotFound.
func (s *Service) loadBatch(ctx context.Context, key, id string) (batchRecord, uint64, error) {
	if !ValidBatchID(id) {
		return batchRecord{}, 0, ErrNotFound
	}
	e, err := s.batches.Get(ctx, headerKey(key, id))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return batchRecord{}, 0, ErrNotFound
		}
		return batchRecord{}, 0, fmt.Errorf("jobs: read batch: %w", err)
	}
	var r batchRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return batchRecord{}, 0, fmt.Errorf("jobs: decode batch %s: %w", id, err)
	}
	if r.Key != key { // two key names with the same subject token
		return batchRecord{}, 0, ErrNotFound
	}
	return r, e.Revision(), nil
}

// updateBatch applies f to a batch record with optimistic concurrency.
func (s *Service) updateBatch(ctx context.Context, key, id string, f func(r *batchRecord) bool) (batchRecord, bool, error) {
	for {
		r, rev, err := s.loadBatch(ctx, key, id)
		if err != nil {
			return batchRecord{}, false, err
		}
		if !f(&r) {
			return r, false, nil
		}
		data, err := json.Marshal(&r)
		if err != nil {
			return batchRecord{}, false, fmt.Errorf("jobs: encode: %w", err)
		}
		if _, err := s.batches.Update(ctx, headerKey(key, id), data, rev); err != nil {
			if isConflict(err) {
				continue
			}
			return batchRecord{}, false, fmt.Errorf("jobs: write batch: %w", err)
		}
		return r, true, nil
	}
}

// refs returns a batch's items, from the cache or the bucket.
func (s *Service) refs(ctx context.Context, r *batchRecord) (*cacheEntry, error) {
	if e := s.bcache.get(r.ID); e != nil {
		return e, nil
	}
	refs := make([]batchRef, 0, r.Count)
	for c := 0; c*batchChunkSize < r.Count; c++ {
		e, err := s.batches.Get(ctx, chunkKey(r.ID, c))
		if err != nil {
			return nil, fmt.Errorf("jobs: read batch items: %w", err)
		}
		var part []batchRef
		if err := json.Unmarshal(e.Value(), &part); err != nil {
			return nil, fmt.Errorf("jobs: decode batch items: %w", err)
		}
		refs = append(refs, part...)
	}
	if len(refs) != r.Count {
		return nil, fmt.Errorf("jobs: batch %s has %d of %d items", r.ID, len(refs), r.Count)
	}
	return s.bcache.put(r.ID, refs), nil
}

// loadJobs reads the records of ids concurrently; a missing record is nil.
func (s *Service) loadJobs(ctx context.Context, ids []string) ([]*Job, error) {
	out := make([]*Job, len(ids))
	err := parallel(ctx, len(ids), func(ctx context.Context, i int) error {
		j, _, err := s.load(ctx, ids[i])
		switch {
		case errors.Is(err, ErrNotFound):
			return nil
		case err != nil:
			return err
		}
		out[i] = &j
		return nil
	})
	return out, err
}

// outcomeOf returns an item's outcome at now, and when it finished. An
// item is what its job was at the batch's expiry: finished later (or not
// at all) means expired.
func outcomeOf(j *Job, exp, now time.Time) (outcome, time.Time) {
	if j != nil && j.Terminal() {
		fin := exp
		if j.FinishedAt != nil {
			fin = *j.FinishedAt
		}
		if !fin.After(exp) {
			switch {
			case j.Status == StatusSucceeded:
				return outcomeSucceeded, fin
			case j.Status == StatusFailed:
				return outcomeErrored, fin
			case j.Error != nil && j.Error.Type == ErrorExpired:
				return outcomeExpired, exp
			default:
				return outcomeCanceled, fin
			}
		}
	}
	if !now.Before(exp) {
		return outcomeExpired, exp
	}
	return outcomeProcessing, time.Time{}
}

// view computes a batch's counts, reading the records of the items whose
// outcome is not yet known (final outcomes are cached), and records the
// end once every item has a final outcome.
func (s *Service) view(ctx context.Context, r *batchRecord) (Batch, error) {
	if r.Counts != nil {
		return r.batch(*r.Counts), nil
	}
	e, err := s.refs(ctx, r)
	if err != nil {
		return Batch{}, err
	}
	e.mu.Lock()
	var pending []int
	for i, o := range e.outcomes {
		if o == outcomeProcessing {
			pending = append(pending, i)
		}
	}
	e.mu.Unlock()
	ids := make([]string, len(pending))
	for k, i := range pending {
		ids[k] = e.refs[i].JobID
	}
	js, err := s.loadJobs(ctx, ids)
	if err != nil {
		return Batch{}, err
	}
	now := s.now()
	var c RequestCounts
	e.mu.Lock()
	for k, i := range pending {
		o, fin := outcomeOf(js[k], r.ExpiresAt, now)
		if o != outcomeProcessing {
			e.outcomes[i] = o
			if fin.After(e.lastFinish) {
				e.lastFinish = fin
			}
		}
	}
	for _, o := range e.outcomes {
		switch o {
		case outcomeProcessing:
			c.Processing++
		case outcomeSucceeded:
			c.Succeeded++
		case outcomeErrored:
			c.Errored++
		case outcomeCanceled:
			c.Canceled++
		case outcomeExpired:
			c.Expired++
		}
	}
	ended := e.lastFinish
	e.mu.Unlock()
	if c.Processing > 0 {
		return r.batch(c), nil
	}
	if ended.IsZero() {
		ended = now.UTC()
	}
	ended = ended.UTC()
	nr, _, err := s.updateBatch(ctx, r.Key, r.ID, func(x *batchRecord) bool {
		if x.Counts != nil {
			return false
		}
		x.Counts, x.EndedAt = &c, &ended
		return true
	})
	if err != nil {
		s.log.Warn("record batch end", "batch", r.ID, "error", err)
		r.Counts, r.EndedAt = &c, &ended
		return r.batch(c), nil
	}
	*r = nr
	return r.batch(*r.Counts), nil
}

// GetBatch returns key's batch id with its current counts. Another key's
// batch, or an unknown id, is ErrNotFound.
func (s *Service) GetBatch(ctx context.Context, key, id string) (Batch, error) {
	r, _, err := s.loadBatch(ctx, key, id)
	if err != nil {
		return Batch{}, err
	}
	return s.view(ctx, &r)
}

// ListBatches returns a page of key's batches, newest first, as
// Anthropic's list: at most limit (1 to 1000; default 20) batches after
// afterID (older than it) or before beforeID (newer than it, the ones
// nearest to it), or the newest ones. Each batch's counts are computed as
// GetBatch computes them.
func (s *Service) ListBatches(ctx context.Context, key string, limit int, beforeID, afterID string) (BatchPage, error) {
	if limit <= 0 {
		limit = 20
	}
	limit = min(limit, 1000)
	lister, err := s.batches.ListKeysFiltered(ctx, "b."+token(key)+".*")
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return BatchPage{}, fmt.Errorf("jobs: list batches: %w", err)
	}
	var ids []string
	if lister != nil {
		prefix := "b." + token(key) + "."
		for k := range lister.Keys() {
			ids = append(ids, strings.TrimPrefix(k, prefix))
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	slices.Reverse(ids) // newest first
	var page []string
	var more bool
	switch {
	case beforeID != "":
		end, _ := slices.BinarySearchFunc(ids, beforeID, func(a, b string) int { return strings.Compare(b, a) })
		start := max(0, end-limit)
		page, more = ids[start:end], start > 0
	case afterID != "":
		i, found := slices.BinarySearchFunc(ids, afterID, func(a, b string) int { return strings.Compare(b, a) })
		if found {
			i++
		}
		end := min(len(ids), i+limit)
		page, more = ids[i:end], end < len(ids)
	default:
		end := min(len(ids), limit)
		page, more = ids[:end], end < len(ids)
	}
	out := BatchPage{Data: make([]Batch, 0, len(page)), HasMore: more}
	for _, id := range page {
		b, err := s.GetBatch(ctx, key, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile, or another key's
		}
		if err != nil {
			return BatchPage{}, err
		}
		out.Data = append(out.Data, b)
	}
	if n := len(out.Data); n > 0 {
		first, last := out.Data[0].ID, out.Data[n-1].ID
		out.FirstID, out.LastID = &first, &last
	}
	return out, nil
}

// CancelBatch cancels key's batch id: it records cancel_initiated_at and
// cancels every item still queued (running items finish; an item
// delivered to the executor later is canceled there). The batch is
// canceling until every item is final, then ended. Canceling a canceling
// batch again is harmless; an ended batch is ErrBatchEnded.
func (s *Service) CancelBatch(ctx context.Context, key, id string) (Batch, error) {
	r, _, err := s.loadBatch(ctx, key, id)
	if err != nil {
		return Batch{}, err
	}
	if b, err := s.view(ctx, &r); err != nil {
		return Batch{}, err
	} else if b.ProcessingStatus == BatchEnded {
		return b, ErrBatchEnded
	}
	now := s.now().UTC()
	r, _, err = s.updateBatch(ctx, key, id, func(x *batchRecord) bool {
		if x.CancelInitiatedAt != nil || x.Counts != nil {
			return false
		}
		x.CancelInitiatedAt = &now
		return true
	})
	if err != nil {
		return Batch{}, err
	}
	e, err := s.refs(ctx, &r)
	if err != nil {
		return Batch{}, err
	}
	e.mu.Lock()
	var pending []string
	for i, o := range e.outcomes {
		if o == outcomeProcessing {
			pending = append(pending, e.refs[i].JobID)
		}
	}
	e.mu.Unlock()
	err = parallel(ctx, len(pending), func(ctx context.Context, i int) error {
		_, err := s.endItem(ctx, pending[i], StatusCanceled, "canceled", "the message batch was canceled before this request ran",
			func(j *Job) bool { return j.Status == StatusQueued }, true)
		if errors.Is(err, ErrNotFound) {
			return nil // not recorded yet: the executor cancels it
		}
		return err
	})
	if err != nil {
		return Batch{}, err
	}
	return s.view(ctx, &r)
}

// endItem ends a batch item's job id without running it, when may allows
// (and it is not terminal), and with publish publishes its end like any
// job's. It returns the record, terminal or not.
func (s *Service) endItem(ctx context.Context, id, status, errType, msg string, may func(j *Job) bool, publish bool) (Job, error) {
	now := s.now().UTC()
	j, changed, err := s.update(ctx, id, func(j *Job) bool {
		if j.Terminal() || !may(j) {
			return false
		}
		j.Status = status
		s.finishFields(j, now)
		j.Error = &Error{Type: errType, Message: msg}
		return true
	})
	if err != nil || !changed {
		return j, err
	}
	s.metrics.jobs.WithLabelValues(status).Inc()
	if !publish {
		return j, nil
	}
	if err := s.afterTerminal(ctx, &j); err != nil {
		// The executor repeats this when it meets the job's message.
		s.log.Warn("publish ended batch item", "job", id, "error", err)
	}
	return j, nil
}

// batchGate is the executor's check of a batch item before it runs: an
// item whose batch expired, was canceled or no longer exists ends (as
// canceled; Error.Type "expired" for expiry) without running. It reports
// whether it handled the message.
func (s *Service) batchGate(ctx context.Context, msg jetstream.Msg, m *message) bool {
	r, _, err := s.loadBatch(ctx, m.Key, m.BatchID)
	errType, text := "canceled", ""
	switch {
	case errors.Is(err, ErrNotFound):
		text = "the message batch no longer exists"
	case err != nil:
		s.retryLater(msg, m.ID, err)
		return true
	case !s.now().Before(r.ExpiresAt):
		errType, text = ErrorExpired, "the message batch expired before this request ran"
	case r.CancelInitiatedAt != nil:
		text = "the message batch was canceled before this request ran"
	default:
		return false
	}
	j, err := s.endItem(ctx, m.ID, StatusCanceled, errType, text, func(*Job) bool { return true }, false)
	if err != nil {
		s.retryLater(msg, m.ID, err)
		return true
	}
	s.complete(ctx, msg, &j) // publishes the end, then acknowledges
	return true
}

// DeleteBatch deletes key's ended batch id with its items' job records
// (their results). A batch still processing is ErrBatchNotEnded.
func (s *Service) DeleteBatch(ctx context.Context, key, id string) error {
	r, _, err := s.loadBatch(ctx, key, id)
	if err != nil {
		return err
	}
	b, err := s.view(ctx, &r)
	if err != nil {
		return err
	}
	if b.ProcessingStatus != BatchEnded {
		return ErrBatchNotEnded
	}
	e, err := s.refs(ctx, &r)
	if err != nil {
		return err
	}
	if err := s.batches.Delete(ctx, headerKey(key, id)); err != nil {
		return fmt.Errorf("jobs: delete batch: %w", err)
	}
	s.bcache.drop(id)
	// The rest is best effort: what is left expires with the buckets'
	// TTLs. An item still queued (expired batch) is ended by the executor
	// when it meets it, as its batch no longer exists.
	for c := 0; c*batchChunkSize < r.Count; c++ {
		if err := s.batches.Delete(ctx, chunkKey(id, c)); err != nil {
			s.log.Warn("delete batch items", "batch", id, "error", err)
		}
	}
	_ = parallel(ctx, len(e.refs), func(ctx context.Context, i int) error {
		if err := s.state.Delete(ctx, e.refs[i].JobID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.log.Warn("delete batch item", "job", e.refs[i].JobID, "error", err)
		}
		return nil
	})
	return nil
}
