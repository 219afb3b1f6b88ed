package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Get and Cancel: what a client can ask of one job.

// Get returns key's job id. Another key's job, or an unknown id, is
// ErrNotFound; a job past its retention is ErrExpired. A queued job comes
// with its queue position and, when known, its estimated start
// (position.go).
func (s *Service) Get(ctx context.Context, key, id string) (Job, error) {
	j, err := s.get(ctx, key, id)
	if err == nil {
		s.queueView(ctx, &j)
	}
	return j, err
}

// get is Get without the queue position.
func (s *Service) get(ctx context.Context, key, id string) (Job, error) {
	if !ValidID(id) {
		return Job{}, ErrNotFound
	}
	j, _, err := s.load(ctx, id)
	if err == nil && notAccepted(&j) {
		return Job{}, ErrNotFound // answered with an error: never a job
	}
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
	if _, err := s.get(ctx, key, id); err != nil {
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
		s.log.Warn("publish canceled job", j.ref().attrs("error", err)...)
	}
	return j.clone(), nil
}
