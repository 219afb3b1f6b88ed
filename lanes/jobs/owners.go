package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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
// ownerBeat, is younger than ownerTTL (the bucket's max age): it may miss
// five beats in a row (2.5 s of a stalled process or store) and still
// count as alive. A killed executor's key is gone ownerTTL after its last
// beat, which with the executor's ack wait (DefaultAckWait) bounds the
// recovery of its jobs (see the package doc, Heartbeats).
const (
	ownerBeat = 500 * time.Millisecond
	ownerTTL  = 3 * time.Second
	// ownerRecheckMin and ownerRecheckMax bound when a redelivered job
	// whose owner is alive is looked at again: when the owner's key
	// would expire if it beat no more.
	ownerRecheckMin = 100 * time.Millisecond
	ownerRecheckMax = time.Second
)

// newInstance returns a random instance id: a restarted process is a new
// executor, so the jobs its previous run held are taken over.
func newInstance() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "x" + hex.EncodeToString(b)
}

// declareExecutors creates or converges ExecutorsBucket. Its TTL is a
// liveness timeout, not a retention: one longer than ownerTTL (made by an
// earlier version, which used 4 s) only delays recovery and is shortened
// here first, which loses nothing (logged); the shared rule of package
// assets would keep the longer one.
func (s *Service) declareExecutors(ctx context.Context) (jetstream.KeyValue, error) {
	if st, err := s.js.Stream(ctx, "KV_"+ExecutorsBucket); err == nil {
		if c := st.CachedInfo().Config; c.MaxAge > ownerTTL {
			old := c.MaxAge
			c.MaxAge, c.Duplicates = ownerTTL, min(c.Duplicates, ownerTTL)
			if _, err := s.js.UpdateStream(ctx, c); err != nil {
				return nil, fmt.Errorf("shorten the liveness TTL: %w", err)
			}
			s.log.Info("shortened the executors' liveness TTL", "bucket", ExecutorsBucket, "ttl_s", fmt.Sprintf("%g -> %g", old.Seconds(), ownerTTL.Seconds()))
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	return s.assets.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: ExecutorsBucket, TTL: ownerTTL,
		Storage: jetstream.FileStorage, History: 1, Description: "relay: live job executors (heartbeats)"}, false)
}

// beat puts this executor's key every ownerBeat until ctx ends, then
// deletes it (a clean stop hands its jobs over at once).
func (s *Service) beat(ctx context.Context) {
	t := time.NewTicker(ownerBeat)
	defer t.Stop()
	for {
		// A slow put still counts once it lands: give it half the TTL.
		pctx, cancel := context.WithTimeout(ctx, ownerTTL/2)
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

// ownerAlive reports whether the executor instance id still beats and,
// when it does, how long to wait before looking again: until its key
// would expire if the beat just seen were its last (the key's time is
// the server's, so a skewed clock only moves the next look, within
// ownerRecheckMin and ownerRecheckMax). A store error counts as alive:
// better to wait than to run a job twice.
func (s *Service) ownerAlive(ctx context.Context, id string) (bool, time.Duration) {
	if id == "" || id == s.instance {
		return false, 0 // none recorded, or this process (which no longer runs it)
	}
	// Bounded: while the bucket elects a leader a read gets no answer
	// (JetStream's default timeout is 5 s), and the delivery holds a
	// worker and a waiting slot meanwhile.
	gctx, cancel := context.WithTimeout(ctx, ownerRecheckMax)
	defer cancel()
	e, err := s.executors.Get(gctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return false, 0
	case err != nil:
		return true, ownerRecheckMax
	}
	left := time.Until(e.Created().Add(ownerTTL)) + 50*time.Millisecond
	return true, min(max(left, ownerRecheckMin), ownerRecheckMax)
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
