package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/workers/logctx"
)

// A batch's state as clients see it: each item's outcome, the counts, the
// end once every item is final (GetBatch, ListBatches).

// outcome is an item's result type; outcomeProcessing is not final.
type outcome uint8

const (
	outcomeProcessing outcome = iota
	outcomeSucceeded
	outcomeErrored
	outcomeCanceled
	outcomeExpired
)

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
	c, ended, err := s.count(ctx, r, e)
	if err != nil {
		return Batch{}, err
	}
	if c.Processing > 0 {
		return r.batch(c), nil
	}
	if ended.IsZero() {
		ended = s.now()
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
		s.log.Warn("record batch end", logctx.BatchID, r.ID, "error", err)
		r.Counts, r.EndedAt = &c, &ended
		return r.batch(c), nil
	}
	*r = nr
	return r.batch(*r.Counts), nil
}

// count reads the records of e's items whose outcome is not final yet,
// caches the outcomes that became final, and returns the counts now and
// when the last final item finished.
func (s *Service) count(ctx context.Context, r *batchRecord, e *cacheEntry) (RequestCounts, time.Time, error) {
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
		return RequestCounts{}, time.Time{}, err
	}
	now := s.now()
	var c RequestCounts
	e.mu.Lock()
	defer e.mu.Unlock()
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
	return c, e.lastFinish, nil
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
