package embeddednats

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Reconnect settings used by [Connect] for a long-lived connection to an
// external cluster.
const (
	reconnectWait     = 2 * time.Second
	reconnectJitter   = 500 * time.Millisecond
	reconnectJitterTL = 2 * time.Second
	pingInterval      = 20 * time.Second
	maxPingsOut       = 3
)

// Connect connects to an external NATS server or cluster. url may be a
// comma-separated list of seed URLs ("nats://n1:4222,nats://n2:4222").
//
// The connection is named ClientName and reconnects forever with jittered
// back-off, so a cluster restart does not kill the process; the initial
// connect must succeed. If ctx has a deadline it bounds the connect timeout.
// opts are applied after these defaults and may override them. The caller
// must close or drain the returned connection.
func Connect(ctx context.Context, url string, opts ...nats.Option) (*nats.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embeddednats: connect %s: %w", url, err)
	}
	all := []nats.Option{
		nats.Name(ClientName),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitterTL),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.RetryOnFailedConnect(false),
	}
	if dl, ok := ctx.Deadline(); ok {
		all = append(all, nats.Timeout(max(time.Until(dl), time.Millisecond)))
	}
	all = append(all, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, fmt.Errorf("embeddednats: connect %s: %w", url, err)
	}
	if err := ctx.Err(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("embeddednats: connect %s: %w", url, err)
	}
	return nc, nil
}
