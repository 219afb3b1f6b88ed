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
	return &Store{kv: kv}, nil
}

// Create stores r, a new key; ErrExists when its name is taken.
func (s *Store) Create(ctx context.Context, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("keystore: encode %s: %w", r.Name, err)
	}
	if _, err := s.kv.Create(ctx, r.Name, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrExists
		}
		return fmt.Errorf("keystore: create %s: %w", r.Name, err)
	}
	return nil
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
// returning an error (returned as is). A write that raced another relay's
// is retried on the new record, so no change is lost.
func (s *Store) Update(ctx context.Context, name string, change func(*Record) error) (Record, error) {
	for {
		r, rev, err := s.Get(ctx, name)
		if err != nil {
			return Record{}, err
		}
		if err := change(&r); err != nil {
			return Record{}, err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return Record{}, fmt.Errorf("keystore: encode %s: %w", name, err)
		}
		_, err = s.kv.Update(ctx, name, b, rev)
		if err == nil {
			return r, nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
			return Record{}, fmt.Errorf("keystore: update %s: %w", name, err)
		}
		if ctx.Err() != nil {
			return Record{}, ctx.Err()
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
				continue
			}
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
			}
		}
	}
}
