package budgets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the JetStream KV bucket holding the budgets' state: one
// record per key and period (spent, and the chunks each relay holds).
const Bucket = "RELAY_BUDGETS"

// ErrConflict is a compare-and-set that lost: the record changed since it
// was read.
var ErrConflict = errors.New("budgets: record changed")

// Store holds the budget records shared by the relays. Get returns a nil
// value and revision 0 for a missing record; Put with revision 0 creates
// the record, else replaces the revision given, and returns ErrConflict
// (wrapped) when another writer came first.
type Store interface {
	Get(ctx context.Context, key string) (value []byte, rev uint64, err error)
	Put(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
}

// KVStore is a Store over a JetStream KV bucket (Bucket, declared with the
// relays' replica count by package lanes/assets).
type KVStore struct {
	KV jetstream.KeyValue
}

// Get implements Store.
func (s KVStore) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := s.KV.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return nil, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("budgets: read %s: %w", key, err)
	}
	return e.Value(), e.Revision(), nil
}

// Put implements Store.
func (s KVStore) Put(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	var (
		n   uint64
		err error
	)
	if rev == 0 {
		n, err = s.KV.Create(ctx, key, value)
	} else {
		n, err = s.KV.Update(ctx, key, value, rev)
	}
	if err != nil {
		if isConflict(err) {
			return 0, fmt.Errorf("%w: %s", ErrConflict, key)
		}
		return 0, fmt.Errorf("budgets: write %s: %w", key, err)
	}
	return n, nil
}

// conflictCodes are the JetStream API error codes of a compare-and-set
// that lost: 10071 (a single server) and 10164 (replicated streams).
var conflictCodes = []jetstream.ErrorCode{
	jetstream.JSErrCodeStreamWrongLastSequence,
	jetstream.JSErrCodeStreamWrongLastSequenceConstant,
}

// isConflict reports whether err is a lost compare-and-set, matched on
// nats.go's sentinels and the API error code, never on text.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && slices.Contains(conflictCodes, apiErr.ErrorCode)
}

// MemStore is a Store in memory, for a single relay without shared state
// and for tests. Its zero value is ready; Fail makes it unreachable.
type MemStore struct {
	mu   sync.Mutex
	recs map[string]memRec
	rev  uint64
	down bool
}

type memRec struct {
	v   []byte
	rev uint64
}

// ErrUnreachable is MemStore's answer while Fail(true) is in force.
var errMemDown = errors.New("budgets: store unreachable")

// Fail makes the store unreachable (true) or reachable again.
func (m *MemStore) Fail(down bool) {
	m.mu.Lock()
	m.down = down
	m.mu.Unlock()
}

// Get implements Store.
func (m *MemStore) Get(_ context.Context, key string) ([]byte, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, 0, errMemDown
	}
	r := m.recs[key]
	return slices.Clone(r.v), r.rev, nil
}

// Put implements Store.
func (m *MemStore) Put(_ context.Context, key string, value []byte, rev uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return 0, errMemDown
	}
	if m.recs == nil {
		m.recs = map[string]memRec{}
	}
	if m.recs[key].rev != rev {
		return 0, fmt.Errorf("%w: %s", ErrConflict, key)
	}
	m.rev++
	m.recs[key] = memRec{v: slices.Clone(value), rev: m.rev}
	return m.rev, nil
}
