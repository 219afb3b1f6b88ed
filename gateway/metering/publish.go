package metering

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Publishing: Record puts each event on a bounded queue and returns;
// workers publish them with Nats-Msg-Id set to the event id, retrying
// with backoff for up to retryFor, well inside the stream's duplicates
// window, so a retry after a lost acknowledgement is stored once.

const (
	pubWorkers     = 4
	attemptTimeout = 5 * time.Second
	retryFor       = 2 * time.Minute
	backoffMin     = 100 * time.Millisecond
	backoffMax     = 5 * time.Second
)

type publisher struct {
	store *Store
	q     chan *Event
	m     *meterMetrics
	log   *slog.Logger

	mu       sync.RWMutex
	closed   bool
	leftover []*Event // events a stopping worker did not finish
}

func newPublisher(s *Store, size int, m *meterMetrics, log *slog.Logger) *publisher {
	return &publisher{store: s, q: make(chan *Event, size), m: m, log: log}
}

// enqueue queues ev, or drops it (counted) when the queue is full or
// closed. It never blocks.
func (p *publisher) enqueue(ev *Event) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		p.m.dropped.Inc()
		return
	}
	select {
	case p.q <- ev:
		p.m.queued.Inc()
	default:
		p.m.dropped.Inc()
	}
}

// closeQueue refuses events from now on; drain publishes what is queued.
func (p *publisher) closeQueue() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// run publishes queued events until ctx ends.
func (p *publisher) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range pubWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-p.q:
					p.m.queued.Dec()
					if !p.publish(ctx, ev) {
						p.mu.Lock()
						p.leftover = append(p.leftover, ev)
						p.mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
}

// publish stores ev, retrying failures with backoff for up to retryFor.
// It reports false when ctx ended first (ev is not yet stored, and is
// handed to drain); an event that still fails after retryFor is dropped.
func (p *publisher) publish(ctx context.Context, ev *Event) bool {
	msg, err := eventMsg(ev)
	if err != nil {
		p.m.dropped.Inc()
		p.log.Error("usage event not encodable", "error", err)
		return true
	}
	start, wait := time.Now(), backoffMin
	for {
		if p.attempt(msg) {
			return true
		}
		if time.Since(start) > retryFor {
			p.m.dropped.Inc()
			p.log.Error("usage event dropped after retries", "event_id", ev.ID, "key", ev.Key)
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, backoffMax)
	}
}

// attempt publishes msg once, bounded by attemptTimeout.
func (p *publisher) attempt(msg *nats.Msg) bool {
	actx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	if err := p.store.publish(actx, msg); err != nil {
		p.m.pubFails.Inc()
		p.log.Warn("usage event publish failed; retrying", "subject", msg.Subject, "error", err)
		return false
	}
	p.m.published.Inc()
	return true
}

// drain publishes the leftover and queued events until ctx ends, after
// run has returned; what remains then is counted as dropped.
func (p *publisher) drain(ctx context.Context) {
	p.mu.Lock()
	evs := p.leftover
	p.leftover = nil
	p.mu.Unlock()
	for {
		select {
		case ev := <-p.q:
			p.m.queued.Dec()
			evs = append(evs, ev)
			continue
		default:
		}
		break
	}
	for i, ev := range evs {
		if !p.publish(ctx, ev) {
			p.m.dropped.Add(float64(len(evs) - i))
			p.log.Warn("usage events dropped at stop", "count", len(evs)-i)
			return
		}
	}
}

// eventMsg is ev's message: JSON on relay.usage.<key>, with its id as
// Nats-Msg-Id.
func eventMsg(ev *Event) (*nats.Msg, error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(Subject(ev.Key))
	msg.Data = data
	msg.Header.Set(nats.MsgIdHdr, ev.ID)
	return msg, nil
}
