package configs

import (
	"fmt"
	"math"
)

// validatePrices checks the prices table: a model (or glob) named once,
// prices finite and >= 0, a batch discount below 1.
func (c *Config) validatePrices(ps *problems) {
	seen := make(map[string]int)
	for i, pr := range c.Prices {
		p := fmt.Sprintf("prices[%d]", i)
		switch j, dup := seen[pr.Model]; {
		case pr.Model == "":
			ps.add(p+".model", "must be set (an upstream model id or a glob)")
		case dup:
			ps.add(p+".model", "%q is already priced by prices[%d]", pr.Model, j)
		default:
			seen[pr.Model] = i
		}
		for _, f := range []struct {
			name string
			v    float64
		}{{"input", pr.Input}, {"output", pr.Output}, {"cache_read", pr.CacheRead}, {"cache_write", pr.CacheWrite}} {
			if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
				ps.add(p+"."+f.name, "must be a number >= 0 (USD per million tokens)")
			}
		}
		if d := pr.BatchDiscount; d < 0 || d >= 1 || math.IsNaN(d) {
			ps.add(p+".batch_discount", "must be >= 0 and < 1 (0.5 is half price)")
		}
	}
	for i, k := range c.Keys {
		if k.Budget != nil && k.Budget.USD > 0 && len(c.Prices) == 0 {
			ps.add(fmt.Sprintf("keys[%d].budget.usd", i), "needs a prices table (or budget in tokens)")
		}
	}
}
