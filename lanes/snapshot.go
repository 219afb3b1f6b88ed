package lanes

import "time"

// LaneState is a read-only snapshot of one lane, for the status page.
type LaneState struct {
	// Name identifies the lane.
	Name string
	// Depth is the number of requests parked on the lane now.
	Depth int
	// MaxDepth and MaxWait are the lane's limits.
	MaxDepth int
	MaxWait  time.Duration
	// MinShare is the lane's guaranteed share of dispatches.
	MinShare float64
	// DispatchRate is the lane's recent dispatch rate, per second (an
	// exponentially weighted average with a 10 s half-life).
	DispatchRate float64
}

// Snapshot returns the lanes' state, highest priority first.
func (s *Set) Snapshot() []LaneState {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]LaneState, 0, len(s.lanes))
	for _, l := range s.lanes {
		out = append(out, LaneState{
			Name:         l.Name,
			Depth:        l.depth,
			MaxDepth:     l.MaxDepth,
			MaxWait:      l.MaxWait,
			MinShare:     l.MinShare,
			DispatchRate: l.rate.perSecond(now),
		})
	}
	return out
}
