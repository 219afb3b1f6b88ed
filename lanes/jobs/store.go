package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The record store: reading, creating and updating job and batch records in
// their KV buckets. Every change goes through the one compare-and-set loop
// (update), so Cancel, the executor and batch operations never both win.

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
