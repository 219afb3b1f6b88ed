package lanes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream and subject names of the lane mirror.
const (
	// StreamName is the JetStream stream mirroring parked requests.
	StreamName = "RELAY_LANES"
	// SubjectPrefix prefixes the lane name in mirror subjects.
	SubjectPrefix = "relay.lanes."
)

// mirrorQueue bounds the mirror operations waiting to be written; past it
// operations are dropped (and counted), never the requests themselves.
const mirrorQueue = 4096

// mirror writes parked requests to RELAY_LANES and deletes them when they
// leave, from one goroutine. A nil *mirror does nothing.
type mirror struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	log     *slog.Logger
	ops     chan mirrorOp
	done    chan struct{}
	dropped atomic.Int64
	seqs    map[uint64]uint64 // entry id -> stream sequence; run's own
}

type mirrorOp struct {
	park             bool
	id               uint64
	lane, key, route string
	at               time.Time
}

// openMirror creates or updates the stream: memory storage, one subject
// per lane, bounded by the lanes' total depth and longest wait.
func openMirror(ctx context.Context, js jetstream.JetStream, specs []Spec, log *slog.Logger) (*mirror, error) {
	st, err := js.CreateOrUpdateStream(ctx, streamConfig(specs))
	if err != nil {
		return nil, fmt.Errorf("lanes: create stream %s: %w", StreamName, err)
	}
	// What a previous run left is stale: its waiters are gone.
	if err := st.Purge(ctx); err != nil {
		return nil, fmt.Errorf("lanes: purge stream %s: %w", StreamName, err)
	}
	m := &mirror{js: js, stream: st, log: log, ops: make(chan mirrorOp, mirrorQueue), done: make(chan struct{}),
		seqs: map[uint64]uint64{}}
	go m.run()
	return m, nil
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
	select {
	case m.ops <- op:
	default:
		m.dropped.Add(1)
	}
}

// close stops the writer after it has written what is queued.
func (m *mirror) close() {
	if m == nil {
		return
	}
	close(m.ops)
	<-m.done
}

func (m *mirror) run() {
	defer close(m.done)
	ctx := context.Background()
	for op := range m.ops {
		if !op.park {
			// Operations arrive in the order the Set made them (under its
			// lock), so a request's park has been written by now; when it
			// is not known, its park was dropped or failed: nothing to do.
			if seq, ok := m.seqs[op.id]; ok {
				delete(m.seqs, op.id)
				m.delete(ctx, seq)
			}
			continue
		}
		data := []byte(`{"id":` + strconv.FormatUint(op.id, 10) + `,"key":` + strconv.Quote(op.key) +
			`,"route":` + strconv.Quote(op.route) + `,"parked_at":"` + op.at.UTC().Format(time.RFC3339Nano) + `"}`)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := m.js.Publish(pctx, SubjectPrefix+op.lane, data)
		cancel()
		if err != nil {
			m.log.Warn("lane mirror publish", "error", err)
			continue
		}
		m.seqs[op.id] = ack.Sequence
	}
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
		d := sp.MaxDepth
		if d <= 0 {
			d = 10000
		}
		maxMsgs += int64(d)
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
		Replicas:    1,
	}
}

// resize applies new lane limits to the stream.
func (m *mirror) resize(ctx context.Context, specs []Spec) error {
	if m == nil {
		return nil
	}
	if _, err := m.js.UpdateStream(ctx, streamConfig(specs)); err != nil {
		return fmt.Errorf("lanes: update stream %s: %w", StreamName, err)
	}
	return nil
}
