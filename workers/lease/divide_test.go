package lease

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// TestDivide: water-filling with floors, priority classes and min_share.
func TestDivide(t *testing.T) {
	rpm := func(v float64) Vector { return Vector{v} }
	tests := []struct {
		name   string
		limit  float64
		claims []Claim
		policy Policy
		want   map[string]float64
	}{
		{name: "equal idle relays split evenly", limit: 600,
			claims: []Claim{{Relay: "a"}, {Relay: "b"}, {Relay: "c"}},
			want:   map[string]float64{"a": 200, "b": 200, "c": 200}},
		{name: "reserve is never granted", limit: 600, policy: Policy{Reserve: 0.05},
			claims: []Claim{{Relay: "a"}, {Relay: "b"}},
			want:   map[string]float64{"a": 285, "b": 285}},
		{name: "deep backlog takes what the idle do not ask", limit: 600, policy: Policy{Floor: 0.1},
			claims: []Claim{{Relay: "a", Classes: []Vector{rpm(10000)}}, {Relay: "b", Steady: rpm(10)}, {Relay: "c"}},
			// floors 20 each; b's 10 met by its floor; a takes the rest.
			want: map[string]float64{"a": 560, "b": 20, "c": 20}},
		{name: "no one gets more than it asks while others are short", limit: 300,
			claims: []Claim{{Relay: "a", Classes: []Vector{rpm(50)}}, {Relay: "b", Classes: []Vector{rpm(1000)}}, {Relay: "c", Classes: []Vector{rpm(1000)}}},
			want:   map[string]float64{"a": 50, "b": 125, "c": 125}},
		{name: "interactive backlog outranks batch backlog", limit: 300,
			claims: []Claim{{Relay: "a", Classes: []Vector{rpm(0), rpm(1000)}}, {Relay: "b", Classes: []Vector{rpm(250), rpm(0)}}},
			want:   map[string]float64{"a": 50, "b": 250}},
		{name: "batch min_share holds in aggregate", limit: 300, policy: Policy{MinShare: []float64{0, 0.1}},
			claims: []Claim{{Relay: "a", Classes: []Vector{rpm(0), rpm(1000)}}, {Relay: "b", Classes: []Vector{rpm(1000), rpm(0)}}},
			want:   map[string]float64{"a": 30, "b": 270}},
		{name: "steady use ranks above backlog", limit: 300,
			claims: []Claim{{Relay: "a", Steady: rpm(100)}, {Relay: "b", Classes: []Vector{rpm(1000)}}},
			want:   map[string]float64{"a": 100, "b": 200}},
		{name: "leftover spread evenly once no one is short", limit: 300,
			claims: []Claim{{Relay: "a", Steady: rpm(10)}, {Relay: "b", Classes: []Vector{rpm(50)}}},
			want:   map[string]float64{"a": 10 + 120, "b": 50 + 120}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Divide(Vector{tc.limit}, tc.claims, tc.policy)
			for r, w := range tc.want {
				if !near(got[r][RPM], w) {
					t.Errorf("%s: rpm share %.3f; want %.3f (all: %v)", r, got[r][RPM], w, got)
				}
			}
		})
	}
}

// TestDivideConcurrency: concurrency is divided in whole calls that never
// sum past the limit, and unlimited kinds are not divided.
func TestDivideConcurrency(t *testing.T) {
	tests := []struct {
		name   string
		limit  float64
		claims []Claim
		want   map[string]float64
	}{
		{"4 over 3 idle", 4, []Claim{{Relay: "a"}, {Relay: "b"}, {Relay: "c"}}, map[string]float64{"a": 2, "b": 1, "c": 1}},
		{"backlog gets the slots", 4, []Claim{{Relay: "a", Classes: []Vector{{0, 0, 0, 10}}}, {Relay: "b"}}, map[string]float64{"a": 4, "b": 0}},
		{"1 over 3", 1, []Claim{{Relay: "a"}, {Relay: "b"}, {Relay: "c"}}, map[string]float64{"a": 1, "b": 0, "c": 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Divide(Vector{0, 0, 0, tc.limit}, tc.claims, Policy{Reserve: 0.05})
			for r, w := range tc.want {
				if got[r][MaxConcurrency] != w || got[r][RPM] != 0 {
					t.Errorf("%s: %v; want concurrency %v and no rpm", r, got[r], w)
				}
			}
		})
	}
}

