// Package pricing turns token usage into cost with the configuration's
// prices table (USD per million tokens, by upstream model).
//
// A Table is immutable and safe for concurrent use. Lookups pick the
// exact model entry first, then the glob with the most literal
// characters, then the first in file order (package modelglob).
package pricing

import (
	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers/modelglob"
	"github.com/relaygw/relay/workers/wire"
)

// Usage is what one call used. Input counts every input token, cache
// reads and writes included (as wire.Usage does); CacheRead and
// CacheWrite say how many of them were read from or written to the
// prompt cache, and are priced at their own rates.
type Usage struct {
	Input, Output, CacheRead, CacheWrite int64
}

// Tokens is every token the usage counts: input (cache included) plus
// output. Token budgets are spent by it.
func (u Usage) Tokens() int64 { return u.Input + u.Output }

// Price is one model's prices in USD per million tokens, with the cache
// rates filled in (a zero cache rate in the file means the input rate).
type Price struct {
	Input, Output, CacheRead, CacheWrite float64
	// BatchDiscount is the share taken off batch items' cost.
	BatchDiscount float64
}

// Table is a prices table. The zero Table prices nothing.
type Table struct {
	exact    map[string]Price
	patterns []pattern // in order of preference
}

type pattern struct {
	glob  string
	price Price
}

// New builds a Table from the configuration's prices, which must be
// valid (configs.Config.Validate).
func New(prices []configs.Price) *Table {
	t := &Table{exact: make(map[string]Price)}
	for _, p := range prices {
		pr := Price{Input: p.Input, Output: p.Output, CacheRead: p.CacheRead, CacheWrite: p.CacheWrite, BatchDiscount: p.BatchDiscount}
		if pr.CacheRead == 0 {
			pr.CacheRead = pr.Input
		}
		if pr.CacheWrite == 0 {
			pr.CacheWrite = pr.Input
		}
		if !modelglob.IsPattern(p.Model) {
			t.exact[p.Model] = pr
			continue
		}
		// Stable insertion by specificity keeps file order among equals.
		i := len(t.patterns)
		for i > 0 && modelglob.Specificity(t.patterns[i-1].glob) < modelglob.Specificity(p.Model) {
			i--
		}
		t.patterns = append(t.patterns, pattern{})
		copy(t.patterns[i+1:], t.patterns[i:])
		t.patterns[i] = pattern{glob: p.Model, price: pr}
	}
	return t
}

// Lookup returns the price of an upstream model, and false when the
// table prices it not. A nil Table prices nothing.
func (t *Table) Lookup(model string) (Price, bool) {
	if t == nil {
		return Price{}, false
	}
	if p, ok := t.exact[model]; ok {
		return p, true
	}
	for _, p := range t.patterns {
		if modelglob.Match(p.glob, model) {
			return p.price, true
		}
	}
	return Price{}, false
}

// Cost is what u costs at p, in USD; batch items get the batch discount.
// Cache reads and writes are priced at their rates and the rest of the
// input at the input rate.
func (p Price) Cost(u Usage, batch bool) float64 {
	plain := max(u.Input-u.CacheRead-u.CacheWrite, 0)
	c := (float64(plain)*p.Input + float64(u.CacheRead)*p.CacheRead +
		float64(u.CacheWrite)*p.CacheWrite + float64(u.Output)*p.Output) / 1e6
	if batch {
		c *= 1 - p.BatchDiscount
	}
	return c
}

// Cost is what u costs on model, in USD, and whether the model is priced
// (an unpriced model costs 0).
func (t *Table) Cost(model string, u Usage, batch bool) (float64, bool) {
	p, ok := t.Lookup(model)
	if !ok {
		return 0, false
	}
	return p.Cost(u, batch), true
}

// Of returns the usage an upstream stated, in the table's terms.
func Of(u wire.Usage) Usage {
	return Usage{Input: int64(u.Input), Output: int64(u.Output), CacheRead: int64(u.CacheRead), CacheWrite: int64(u.CacheWrite)}
}
