package status

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// jsStreams lists streams through a JetStream context.
type jsStreams struct{ js jetstream.JetStream }

// NewStreamSource returns a StreamSource reading js: every stream the
// relay's NATS account holds, with its leader and peers when clustered.
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
					st.Peers = append(st.Peers, p.Name)
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
