// Package keystore keeps the relay keys made at run time, through the
// admin API, in a replicated JetStream KV bucket (RELAY_KEYS), and serves
// that API (admin.go).
//
// A record holds a key's name, settings and the SHA-256 of its secret,
// never the secret itself; after a rotation it also holds the previous
// secret's SHA-256 and when that stops working. Every relay watches the
// bucket (Watch) and hands each new table of records to the gateway and
// the embedded NATS server, so a key created, changed, rotated or revoked
// on one relay takes effect on all of them as soon as the change reaches
// them (milliseconds on a healthy cluster). A revoked key's record stays,
// marked revoked, so its name is never reused (usage is counted by name).
package keystore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/lanes/assets"
)

// Bucket is the KV bucket of key records.
const Bucket = "RELAY_KEYS"

// Errors of the store.
var (
	// ErrNotFound: no record of that name.
	ErrNotFound = errors.New("keystore: no such key")
	// ErrExists: a record of that name exists (maybe revoked).
	ErrExists = errors.New("keystore: key exists")
	// ErrRevoked: the key is revoked and cannot change.
	ErrRevoked = errors.New("keystore: key revoked")
)

// Record is one key made at run time, as stored.
type Record struct {
	// Name identifies the key (logs, metrics, NATS subjects).
	Name string `json:"name"`
	// SHA256 is the hex SHA-256 of the current secret.
	SHA256 string `json:"sha256"`
	// PrevSHA256 is the hex SHA-256 of the secret before the last
	// rotation, valid until PrevUntil; "" when none.
	PrevSHA256 string `json:"prev_sha256,omitempty"`
	// PrevUntil is when the previous secret stops working.
	PrevUntil time.Time `json:"prev_until,omitzero"`
	// DefaultLane is the lane of requests that name none; "": the first
	// lane the key may use.
	DefaultLane string `json:"default_lane,omitempty"`
	// Lanes the key may use; empty: every lane.
	Lanes []string `json:"lanes,omitempty"`
	// Routes the key may use; empty: every route.
	Routes []string `json:"routes,omitempty"`
	// KeyLimits are the key's own limits (zero: none of that kind).
	configs.KeyLimits
	// Budget caps the key's spend; nil: none.
	Budget *configs.Budget `json:"budget,omitempty"`
	// Created and Updated are when the record was made and last changed.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Revoked is set when the key was revoked, at RevokedAt.
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Sum returns the SHA-256 of the current secret.
func (r Record) Sum() ([32]byte, error) { return decodeSum(r.SHA256) }

// PrevSum returns the SHA-256 of the previous secret and whether it is
// still valid at now.
func (r Record) PrevSum(now time.Time) ([32]byte, bool) {
	if r.PrevSHA256 == "" || !now.Before(r.PrevUntil) {
		return [32]byte{}, false
	}
	sum, err := decodeSum(r.PrevSHA256)
	return sum, err == nil
}

func decodeSum(s string) ([32]byte, error) {
	var sum [32]byte
	if len(s) != 2*len(sum) {
		return sum, fmt.Errorf("keystore: bad sha256 %q", s)
	}
	if _, err := hex.Decode(sum[:], []byte(s)); err != nil {
		return sum, fmt.Errorf("keystore: bad sha256: %w", err)
	}
	return sum, nil
}

// Store reads and writes key records.
type Store struct {
	kv jetstream.KeyValue

	// applied is the bucket revision the Watch of this store has last
	// applied, so that a write answered by this relay is in force here
	// before its answer (WaitApplied).
	mu      sync.Mutex
	applied uint64
	moved   chan struct{} // closed and replaced when applied grows
}

// Open declares the bucket (replicated as nats.replicas says, through
// decl) and returns the store.
func Open(ctx context.Context, decl *assets.Declarer) (*Store, error) {
	// No direct gets: a read must see every write acknowledged before it.
	kv, err := decl.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1,
		Storage: jetstream.FileStorage, Description: "relay: keys made through the admin API"}, false)
	if err != nil {
		return nil, fmt.Errorf("keystore: declare bucket %s: %w", Bucket, err)
	}
	return &Store{kv: kv, moved: make(chan struct{})}, nil
}

