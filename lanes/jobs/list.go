package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Listing a key's jobs (GET /v1/jobs): the per-key index and ListJobs.
//
// The index lives in RELAY_JOB_STATE beside the records, one entry per
// job: "k.<key-token>.<lane-token>.<job-id>" (job records are keyed
// "job_...", so the two never meet). It is written when the record is
// created (ensure) and written again when the job becomes terminal
// (afterTerminal), so the bucket's TTL (result_ttl from the last write)
// removes it with the record, never before the record's expires_at.
// Entries are never updated, so concurrent submissions never conflict.
// Message batch items are not indexed: they are listed through their
// batch.

// List page sizes.
const (
	// DefaultListLimit is the page size when none is asked for.
	DefaultListLimit = 20
	// MaxListLimit caps the page size; larger limits are cut to it.
	MaxListLimit = 1000
)

// indexPrefix starts the index entries in StateBucket.
const indexPrefix = "k."

// JobQuery selects a page of a key's jobs for ListJobs.
type JobQuery struct {
	// Limit is the page size: 0 is DefaultListLimit, above MaxListLimit
	// is MaxListLimit.
	Limit int
	// AfterID lists the jobs older than it; BeforeID the jobs newer than
	// it (the ones nearest to it). At most one may be set.
	AfterID, BeforeID string
	// Status, when set, keeps the jobs with that status.
	Status string
	// Lane, when set, keeps the jobs on that lane.
	Lane string
	// CreatedAfter, when not zero, keeps the jobs created after it.
	CreatedAfter time.Time
}

// JobPage is a page of jobs, newest first, shaped like the Message Batches
// list.
type JobPage struct {
	// Data are the jobs of the page.
	Data []Job `json:"data"`
	// HasMore says whether more matching jobs lie beyond the page in the
	// direction of the listing.
	HasMore bool `json:"has_more"`
	// FirstID and LastID are the ids of the first and last job of the
	// page (null when it is empty).
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
}

// indexKey returns the index entry of a job.
func indexKey(key, lane, id string) string {
	return indexPrefix + token(key) + "." + token(lane) + "." + id
}

// putIndex writes (or refreshes) j's index entry; batch items have none.
func (s *Service) putIndex(ctx context.Context, j *Job) error {
	if j.BatchID != "" {
		return nil
	}
	if _, err := s.state.Put(ctx, indexKey(j.KeyName, j.Lane, j.ID), []byte(j.ID)); err != nil {
		return fmt.Errorf("jobs: index job: %w", err)
	}
	return nil
}

// ListJobs returns a page of key's jobs, newest first (job ids are ULIDs,
// so id order is creation order), filtered by q. It reads key's index
// entries (O(jobs of the key), never another key's) and the records of
// the candidates until the page is full. A job whose record is gone or
// past its expires_at is left out, as is another key's (two key names
// with the same subject token): a cursor names a position only, so no
// cursor can reach another key's jobs.
func (s *Service) ListJobs(ctx context.Context, key string, q JobQuery) (JobPage, error) {
	if q.AfterID != "" && q.BeforeID != "" {
		return JobPage{}, fmt.Errorf("%w: after_id and before_id cannot be used together", ErrInvalid)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	ids, err := s.indexedIDs(ctx, key, q.Lane)
	if err != nil {
		return JobPage{}, err
	}
	if !q.CreatedAfter.IsZero() { // ids run newest first
		ids = ids[:sort.Search(len(ids), func(i int) bool { return !timeOf(ids[i]).After(q.CreatedAfter) })]
	}
	newer := func(a, b string) int { return strings.Compare(b, a) }
	var cand []string
	switch {
	case q.BeforeID != "":
		end, _ := slices.BinarySearchFunc(ids, q.BeforeID, newer)
		cand = slices.Clone(ids[:end])
		slices.Reverse(cand) // nearest to before_id first
	case q.AfterID != "":
		i, found := slices.BinarySearchFunc(ids, q.AfterID, newer)
		if found {
			i++
		}
		cand = ids[i:]
	default:
		cand = ids
	}
	got, more, err := s.collect(ctx, key, &q, cand, limit)
	if err != nil {
		return JobPage{}, err
	}
	if q.BeforeID != "" {
		slices.Reverse(got)
	}
	page := JobPage{Data: got, HasMore: more}
	if n := len(got); n > 0 {
		first, last := got[0].ID, got[n-1].ID
		page.FirstID, page.LastID = &first, &last
	}
	return page, nil
}

// timeOf is TimeOf for an id known to be valid.
func timeOf(id string) time.Time {
	t, _ := TimeOf(id)
	return t
}

// indexedIDs returns the ids in key's index entries (on lane, when set),
// newest first.
func (s *Service) indexedIDs(ctx context.Context, key, lane string) ([]string, error) {
	laneTok := "*"
	if lane != "" {
		laneTok = token(lane)
	}
	lister, err := s.state.ListKeysFiltered(ctx, indexPrefix+token(key)+"."+laneTok+".*")
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, fmt.Errorf("jobs: list jobs: %w", err)
	}
	var ids []string
	if lister != nil {
		for k := range lister.Keys() {
			if id := k[strings.LastIndexByte(k, '.')+1:]; ValidID(id) {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	slices.Reverse(ids)
	return ids, nil
}

// collect reads the records of cand in order, a chunk at a time, and
// keeps those of key matching q, until it has limit of them; more reports
// whether another matching job follows.
func (s *Service) collect(ctx context.Context, key string, q *JobQuery, cand []string, limit int) ([]Job, bool, error) {
	out := make([]Job, 0, min(limit, len(cand)))
	for len(cand) > 0 {
		need := limit + 1 - len(out)
		n := min(len(cand), max(need, 32))
		js, err := s.loadJobs(ctx, cand[:n])
		if err != nil {
			return nil, false, err
		}
		cand = cand[n:]
		for _, j := range js {
			if !s.listed(j, key, q) {
				continue
			}
			if len(out) == limit {
				return out, true, nil
			}
			out = append(out, j.clone())
		}
	}
	return out, false, nil
}

// listed reports whether j (nil when its record is gone) is key's, not
// expired, and matches q's filters.
func (s *Service) listed(j *Job, key string, q *JobQuery) bool {
	switch {
	case j == nil || j.KeyName != key || j.BatchID != "":
		return false
	case j.ExpiresAt != nil && !s.now().Before(*j.ExpiresAt):
		return false
	case q.Status != "" && j.Status != q.Status:
		return false
	case q.Lane != "" && j.Lane != q.Lane:
		return false
	case !q.CreatedAfter.IsZero() && !j.CreatedAt.After(q.CreatedAfter):
		return false
	}
	return true
}
