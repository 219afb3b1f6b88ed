package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/relaygw/relay/lanes/assets"
)

// Counters: each relay adds its calls' usage up in memory, per key, UTC
// day and upstream model, and every FlushInterval adds those deltas to
// the KV entry <key>.<YYYY-MM-DD> with compare-and-set (a lost race reads
// the entry again and retries), so relays sharing the bucket never lose
// each other's counts. Deltas that cannot be written are kept for the
// next flush; Stop flushes a last time.

// Totals are the usage of one key, day and model (or a sum of them).
type Totals struct {
	// Requests counts the calls (requests, jobs, batch items).
	Requests int64 `json:"requests"`
	// InputTokens is input that neither read nor wrote the prompt cache.
	InputTokens int64 `json:"input_tokens"`
	// OutputTokens is output tokens.
	OutputTokens int64 `json:"output_tokens"`
	// CacheReadTokens is input read from the prompt cache.
	CacheReadTokens int64 `json:"cache_read_tokens"`
	// CacheWriteTokens is input written to the prompt cache.
	CacheWriteTokens int64 `json:"cache_write_tokens"`
	// CostUSD is the cost in USD at the prices table's rates.
	CostUSD float64 `json:"cost_usd"`
}

// add adds o to t.
func (t *Totals) add(o Totals) {
	t.Requests += o.Requests
	t.InputTokens += o.InputTokens
	t.OutputTokens += o.OutputTokens
	t.CacheReadTokens += o.CacheReadTokens
	t.CacheWriteTokens += o.CacheWriteTokens
	t.CostUSD += o.CostUSD
}

// totalsOf is one event's contribution.
func totalsOf(ev *Event) Totals {
	return Totals{Requests: 1, InputTokens: ev.Tokens.Input, OutputTokens: ev.Tokens.Output,
		CacheReadTokens: ev.Tokens.CacheRead, CacheWriteTokens: ev.Tokens.CacheWrite, CostUSD: ev.CostUSD}
}

// dayRecord is a KV entry: one key's usage of one UTC day, by model.
type dayRecord struct {
	Models map[string]*Totals `json:"models"`
}

// dayFormat is how days are written in KV keys and answers.
const dayFormat = "2006-01-02"

// entryKey is the KV key of key's counters on day.
func entryKey(key, day string) string { return token(key) + "." + day }

type counters struct {
	store *Store
	m     *meterMetrics
	log   *slog.Logger

	// flushing serializes flushes, so that a flush returns only once
	// every delta recorded before it began is stored (or kept).
	flushing sync.Mutex
	mu       sync.Mutex
	pending  map[string]map[string]*Totals // entry key -> model -> delta
}

func newCounters(s *Store, m *meterMetrics, log *slog.Logger) *counters {
	return &counters{store: s, m: m, log: log, pending: map[string]map[string]*Totals{}}
}

// add adds ev to the pending deltas.
func (c *counters) add(ev *Event) {
	k := entryKey(ev.Key, ev.Time.UTC().Format(dayFormat))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.merge(k, map[string]*Totals{ev.Model: ptr(totalsOf(ev))})
}

func ptr(t Totals) *Totals { return &t }

// merge adds deltas to the pending ones of entry k; c.mu is held.
func (c *counters) merge(k string, deltas map[string]*Totals) {
	cur := c.pending[k]
	if cur == nil {
		cur = map[string]*Totals{}
		c.pending[k] = cur
	}
	for model, d := range deltas {
		if t := cur[model]; t != nil {
			t.add(*d)
		} else {
			cur[model] = ptr(*d)
		}
	}
}

// run flushes every interval until ctx ends.
func (c *counters) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := c.flush(fctx); err != nil && ctx.Err() == nil {
				c.log.Warn("usage counters not flushed; kept for the next flush", "error", err)
			}
			cancel()
		}
	}
}

// flush adds every pending delta to its entry. Deltas that could not be
// written go back to pending.
func (c *counters) flush(ctx context.Context) error {
	c.flushing.Lock()
	defer c.flushing.Unlock()
	c.mu.Lock()
	pending := c.pending
	c.pending = map[string]map[string]*Totals{}
	c.mu.Unlock()
	keys := make([]string, 0, len(pending))
	for k := range pending {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []error
	for _, k := range keys {
		if err := c.apply(ctx, k, pending[k]); err != nil {
			c.m.flushFails.Inc()
			errs = append(errs, err)
			c.mu.Lock()
			c.merge(k, pending[k])
			c.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// maxCASTries bounds the compare-and-set retries of one entry per flush.
const maxCASTries = 50

// apply adds deltas to entry k with compare-and-set.
func (c *counters) apply(ctx context.Context, k string, deltas map[string]*Totals) error {
	kv := c.store.kv
	for range maxCASTries {
		rec, rev, err := readDay(ctx, kv, k)
		if err != nil {
			return err
		}
		for model, d := range deltas {
			if t := rec.Models[model]; t != nil {
				t.add(*d)
			} else {
				rec.Models[model] = ptr(*d)
			}
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("metering: encode %s: %w", k, err)
		}
		if rev == 0 {
			_, err = kv.Create(ctx, k, data)
		} else {
			_, err = kv.Update(ctx, k, data, rev)
		}
		if err == nil {
			return nil
		}
		if !isConflict(err) {
			return fmt.Errorf("metering: write %s: %w", k, err)
		}
	}
	return fmt.Errorf("metering: write %s: %d compare-and-set conflicts in a row", k, maxCASTries)
}

// readDay reads entry k and its revision (0 when there is none).
func readDay(ctx context.Context, kv jetstream.KeyValue, k string) (dayRecord, uint64, error) {
	rec := dayRecord{Models: map[string]*Totals{}}
	e, err := kv.Get(ctx, k)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return rec, 0, nil
	case err != nil:
		return rec, 0, fmt.Errorf("metering: read %s: %w", k, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, 0, fmt.Errorf("metering: decode %s: %w", k, err)
	}
	if rec.Models == nil {
		rec.Models = map[string]*Totals{}
	}
	return rec, e.Revision(), nil
}

// isConflict reports whether err is a lost compare-and-set
// (assets.IsConflict).
func isConflict(err error) bool { return assets.IsConflict(err) }
