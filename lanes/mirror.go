// This file owns the RELAY_LANES mirror: a JetStream copy of the parked
// requests, sized from the lane specs.

package lanes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/lanes/assets"
)

// Stream and subject names of the lane mirror.
const (
	// StreamName is the JetStream stream mirroring parked requests.
	StreamName = "RELAY_LANES"
	// SubjectPrefix prefixes the lane name in mirror subjects.
	SubjectPrefix = "relay.lanes."
)

// mirrorWriters is how many goroutines write the mirror. A request's
// records always go to the same writer, in the order the Set made them
// (under its lock), so its park is written before its unpark.
const mirrorWriters = 8

// mirror writes parked requests to RELAY_LANES and deletes them when they
// leave, off the request path. Records wait in per-writer queues that
// grow with a burst (nothing is allocated up front) up to twice the lanes'
// total depth; past that a record is dropped and counted
// (relay_lane_mirror_dropped_total), never the request itself. A nil
// *mirror does nothing.
type mirror struct {
	js      jetstream.JetStream
	assets  *assets.Declarer
	stream  jetstream.Stream
	log     *slog.Logger
	writers [mirrorWriters]*mirrorWriter
	wg      sync.WaitGroup
	limit   atomic.Int64 // records one writer may hold queued
	dropped atomic.Int64
	cfg     atomic.Pointer[jetstream.StreamConfig] // the stream's, for repair
}

// mirrorWriter writes the records of the requests whose id it owns.
type mirrorWriter struct {
	m      *mirror
	wake   chan struct{} // one slot
	mu     sync.Mutex
	queue  []mirrorOp
	closed bool
	seqs   map[uint64]uint64 // entry id -> stream sequence; run's own
}

type mirrorOp struct {
	park             bool
	id               uint64
	lane, key, route string
	at               time.Time
}

// openMirror creates the stream or converges it (package assets' rule:
// limits are only raised): memory storage, one subject per lane, bounded
// by the lanes' total depth and longest wait. Several relays share it,
// so nothing is purged: records a previous run of this relay left (its
// waiters are gone) expire with the stream's max age (the longest
// max_wait + 1 m).
func openMirror(ctx context.Context, js jetstream.JetStream, decl *assets.Declarer, specs []Spec, log *slog.Logger) (*mirror, error) {
	st, err := decl.Stream(ctx, streamConfig(specs))
	if err != nil {
		return nil, fmt.Errorf("lanes: create stream %s: %w", StreamName, err)
	}
	m := &mirror{js: js, assets: decl, stream: st, log: log}
	m.setLimit(specs)
	cfg := streamConfig(specs)
	m.cfg.Store(&cfg)
	for i := range m.writers {
		w := &mirrorWriter{m: m, wake: make(chan struct{}, 1), seqs: map[uint64]uint64{}}
		m.writers[i] = w
		m.wg.Add(1)
		go w.run()
	}
	return m, nil
}

// setLimit bounds the queued records: a park and an unpark for every
// request the lanes may hold, spread over the writers.
func (m *mirror) setLimit(specs []Spec) {
	var depth int64
	for _, sp := range specs {
		depth += int64(sp.MaxDepth)
	}
	m.limit.Store(max(2*depth/mirrorWriters, 1024))
}

func (m *mirror) park(id uint64, lane, key, route string) {
	if m == nil {
		return
	}
	m.send(mirrorOp{park: true, id: id, lane: lane, key: key, route: route, at: time.Now()})
}

func (m *mirror) unpark(id uint64) {
	if m == nil {
		return
	}
	m.send(mirrorOp{id: id})
}