// TestRaise: decreases apply at once, increases only from what no one
// holds, a dead relay's hold blocks its share until it expires.
func TestRaise(t *testing.T) {
	tests := []struct {
		name          string
		capacity      float64
		targets, held map[string]float64
		want          map[string]float64
	}{
		{"first grants", 300, map[string]float64{"a": 150, "b": 150}, nil, map[string]float64{"a": 150, "b": 150}},
		{"shift waits for the decrease", 300, map[string]float64{"a": 50, "b": 250}, map[string]float64{"a": 150, "b": 150},
			map[string]float64{"a": 50, "b": 150}},
		{"dead relay holds until expiry", 300, map[string]float64{"a": 150, "b": 150}, map[string]float64{"a": 100, "b": 100, "dead": 100},
			map[string]float64{"a": 100, "b": 100}},
		{"partial free capacity water-filled", 300, map[string]float64{"a": 200, "b": 100}, map[string]float64{"a": 100, "b": 50, "dead": 100},
			map[string]float64{"a": 125, "b": 75}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vec := func(m map[string]float64) map[string]Vector {
				out := map[string]Vector{}
				for r, v := range m {
					out[r] = Vector{v}
				}
				return out
			}
			got := Raise(Vector{tc.capacity}, vec(tc.targets), vec(tc.held))
			for r, w := range tc.want {
				if !near(got[r][RPM], w) {
					t.Errorf("%s: %.3f; want %.3f (all %v)", r, got[r][RPM], w, got)
				}
			}
		})
	}
}

// checkInvariant fails when what relays use at now exceeds the limit: each
// relay uses the share of the record it applied last, until that expires.
func checkInvariant(t *testing.T, step int, now time.Time, limits Vector, recs []*grantsRecord, applied map[string]int) {
	t.Helper()
	var total Vector
	for r, i := range applied {
		e, ok := recs[i].Grants[r]
		if !ok || !e.Expires.After(now) {
			continue
		}
		for k := range NumKinds {
			total[k] += e.Share[k]
		}
	}
	for k := range NumKinds {
		if total[k] > limits[k]+1e-6 {
			t.Fatalf("step %d: %s in use %.4f > limit %.4f", step, Kind(k), total[k], limits[k])
		}
	}
}

// FuzzCoordinate drives a coordinator through random demands, relays that
// die or miss rounds, and applications and acknowledgements that lag,
// checking the invariant: the sum of what relays use under unexpired
// grants never exceeds the limit.
func FuzzCoordinate(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 42, 1000} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, seed^0x9e37))
		limits := Vector{float64(1 + rng.IntN(1000)), float64(rng.IntN(100000)), float64(rng.IntN(50000)), float64(rng.IntN(20))}
		p := Policy{Reserve: 0.05 * rng.Float64(), Floor: 0.2 * rng.Float64(), MinShare: []float64{0, 0.1 * rng.Float64()}}
		period := 3 * time.Second
		now := time.Unix(1e9, 0)
		relays := []string{"a", "b", "c", "d"}
		applied := map[string]int{}     // index in recs of the record a relay uses
		reported := map[string]uint64{} // the epoch the coordinator saw it acknowledge
		var recs []*grantsRecord
		var prev *grantsRecord
		for step := range 80 {
			now = now.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)
			var demands []demandRecord
			for _, r := range relays {
				if rng.IntN(5) == 0 {
					continue // dead or cut off this round
				}
				d := demandRecord{Relay: r, Applied: reported[r]}
				if i, ok := applied[r]; ok {
					// Calls in flight fit in the grant in use.
					if e := recs[i].Grants[r]; e.Expires.After(now) {
						d.InFlight = rng.IntN(int(e.Share[MaxConcurrency]) + 1)
					}
				}
				d.Steady = Vector{rng.Float64() * limits[0], rng.Float64() * limits[1], rng.Float64() * limits[2], float64(rng.IntN(5))}
				if rng.IntN(2) == 0 {
					d.Classes = []Vector{{rng.Float64() * 2 * limits[0], 0, 0, float64(rng.IntN(10))}, {rng.Float64() * limits[0], rng.Float64() * limits[1], 0, 1}}
				}
				demands = append(demands, d)
			}
			next := coordinate(prev, "c", now, period, limits, p, demands)
			recs = append(recs, next)
			prev = next
			checkInvariant(t, step, now, limits, recs, applied)
			for _, r := range relays {
				if _, ok := next.Grants[r]; ok && rng.IntN(3) > 0 {
					applied[r] = len(recs) - 1 // applies the newest record
				}
				if i, ok := applied[r]; ok && rng.IntN(2) == 0 {
					reported[r] = recs[i].Epoch // its demand says so
				}
			}
			checkInvariant(t, step, now, limits, recs, applied)
		}
	})
}

func TestCoordinateNames(t *testing.T) {
	rec := coordinate(nil, "me", time.Unix(0, 0), time.Second, Vector{60}, Policy{}, []demandRecord{{Relay: "x"}})
	if rec.Relays != 1 || rec.Epoch != 1 || fmt.Sprint(rec.Grants["x"].Share[RPM]) != "60" {
		t.Fatalf("record %+v", rec)
	}
}
