package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/workers/logctx"
)

// Ending batch items without running them (CancelBatch, and the executor's
// gate for items of expired, canceled or deleted batches) and DeleteBatch.

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
		s.log.Warn("publish ended batch item", j.ref().attrs("error", err)...)
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
		s.retryLater(msg, m.ref(), err)
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
		s.retryLater(msg, m.ref(), err)
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
			s.log.Warn("delete batch items", logctx.BatchID, id, "error", err)
		}
	}
	_ = parallel(ctx, len(e.refs), func(ctx context.Context, i int) error {
		if err := s.state.Delete(ctx, e.refs[i].JobID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.log.Warn("delete batch item", jobRef{id: e.refs[i].JobID, batchID: id}.attrs("error", err)...)
		}
		return nil
	})
	return nil
}
