package status

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// silentPeer is how long a replica that is not current may go unheard
// from before the page calls it offline: NATS flags a server offline only
// once the cluster has given up on it, and meanwhile its replicas read as
// merely not current (NATS itself stops calling a replica current after
// 10 s of silence).
const silentPeer = 10 * time.Second

// jsStreams lists streams through a JetStream context.
type jsStreams struct{ js jetstream.JetStream }

// NewStreamSource returns a StreamSource reading js: every stream the
// relay's NATS account holds, with its leader and its other replicas'
// state (current, offline, lag) when clustered.
func NewStreamSource(js jetstream.JetStream) StreamSource { return jsStreams{js} }

// Streams lists the streams.
func (s jsStreams) Streams(ctx context.Context) ([]Stream, error) {
	var out []Stream
	l := s.js.ListStreams(ctx)
	for info := range l.Info() {
		st := Stream{Name: info.Config.Name, Messages: info.State.Msgs, Bytes: info.State.Bytes,
			Consumers: info.State.Consumers, Replicas: info.Config.Replicas}
		if c := info.Cluster; c != nil {
			st.Leader = c.Leader
			for _, p := range c.Replicas {
				if p != nil {
					st.Peers = append(st.Peers, Peer{Name: p.Name, Current: p.Current,
						Offline: p.Offline || !p.Current && p.Active > silentPeer,
						Lag:     p.Lag, ActiveSeconds: math.Round(p.Active.Seconds()*10) / 10})
				}
			}
		}
		out = append(out, st)
	}
	if err := l.Err(); err != nil {
		return out, fmt.Errorf("list streams: %w", err)
	}
	return out, nil
}
