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
	// Earlier are the relay's earlier grants it may still be using: each
	// counts until it expires or the relay acknowledges a later epoch
	// (demandRecord.Applied), as a relay applies one record at a time
	// and never an older one.
	Earlier []pending `json:"earlier,omitempty"`
}

// pending is an earlier grant.
type pending struct {
	Epoch   uint64    `json:"epoch"`
	Share   Vector    `json:"share"`
	Expires time.Time `json:"expires"`
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

// inUse returns the grants of entry e the relay may still be using at
// now, given the epoch it acknowledged: those of that epoch or later,
// unexpired. Equal consecutive shares are merged (latest epoch and
// expiry, which is conservative).
func inUse(e grantEntry, now time.Time, applied uint64) []pending {
	all := append(append([]pending(nil), e.Earlier...), pending{Epoch: e.Epoch, Share: e.Share, Expires: e.Expires})
	var out []pending
	for _, p := range all {
		if !p.Expires.After(now) || p.Epoch < applied {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Share == p.Share {
			out[n-1].Epoch = max(out[n-1].Epoch, p.Epoch)
			out[n-1].Expires = later(out[n-1].Expires, p.Expires)
			continue
		}
		out = append(out, p)
	}
	return out
}

// heldOf is the most of each kind among grants, and at least the calls
// in flight.
func heldOf(ps []pending, inFlight int) Vector {
	var h Vector
	for _, p := range ps {
		for k := range NumKinds {
			h[k] = max(h[k], p.Share[k])
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
	earlier := make(map[string][]pending, len(old))
	for r, e := range old {
		d := byRelay[r]
		earlier[r] = inUse(e, now, d.Applied)
		held[r] = heldOf(earlier[r], d.InFlight)
	}
	for r, d := range byRelay {
		if _, ok := held[r]; !ok {
			var h Vector
			h[MaxConcurrency] = float64(d.InFlight)
			held[r] = h
		}
	}
	if len(demands) <= 1 {
		// One relay holds the whole limit, as a relay alone would: the
		// reserve is for what estimates across relays miss.
		p.Reserve = 0
	}
	capacity := p.Capacity(limits)
	grants := Raise(capacity, Divide(limits, claims, p), held)
	expires := now.Add(period)
	for r, g := range grants {
		next.Grants[r] = grantEntry{Share: g, Expires: expires, Epoch: next.Epoch, Earlier: earlier[r]}
	}
	for r := range old {
		if _, live := grants[r]; live || len(earlier[r]) == 0 {
			continue
		}
		// Gone (no demand): keep counting what it may use until expiry.
		next.Grants[r] = grantEntry{Epoch: next.Epoch, Earlier: earlier[r]}
	}
	return next
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
