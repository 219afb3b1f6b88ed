package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaygw/relay/workers/logctx"
)

// Message batches (Anthropic's Message Batches API) on top of jobs: their
// types, limits and submission; see the package doc, section "Message
// batches".

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
	// Model is the route Params names (params.model), as the caller
	// parsed it; required.
	Model string
	// Stream is params.stream, as the caller parsed it: true is refused.
	Stream bool
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
// that each params is a JSON object with a Model and without Stream (the
// caller parsed both from params, bounding its nesting). Errors wrap
// ErrInvalid.
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
		if firstNonSpace(it.Params) != '{' || !json.Valid(it.Params) {
			return fmt.Errorf("%w: requests.%d.params: must be a JSON object", ErrInvalid, i)
		}
		if it.Stream {
			return fmt.Errorf("%w: requests.%d.params.stream: streaming is not supported in message batches", ErrInvalid, i)
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
	rec := batchRecord{ID: id, Key: key, Lane: lane, CallbackURL: callbackURL, Count: len(items),
		CreatedAt: created, ExpiresAt: created.Add(s.opts.BatchWindow)}
	if err := s.storeBatch(ctx, &rec, refs); err != nil {
		return Batch{}, err
	}
	if err := s.storeItems(ctx, &rec, items, refs, now); err != nil {
		return Batch{}, err
	}
	s.bcache.put(id, refs)
	return rec.batch(RequestCounts{Processing: int64(len(items))}), nil
}

// storeBatch writes a new batch's item list, then its record.
func (s *Service) storeBatch(ctx context.Context, rec *batchRecord, refs []batchRef) error {
	for c := 0; c*batchChunkSize < len(refs); c++ {
		data, err := json.Marshal(refs[c*batchChunkSize : min(len(refs), (c+1)*batchChunkSize)])
		if err != nil {
			return fmt.Errorf("jobs: encode: %w", err)
		}
		if _, err := s.batches.Put(ctx, chunkKey(rec.ID, c), data); err != nil {
			return fmt.Errorf("jobs: store batch: %w", err)
		}
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("jobs: encode: %w", err)
	}
	if _, err := s.batches.Create(ctx, headerKey(rec.Key, rec.ID), data); err != nil {
		return fmt.Errorf("jobs: store batch: %w", err)
	}
	return nil
}

// storeItems stores the job of every item of the batch rec, as Submit
// stores one. On an error it cancels the batch, so that the items already
// stored do not run (the executor ends items of a canceled batch without
// running them), and returns the error.
func (s *Service) storeItems(ctx context.Context, rec *batchRecord, items []BatchItem, refs []batchRef, now time.Time) error {
	err := parallel(ctx, len(items), func(ctx context.Context, i int) error {
		sub := Submission{Key: rec.Key, Endpoint: EndpointMessages, Model: items[i].Model, Body: items[i].Params,
			Lane: rec.Lane, CallbackURL: rec.CallbackURL, BatchID: rec.ID, CustomID: items[i].CustomID}
		if err := validate(&sub); err != nil {
			return err
		}
		_, err := s.store(ctx, refs[i].JobID, now, &sub, true)
		return err
	})
	if err == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, _, uerr := s.updateBatch(cctx, rec.Key, rec.ID, func(r *batchRecord) bool {
		r.CancelInitiatedAt = &now
		return true
	}); uerr != nil {
		s.log.Warn("cancel partly stored batch", logctx.BatchID, rec.ID, "error", uerr)
	}
	return err
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
