package jobs

import (
	"sync"
	"time"
)

// The in-memory cache of batches' item lists and final outcomes.

// batchCache keeps, per batch, its item list (immutable) and the items'
// final outcomes (final outcomes never change), so repeated GETs of a
// batch read only the records of unfinished items. It holds at most
// batchCacheItems items, evicting the least recently used batches.
type batchCache struct {
	mu      sync.Mutex
	entries map[string]*cacheEntry
	items   int
	tick    uint64
}

// cacheEntry is one cached batch.
type cacheEntry struct {
	refs []batchRef
	used uint64 // batchCache.tick at the last use

	mu         sync.Mutex
	outcomes   []outcome
	lastFinish time.Time
}

func (c *batchCache) get(id string) *cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e != nil {
		c.tick++
		e.used = c.tick
	}
	return e
}

func (c *batchCache) put(id string, refs []batchRef) *cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[id]; e != nil {
		return e
	}
	c.tick++
	e := &cacheEntry{refs: refs, used: c.tick, outcomes: make([]outcome, len(refs))}
	for c.items+len(refs) > batchCacheItems && len(c.entries) > 0 {
		var oldest string
		var at uint64
		for k, x := range c.entries {
			if oldest == "" || x.used < at {
				oldest, at = k, x.used
			}
		}
		c.items -= len(c.entries[oldest].refs)
		delete(c.entries, oldest)
	}
	c.entries[id] = e
	c.items += len(refs)
	return e
}

func (c *batchCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[id]; e != nil {
		c.items -= len(e.refs)
		delete(c.entries, id)
	}
}
