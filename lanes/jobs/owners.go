package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Executor liveness: every running Service puts its instance id in
// RELAY_EXECUTORS every ownerBeat; the bucket's TTL (ownerTTL) removes
// the key of a process that stopped. A job's record names the instance
// running it (Owner); a redelivery that finds the job running under a
// live owner leaves it alone (see the package doc, Heartbeats).

// ExecutorsBucket holds one key per running executor (its instance id),
// kept by heartbeats and removed by TTL.
const ExecutorsBucket = "RELAY_EXECUTORS"

// Liveness timing: an executor is alive while its key, put every
// ownerBeat, is younger than ownerTTL.
const (
	ownerBeat = time.Second
	ownerTTL  = 4 * time.Second
	// ownerBusyDelay is when a redelivered job whose owner is alive is
	// looked at again.
	ownerBusyDelay = 500 * time.Millisecond
)

// newInstance returns a random instance id: a restarted process is a new
// executor, so the jobs its previous run held are taken over.
func newInstance() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "x" + hex.EncodeToString(b)
}

// declareExecutors creates or converges ExecutorsBucket.
func (s *Service) declareExecutors(ctx context.Context) (jetstream.KeyValue, error) {
	return s.assets.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: ExecutorsBucket, TTL: ownerTTL,
		Storage: jetstream.FileStorage, History: 1, Description: "relay: live job executors (heartbeats)"}, false)
}

// beat puts this executor's key every ownerBeat until ctx ends, then
// deletes it (a clean stop hands its jobs over at once).
func (s *Service) beat(ctx context.Context) {
	t := time.NewTicker(ownerBeat)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, ownerBeat)
		if _, err := s.executors.Put(pctx, s.instance, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil && ctx.Err() == nil {
			s.log.Warn("executor heartbeat", "error", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = s.executors.Delete(dctx, s.instance)
			cancel()
			return
		case <-t.C:
		}
	}
}

// ownerAlive reports whether the executor instance id still beats. A
// store error counts as alive: better to wait than to run a job twice.
func (s *Service) ownerAlive(ctx context.Context, id string) bool {
	if id == "" || id == s.instance {
		return false // none recorded, or this process (which no longer runs it)
	}
	_, err := s.executors.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return false
	}
	return true
}

// slot is one place among the jobs pulled and not started; release is
// idempotent and a nil slot does nothing.
type slot struct {
	ch   chan struct{}
	once sync.Once
}

type slotKey struct{}

// takeSlot waits for a place in waiting (none needed when nil); false
// when ctx ends first.
func takeSlot(ctx context.Context, waiting chan struct{}) (*slot, bool) {
	if waiting == nil {
		return nil, true
	}
	select {
	case waiting <- struct{}{}:
		return &slot{ch: waiting}, true
	case <-ctx.Done():
		return nil, false
	}
}

func (s *slot) release() {
	if s == nil {
		return
	}
	s.once.Do(func() { <-s.ch })
}

// releaseSlot releases the waiting slot of the job handled with ctx: it
// started (or ended).
func releaseSlot(ctx context.Context) {
	if sl, ok := ctx.Value(slotKey{}).(*slot); ok {
		sl.release()
	}
}
