package lease

import (
	"math"
	"sort"
)

// Kind is one kind of limit a resource may have.
type Kind int

// The kinds of limit, in the order of a [Vector].
const (
	RPM Kind = iota
	InputTPM
	OutputTPM
	MaxConcurrency
	// NumKinds is the number of kinds.
	NumKinds
)

// String returns the kind's configuration name (rpm, input_tpm,
// output_tpm, max_concurrency), which is also its metric label.
func (k Kind) String() string {
	switch k {
	case RPM:
		return "rpm"
	case InputTPM:
		return "input_tpm"
	case OutputTPM:
		return "output_tpm"
	case MaxConcurrency:
		return "max_concurrency"
	default:
		return "unknown"
	}
}

// Vector holds one amount per [Kind]: per minute for the rates, calls
// for MaxConcurrency.
type Vector [NumKinds]float64

// Limits are a resource's limits for the whole cluster. Zero (or less)
// means no limit of that kind: such a kind is never divided.
type Limits struct {
	RPM, InputTPM, OutputTPM, MaxConcurrency int
}

// Vector returns l as a Vector.
func (l Limits) Vector() Vector {
	return Vector{float64(max(l.RPM, 0)), float64(max(l.InputTPM, 0)), float64(max(l.OutputTPM, 0)), float64(max(l.MaxConcurrency, 0))}
}

// Any reports whether l limits anything.
func (l Limits) Any() bool {
	return l.RPM > 0 || l.InputTPM > 0 || l.OutputTPM > 0 || l.MaxConcurrency > 0
}

// Policy tunes how a limit is divided.
type Policy struct {
	// Reserve is the fraction of each rate limit (rpm, input_tpm,
	// output_tpm) never granted, for what estimates miss; concurrency is
	// counted exactly and has none.
	Reserve float64
	// Floor is the fraction of each limit handed out evenly as floors, so
	// that an idle relay can start a burst before its next grant.
	Floor float64
	// MinShare is each priority class's guaranteed share of a limit while
	// it has demand (the lanes' min_share, highest priority first).
	MinShare []float64
}

// Capacity returns what may be granted of limits under p: rates less the
// reserve, concurrency whole. Unlimited kinds are 0.
func (p Policy) Capacity(limits Vector) Vector {
	var c Vector
	for k := range NumKinds {
		c[k] = limits[k]
		if Kind(k) != MaxConcurrency {
			c[k] *= 1 - p.Reserve
		}
	}
	return c
}

// Claim is one live relay's ask for a resource, in each kind's units.
type Claim struct {
	// Relay names the relay.
	Relay string
	// Steady is what a relay with nothing parked uses (with room to
	// grow). It ranks above any backlog: that relay keeps up with its
	// traffic, and cutting it would only move the backlog to it.
	Steady Vector
	// Classes is what a relay with parked requests asks per priority
	// class (its lanes, highest first): its recent use plus what drains
	// its backlog within one lease period, split over the lanes it is
	// parked on.
	Classes []Vector
}

// Divide returns the target share of each claim's relay: each limited
// kind's capacity (Policy.Capacity) is divided by water-filling: first a
// floor for every relay (Policy.Floor of the capacity, evenly), then each
// class's guaranteed minimum (Policy.MinShare) among the relays asking in
// it, then the steady class and the lane classes in priority order, each
// water-filled among the relays asking in it (no relay gets more than it
// asks while another in the same class is short), and what is left
// evenly. Concurrency is divided in whole calls. The targets of a kind
// sum to at most its capacity; they are targets, not grants ([Raise]
// makes them safe to hand out).
func Divide(limits Vector, claims []Claim, p Policy) map[string]Vector {
	out := make(map[string]Vector, len(claims))
	if len(claims) == 0 {
		return out
	}
	capacity := p.Capacity(limits)
	classes := 1
	for _, c := range claims {
		classes = max(classes, 1+len(c.Classes))
	}
	for k := range NumKinds {
		if limits[k] <= 0 {
			continue
		}
		asks := make([][]float64, len(claims)) // [relay][class], class 0 steady
		for i, c := range claims {
			asks[i] = make([]float64, classes)
			asks[i][0] = max(c.Steady[k], 0)
			for j, v := range c.Classes {
				asks[i][j+1] = max(v[k], 0)
			}
		}
		minShare := make([]float64, classes)
		for j, m := range p.MinShare {
			if j+1 < classes {
				minShare[j+1] = m
			}
		}
		shares := divideKind(capacity[k], asks, p.Floor, minShare)
		if Kind(k) == MaxConcurrency {
			shares = whole(shares, math.Floor(capacity[k]+1e-9))
		}
		for i, c := range claims {
			v := out[c.Relay]
			v[k] = shares[i]
			out[c.Relay] = v
		}
	}
	return out
}

