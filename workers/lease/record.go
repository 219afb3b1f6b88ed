package lease

import (
	"sort"
	"time"
)

// Demand is what a holder reports of a resource on its relay, the input of
// its next grant. Counters are cumulative (the manager turns them into
// rates); Backlog is now.
type Demand struct {
	// Requests, InputTokens and OutputTokens count what the holder admitted
	// since it started (estimates are fine).
	Requests, InputTokens, OutputTokens float64
	// InFlight is the number of calls in flight now.
	InFlight int
	// Backlog is the number of requests parked per priority class (lane),
	// highest first.
	Backlog []int
	// Learned is what the upstream taught this relay lately.
	Learned Learned
}

// Learned is what an upstream taught one relay about its real limits: a
// cool-down (retry-after) and caps from rate-limit headers. Through the
// demand and grant records every relay of the cluster learns it within a
// lease period.
type Learned struct {
	// CoolUntil is the end of a cool-down; zero when none.
	CoolUntil time.Time `json:"cool_until,omitzero"`
	// Caps are the caps learned per rate kind (rpm, input_tpm,
	// output_tpm); a cap with a zero Until is none.
	Caps [3]Cap `json:"caps"`
}

// Cap is a learned cap: until Until, at most Remaining more for the whole
// upstream key, as of At.
type Cap struct {
	Remaining float64   `json:"remaining"`
	Until     time.Time `json:"until,omitzero"`
	At        time.Time `json:"at,omitzero"`
}

// merge returns what l and o together teach: the later cool-down, and per
// kind the cap learned last (the upstream's latest word).
func (l Learned) merge(o Learned) Learned {
	if o.CoolUntil.After(l.CoolUntil) {
		l.CoolUntil = o.CoolUntil
	}
	for i := range l.Caps {
		if o.Caps[i].At.After(l.Caps[i].At) {
			l.Caps[i] = o.Caps[i]
		}
	}
	return l
}

// current drops what has ended by now.
func (l Learned) current(now time.Time) Learned {
	if !l.CoolUntil.After(now) {
		l.CoolUntil = time.Time{}
	}
	for i := range l.Caps {
		if !l.Caps[i].Until.After(now) {
			l.Caps[i] = Cap{}
		}
	}
	return l
}

// demandRecord is one relay's demand for one resource, as stored (key
// d.<resource>.<relay>, with a TTL of one lease period).
type demandRecord struct {
	Relay string    `json:"relay"`
	At    time.Time `json:"at"`
	// Steady and Classes are the relay's asks (see Claim).
	Steady  Vector   `json:"steady"`
	Classes []Vector `json:"classes,omitempty"`
	// InFlight is the calls in flight: a relay holds at least those.
	InFlight int `json:"in_flight"`
	// Applied is the epoch of the last grants record the relay applied:
	// the grants before it are no longer in use there.
	Applied uint64  `json:"applied"`
	Learned Learned `json:"learned"`
}

// grantEntry is one relay's grant in a grants record.
type grantEntry struct {
	// Share is the grant, good until Expires (coordinator's clock).
	Share   Vector    `json:"share"`
	Expires time.Time `json:"expires"`
	// Epoch is the record epoch that issued Share.
	Epoch uint64 `json:"epoch"`
	// Held is what the relay may still use of earlier grants until
	// HeldUntil, unless it acknowledged Epoch (demandRecord.Applied).
	Held      Vector    `json:"held"`
	HeldUntil time.Time `json:"held_until"`
}

// grantsRecord is all grants of one resource (key g.<resource>), written
// by its coordinator by compare-and-set.
type grantsRecord struct {
	Epoch       uint64                `json:"epoch"`
	Coordinator string                `json:"coordinator"`
	Issued      time.Time             `json:"issued"`
	Period      time.Duration         `json:"period"`
	Limits      Vector                `json:"limits"`
	Relays      int                   `json:"relays"`
	Grants      map[string]grantEntry `json:"grants"`
	Learned     Learned               `json:"learned"`
}

// heldAt returns what relay r may still be using at now under the
// record's entry e, given the epoch it acknowledged and its calls in
// flight.
func heldAt(e grantEntry, now time.Time, applied uint64, inFlight int) Vector {
	var h Vector
	if e.Expires.After(now) {
		h = e.Share
	}
	if applied < e.Epoch && e.HeldUntil.After(now) {
		for k := range NumKinds {
			h[k] = max(h[k], e.Held[k])
		}
	}
	h[MaxConcurrency] = max(h[MaxConcurrency], float64(inFlight))
	return h
}

// coordinate computes the next grants record from prev (nil when none is
// stored) at now: targets from the live demands (Divide), made safe
// against what every relay may still hold (Raise), each good for one
// period. Relays in prev that no longer report keep their entry, with a
// zero share, until what they hold has expired.
func coordinate(prev *grantsRecord, self string, now time.Time, period time.Duration, limits Vector, p Policy, demands []demandRecord) *grantsRecord {
	sort.Slice(demands, func(i, j int) bool { return demands[i].Relay < demands[j].Relay })
	next := &grantsRecord{Coordinator: self, Issued: now, Period: period, Limits: limits,
		Relays: max(len(demands), 1), Grants: map[string]grantEntry{}}
	var old map[string]grantEntry
	if prev != nil {
		next.Epoch = prev.Epoch
		old = prev.Grants
		next.Learned = prev.Learned.current(now)
		if prev.Limits != limits {
			// A limit changed: what was granted of the old one is held in
			// full until it expires (counted below), whatever the new limit.
			next.Learned = Learned{}
		}
	}
	next.Epoch++
	byRelay := make(map[string]demandRecord, len(demands))
	claims := make([]Claim, 0, len(demands))
	for _, d := range demands {
		byRelay[d.Relay] = d
		claims = append(claims, Claim{Relay: d.Relay, Steady: d.Steady, Classes: d.Classes})
		next.Learned = next.Learned.merge(d.Learned.current(now))
	}
	held := make(map[string]Vector, len(old)+len(demands))
	for r, e := range old {
		d := byRelay[r]
		held[r] = heldAt(e, now, d.Applied, d.InFlight)
	}
	for r, d := range byRelay {
		if _, ok := held[r]; !ok {
			var h Vector
			h[MaxConcurrency] = float64(d.InFlight)
			held[r] = h
		}
	}
	capacity := p.Capacity(limits)
	grants := Raise(capacity, Divide(limits, claims, p), held)
	expires := now.Add(period)
	for r, g := range grants {
		e := old[r]
		heldUntil := later(e.Expires, e.HeldUntil)
		next.Grants[r] = grantEntry{Share: g, Expires: expires, Epoch: next.Epoch, Held: held[r], HeldUntil: heldUntil}
	}
	for r, e := range old {
		if _, live := grants[r]; live {
			continue
		}
		if h := held[r]; e.Expires.After(now) || e.HeldUntil.After(now) {
			// Gone (no demand): keep counting what it holds until expiry.
			next.Grants[r] = grantEntry{Epoch: next.Epoch, Held: h, HeldUntil: later(e.Expires, e.HeldUntil)}
		}
	}
	return next
}

// sumHeld returns, per kind, the sum over the record's relays of what
// each may still use at now (no acknowledgements assumed).
func (g *grantsRecord) sumHeld(now time.Time) Vector {
	var s Vector
	for _, e := range g.Grants {
		h := heldAt(e, now, 0, 0)
		for k := range NumKinds {
			s[k] += h[k]
		}
	}
	return s
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