func (m *mirror) send(op mirrorOp) {
	w := m.writers[op.id%mirrorWriters]
	w.mu.Lock()
	if w.closed || int64(len(w.queue)) >= m.limit.Load() {
		w.mu.Unlock()
		m.dropped.Add(1)
		return
	}
	w.queue = append(w.queue, op)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// close stops the writers after they have written what is queued.
func (m *mirror) close() {
	if m == nil {
		return
	}
	for _, w := range m.writers {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	m.wg.Wait()
}

// run writes w's queue until the mirror closes and the queue is empty.
func (w *mirrorWriter) run() {
	defer w.m.wg.Done()
	ctx := context.Background()
	var batch []mirrorOp
	for {
		w.mu.Lock()
		batch, w.queue = w.queue, batch[:0]
		closed := w.closed
		w.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			if cap(batch) > 1024 {
				batch = nil // a burst is over: give its queue back
			}
			<-w.wake
			continue
		}
		for _, op := range batch {
			w.write(ctx, op)
		}
		clear(batch)
	}
}

// write writes one record.
func (w *mirrorWriter) write(ctx context.Context, op mirrorOp) {
	m := w.m
	if !op.park {
		// A request's park has been written by now; when it is not known,
		// its park was dropped or failed: nothing to do.
		if seq, ok := w.seqs[op.id]; ok {
			delete(w.seqs, op.id)
			m.delete(ctx, seq)
		}
		return
	}
	data := []byte(`{"id":` + strconv.FormatUint(op.id, 10) + `,"key":` + strconv.Quote(op.key) +
		`,"route":` + strconv.Quote(op.route) + `,"parked_at":"` + op.at.UTC().Format(time.RFC3339Nano) + `"}`)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	ack, err := m.js.Publish(pctx, SubjectPrefix+op.lane, data)
	cancel()
	if err != nil {
		m.log.Warn("lane mirror publish", "error", err)
		return
	}
	w.seqs[op.id] = ack.Sequence
}

func (m *mirror) delete(ctx context.Context, seq uint64) {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := m.stream.DeleteMsg(dctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		m.log.Warn("lane mirror delete", "error", err)
	}
}

// streamConfig sizes the mirror stream for specs: their total depth and
// longest wait.
func streamConfig(specs []Spec) jetstream.StreamConfig {
	var maxMsgs int64
	var maxAge time.Duration
	for _, sp := range specs {
		maxMsgs += int64(sp.MaxDepth)
		maxAge = max(maxAge, sp.MaxWait)
	}
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Requests parked on the relay's priority lanes (a mirror; the relay's memory is the authority).",
		Subjects:    []string{SubjectPrefix + ">"},
		Storage:     jetstream.MemoryStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     maxMsgs,
		MaxAge:      maxAge + time.Minute,
		// Replicas 0: the Declarer's, like every other asset. An R1
		// mirror whose node died could be neither read nor recreated (its
		// assignment outlives the node), so every relay's health loop
		// failed until that node came back.
	}
}

// resize applies new lane limits to the stream.
func (m *mirror) resize(ctx context.Context, specs []Spec) error {
	if m == nil {
		return nil
	}
	cfg := streamConfig(specs)
	if _, err := m.assets.Stream(ctx, cfg); err != nil {
		return fmt.Errorf("lanes: update stream %s: %w", StreamName, err)
	}
	m.cfg.Store(&cfg)
	m.setLimit(specs)
	return nil
}

// CheckMirror reports whether the RELAY_LANES stream is missing ("stream
// RELAY_LANES missing") or JetStream could not tell; nil without a
// mirror.
func (s *Set) CheckMirror(ctx context.Context) error {
	m := s.currentMirror()
	if m == nil {
		return nil
	}
	if _, err := m.js.Stream(ctx, StreamName); errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s missing", StreamName)
	} else if err != nil {
		return fmt.Errorf("stream %s: %w", StreamName, err)
	}
	return nil
}

// RepairMirror creates RELAY_LANES again, with the configuration it last
// had (a memory stream is gone after JetStream restarts). Records of
// requests parked before are not written again: the mirror catches up as
// requests come and go.
func (s *Set) RepairMirror(ctx context.Context) error {
	m := s.currentMirror()
	if m == nil {
		return nil
	}
	if _, err := m.assets.Stream(ctx, *m.cfg.Load()); err != nil {
		return fmt.Errorf("lanes: create stream %s: %w", StreamName, err)
	}
	return nil
}

func (s *Set) currentMirror() *mirror {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mirror
}
