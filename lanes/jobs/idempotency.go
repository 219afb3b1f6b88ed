package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Idempotency keys: claiming a key for a job id in RELAY_JOB_IDEM, and the
// fingerprint that refuses a reused key with another request.

// claim claims sub's idempotency key for id with kv.Create (the first
// wins). When an earlier submission holds it, claim returns its id and
// held, after checking that it asked for the same (else
// ErrIdempotencyMismatch).
func (s *Service) claim(ctx context.Context, sub *Submission, id string) (prev string, held bool, err error) {
	ik := idemKey(sub.Key, sub.IdempotencyKey)
	fp := fingerprint(sub)
	_, err = s.idem.Create(ctx, ik, []byte(id+" "+fp))
	if err == nil {
		return "", false, nil
	}
	if !isConflict(err) {
		return "", false, fmt.Errorf("jobs: idempotency key: %w", err)
	}
	e, err := s.idem.Get(ctx, ik)
	if err != nil {
		return "", false, fmt.Errorf("jobs: idempotency key: %w", err)
	}
	prev, prevFP, hasFP := strings.Cut(string(e.Value()), " ")
	if hasFP && prevFP != fp {
		return "", false, fmt.Errorf("%w: %q", ErrIdempotencyMismatch, sub.IdempotencyKey)
	}
	return prev, true, nil
}

// resumeClaim returns the job of prev, the earlier submission holding
// sub's idempotency key, and whether this call created it. One claimed
// but never recorded (a crash between the claim and the job message) is
// finished now, under the claimed id and its time (now if the id tells
// none); one not accepted (answered with an error, never run) is replaced
// by a new job under a fresh id (created).
func (s *Service) resumeClaim(ctx context.Context, sub *Submission, prev string, now time.Time) (Job, bool, error) {
	if j, _, err := s.load(ctx, prev); err == nil && notAccepted(&j) {
		// The earlier attempt was answered with an error and never runs:
		// this one is the submission, under a fresh id.
		return s.reclaim(ctx, sub, prev, now)
	} else if err == nil {
		return j, false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return Job{}, false, err
	}
	if t, err := TimeOf(prev); err == nil {
		now = t.UTC()
	}
	j, err := s.store(ctx, prev, now, sub, false)
	return j, false, err
}

// reclaim moves sub's idempotency key from prev (a job not accepted) to
// a fresh id by compare-and-set, and stores the job under it (created).
// Losing the compare-and-set means a concurrent retry moved it: that
// one's job is returned.
func (s *Service) reclaim(ctx context.Context, sub *Submission, prev string, now time.Time) (Job, bool, error) {
	ik := idemKey(sub.Key, sub.IdempotencyKey)
	e, err := s.idem.Get(ctx, ik)
	if err != nil {
		return Job{}, false, fmt.Errorf("jobs: idempotency key: %w", err)
	}
	cur, _, _ := strings.Cut(string(e.Value()), " ")
	if cur != prev {
		return s.resumeClaim(ctx, sub, cur, now)
	}
	id := NewID(now)
	if _, err := s.idem.Update(ctx, ik, []byte(id+" "+fingerprint(sub)), e.Revision()); err != nil {
		if isConflict(err) {
			return s.reclaim(ctx, sub, prev, now)
		}
		return Job{}, false, fmt.Errorf("jobs: idempotency key: %w", err)
	}
	j, err := s.store(ctx, id, now, sub, true)
	return j, err == nil, err
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