// divideKind divides capacity among relays' asks per class (asks[relay]
// [class], highest class first): floors, then minimum shares, then class
// by class, then evenly.
func divideKind(capacity float64, asks [][]float64, floorFrac float64, minShare []float64) []float64 {
	n := len(asks)
	got := make([]float64, n)
	if capacity <= 0 || n == 0 {
		return got
	}
	floor := capacity * min(max(floorFrac, 0), 1) / float64(n)
	rem := capacity - floor*float64(n)
	for i := range got {
		got[i] = floor
		// The floor meets the relay's asks first, highest class first.
		left := floor
		for j := range asks[i] {
			take := min(left, asks[i][j])
			asks[i][j] -= take
			left -= take
		}
	}
	column := func(j int) []float64 {
		col := make([]float64, n)
		for i := range asks {
			col[i] = asks[i][j]
		}
		return col
	}
	fill := func(j int, amount float64) {
		if amount <= 0 {
			return
		}
		give := waterfill(column(j), amount)
		for i, g := range give {
			got[i] += g
			asks[i][j] -= g
			rem -= g
		}
	}
	for j, m := range minShare {
		if m > 0 {
			fill(j, min(m*capacity, sum(column(j)), rem))
		}
	}
	for j := range minShare {
		fill(j, min(sum(column(j)), rem))
	}
	if rem > 0 {
		for i := range got {
			got[i] += rem / float64(n)
		}
	}
	return got
}

// waterfill divides amount among asks so that no one gets more than it
// asks and everyone short gets the same: the classic water level. The
// amount must not exceed the sum of the asks by more than rounding.
func waterfill(asks []float64, amount float64) []float64 {
	give := make([]float64, len(asks))
	idx := make([]int, 0, len(asks))
	for i, a := range asks {
		if a > 0 {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return asks[idx[a]] < asks[idx[b]] })
	left := amount
	for n, i := range idx {
		level := left / float64(len(idx)-n)
		g := min(asks[i], level)
		give[i] = g
		left -= g
	}
	return give
}

// whole rounds shares down to whole units and hands the units left (of
// total) to the largest remainders, so the result sums to at most total.
func whole(shares []float64, total float64) []float64 {
	out := make([]float64, len(shares))
	used := 0.0
	idx := make([]int, len(shares))
	for i, s := range shares {
		out[i] = math.Floor(s + 1e-9)
		used += out[i]
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		return shares[idx[a]]-out[idx[a]] > shares[idx[b]]-out[idx[b]]
	})
	for _, i := range idx {
		if used+1 > total+1e-9 {
			break
		}
		if shares[i]-out[i] > 1e-9 {
			out[i]++
			used++
		}
	}
	return out
}

func sum(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s
}

// Raise turns targets into grants that keep the invariant: the sum over
// relays of what each may still use (held: its unexpired grants it has not
// replaced, and for concurrency its calls in flight) never exceeds
// capacity. A relay's grant is its target where that is no more than what
// it holds (a decrease, which takes effect when the relay applies it, so
// the coordinator keeps counting held until then); increases come only
// from capacity no relay holds (capacity less the sum of held, with held
// counting relays that have no target any more, such as a dead relay
// whose lease has not expired), water-filled among the relays that want
// more. Concurrency grants are whole calls.
func Raise(capacity Vector, targets, held map[string]Vector) map[string]Vector {
	names := make([]string, 0, len(targets))
	for r := range targets {
		names = append(names, r)
	}
	sort.Strings(names)
	out := make(map[string]Vector, len(targets))
	for k := range NumKinds {
		usedHeld := 0.0
		for _, h := range held {
			usedHeld += max(h[k], 0)
		}
		free := max(capacity[k]-usedHeld, 0)
		need := make([]float64, len(names))
		for i, r := range names {
			t, h := max(targets[r][k], 0), max(held[r][k], 0)
			v := out[r]
			v[k] = min(t, h)
			out[r] = v
			need[i] = max(t-h, 0)
		}
		give := need
		if sum(need) > free {
			give = waterfill(need, free)
		}
		if Kind(k) == MaxConcurrency {
			give = whole(give, math.Floor(free+1e-9))
		}
		for i, r := range names {
			if give[i] > 0 {
				v := out[r]
				// Up to held costs nothing (already counted); past it, free.
				v[k] = max(held[r][k], 0) + give[i]
				out[r] = v
			}
		}
	}
	return out
}
