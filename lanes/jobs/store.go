package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/relaygw/relay/lanes/assets"
)

// The record store: reading, creating and updating job and batch records in
// their KV buckets. Every change goes through the one compare-and-set loop
// (casUpdate), so Cancel, the executor and batch operations never both win.

// ensure returns the record of m, creating it (queued) when missing.
func (s *Service) ensure(ctx context.Context, m *message) (Job, uint64, error) {
	return s.ensureRecord(ctx, m, false)
}

// ensureRecord is ensure; with indexed, a record found already created
// (by the executor, which won the race with Submit) gets its index entry
// too, so a job is listed by the time its submission is answered.
func (s *Service) ensureRecord(ctx context.Context, m *message, indexed bool) (Job, uint64, error) {
	j := m.record()
	data, _ := json.Marshal(&j)
	rev, err := s.state.Create(ctx, m.ID, data)
	if err == nil {
		if err := s.putIndex(ctx, &j); err != nil { // refreshed again at the end (afterTerminal)
			s.log.Warn("index job", m.ref().attrs("error", err)...)
		}
		return j, rev, nil
	}
	if !isConflict(err) {
		return Job{}, 0, fmt.Errorf("jobs: record job: %w", err)
	}
	j, rev, err = s.load(ctx, m.ID)
	if err == nil && indexed && !notAccepted(&j) {
		if err := s.putIndex(ctx, &j); err != nil {
			s.log.Warn("index job", m.ref().attrs("error", err)...)
		}
	}
	return j, rev, err
}

// load returns a job's record and its revision, or ErrNotFound.
func (s *Service) load(ctx context.Context, id string) (Job, uint64, error) {
	return getRecord[Job](ctx, s.state, id, "job")
}

// getRecord reads the record under key in kv, with its revision; a
// missing key is ErrNotFound. what names the record in errors.
func getRecord[T any](ctx context.Context, kv jetstream.KeyValue, key, what string) (T, uint64, error) {
	var v T
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return v, 0, ErrNotFound
		}
		return v, 0, fmt.Errorf("jobs: read %s: %w", what, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		var zero T
		return zero, 0, fmt.Errorf("jobs: decode %s %s: %w", what, key, err)
	}
	return v, e.Revision(), nil
}

// update applies f to the record of id with optimistic concurrency,
// re-reading on a conflict. f returns false to leave the record alone.
func (s *Service) update(ctx context.Context, id string, f func(j *Job) bool) (Job, bool, error) {
	return casUpdate(ctx, s.state, id, "job", func(ctx context.Context) (Job, uint64, error) { return s.load(ctx, id) }, f)
}

// casUpdate is the one compare-and-set loop of the package: it loads a
// record with load, applies f (false leaves it alone) and writes it back
// to kv under key only if its revision is still the one read, loading
// again on a conflict. It reports whether it wrote. what names the record
// in errors.
func casUpdate[T any](ctx context.Context, kv jetstream.KeyValue, key, what string,
	load func(context.Context) (T, uint64, error), f func(*T) bool) (T, bool, error) {
	var zero T
	for {
		v, rev, err := load(ctx)
		if err != nil {
			return zero, false, err
		}
		if !f(&v) {
			return v, false, nil
		}
		data, err := json.Marshal(&v)
		if err != nil {
			return zero, false, fmt.Errorf("jobs: encode: %w", err)
		}
		if _, err := kv.Update(ctx, key, data, rev); err != nil {
			if isConflict(err) {
				continue
			}
			return zero, false, fmt.Errorf("jobs: write %s: %w", what, err)
		}
		return v, true, nil
	}
}

// isConflict reports whether err is a lost compare-and-set
// (assets.IsConflict).
func isConflict(err error) bool { return assets.IsConflict(err) }

// finishFields sets the terminal timestamps of j.
func (s *Service) finishFields(j *Job, now time.Time) {
	j.FinishedAt = &now
	exp := now.Add(s.opts.ResultTTL)
	j.ExpiresAt = &exp
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

// loadBatch returns key's batch record id and its revision, or
// ErrNotFound.
func (s *Service) loadBatch(ctx context.Context, key, id string) (batchRecord, uint64, error) {
	if !ValidBatchID(id) {
		return batchRecord{}, 0, ErrNotFound
	}
	r, rev, err := getRecord[batchRecord](ctx, s.batches, headerKey(key, id), "batch")
	if err != nil {
		return batchRecord{}, 0, err
	}
	if r.Key != key { // two key names with the same subject token
		return batchRecord{}, 0, ErrNotFound
	}
	return r, rev, nil
}

// updateBatch applies f to a batch record with optimistic concurrency.
func (s *Service) updateBatch(ctx context.Context, key, id string, f func(r *batchRecord) bool) (batchRecord, bool, error) {
	return casUpdate(ctx, s.batches, headerKey(key, id), "batch",
		func(ctx context.Context) (batchRecord, uint64, error) { return s.loadBatch(ctx, key, id) }, f)
}