// setApplied records that Watch has applied the bucket up to rev.
func (s *Store) setApplied(rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev > s.applied {
		s.applied = rev
		close(s.moved)
		s.moved = make(chan struct{})
	}
}

// WaitApplied waits until this store's Watch has applied revision rev of
// the bucket (a write of this relay), or ctx ends: after it, the write is
// in force on this relay. It returns at once when no Watch runs that
// far, with ctx's error.
func (s *Store) WaitApplied(ctx context.Context, rev uint64) error {
	for {
		s.mu.Lock()
		done, moved := s.applied >= rev, s.moved
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("keystore: change %d not applied here yet: %w", rev, ctx.Err())
		case <-moved:
		}
	}
}

// Create stores r, a new key, and returns its revision; ErrExists when
// its name is taken.
func (s *Store) Create(ctx context.Context, r Record) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("keystore: encode %s: %w", r.Name, err)
	}
	rev, err := s.kv.Create(ctx, r.Name, b)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, ErrExists
		}
		return 0, fmt.Errorf("keystore: create %s: %w", r.Name, err)
	}
	return rev, nil
}

// Get returns the record called name, and its revision.
func (s *Store) Get(ctx context.Context, name string) (Record, uint64, error) {
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, ErrNotFound
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("keystore: get %s: %w", name, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, 0, fmt.Errorf("keystore: decode %s: %w", name, err)
	}
	return r, e.Revision(), nil
}

// Update changes the record called name with change, which may refuse by
// returning an error (returned as is), and returns the new record and its
// revision. A write that raced another relay's is retried on the new
// record, so no change is lost.
func (s *Store) Update(ctx context.Context, name string, change func(*Record) error) (Record, uint64, error) {
	for {
		r, rev, err := s.Get(ctx, name)
		if err != nil {
			return Record{}, 0, err
		}
		if err := change(&r); err != nil {
			return Record{}, 0, err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return Record{}, 0, fmt.Errorf("keystore: encode %s: %w", name, err)
		}
		next, err := s.kv.Update(ctx, name, b, rev)
		if err == nil {
			return r, next, nil
		}
		if !assets.IsConflict(err) {
			return Record{}, 0, fmt.Errorf("keystore: update %s: %w", name, err)
		}
		if ctx.Err() != nil {
			return Record{}, 0, ctx.Err()
		}
	}
}

// List returns every record, by name.
func (s *Store) List(ctx context.Context) ([]Record, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("keystore: list: %w", err)
	}
	var names []string
	for n := range lister.Keys() {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]Record, 0, len(names))
	for _, n := range names {
		r, _, err := s.Get(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Watch calls apply with every record (revoked ones included), once the
// bucket's current records are read and again after every change, and at
// every expiry of a rotated secret's grace period (so that what apply
// built from the record can drop it), until ctx ends. apply runs on
// Watch's goroutine, one call at a time; it must not keep the slice.
// Undecodable records are reported to bad and skipped.
func (s *Store) Watch(ctx context.Context, apply func([]Record), bad func(name string, err error)) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("keystore: watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	recs := map[string]Record{}
	ready := false
	var last uint64 // the highest revision seen
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	emit := func() {
		out := make([]Record, 0, len(recs))
		next := time.Time{}
		now := time.Now()
		for _, r := range recs {
			out = append(out, r)
			if r.PrevSHA256 != "" && r.PrevUntil.After(now) && (next.IsZero() || r.PrevUntil.Before(next)) {
				next = r.PrevUntil
			}
		}
		slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Name, b.Name) })
		apply(out)
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(time.Until(next) + 10*time.Millisecond)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			emit()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("keystore: watch of %s ended", Bucket)
			}
			if e == nil { // the current records are all in
				ready = true
				emit()
				s.setApplied(last)
				continue
			}
			last = max(last, e.Revision())
			switch e.Operation() {
			case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
				delete(recs, e.Key())
			default:
				var r Record
				if err := json.Unmarshal(e.Value(), &r); err != nil {
					bad(e.Key(), err)
					continue
				}
				recs[e.Key()] = r
			}
			if ready {
				emit()
				s.setApplied(last)
			}
		}
	}
}
