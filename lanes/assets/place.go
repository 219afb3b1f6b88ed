package assets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A relay of a cluster may start before enough of its peers: declaring
// replicated streams then fails until they are up. UntilPlaced retries.

// placeRetryMax caps the wait between tries of UntilPlaced.
const placeRetryMax = 5 * time.Second

// placeTryTimeout bounds one try of UntilPlaced. A request to a cluster
// that is still electing its meta leader can go unanswered; without a
// bound of its own, one such try would use up the caller's whole
// deadline (TestClusterR3 once waited its full minute on one declare).
const placeTryTimeout = 10 * time.Second

// UntilPlaced runs declare until it succeeds, retrying (with a log line
// each time) while JetStream answers that the cluster cannot place the
// assets yet: no meta leader or too few peers for the replicas
// (10008, 10023, 10005), a stream another relay is creating right now
// that is not found yet (10059, seen while a cluster forms under load),
// or a timeout. Other errors, and ctx ending,
// return at once. Each try gets its own context, bounded by
// placeTryTimeout; declare must be safe to run again after a try that
// timed out.
func UntilPlaced(ctx context.Context, log *slog.Logger, what string, declare func(ctx context.Context) error) error {
	delay := 250 * time.Millisecond
	for {
		tctx, cancel := context.WithTimeout(ctx, placeTryTimeout)
		err := declare(tctx)
		cancel()
		if err == nil || !placementPending(err) {
			return err
		}
		log.Warn("JetStream cluster cannot place assets yet; retrying", "what", what, "error", err.Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %w)", what, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, placeRetryMax)
	}
}

// placementPending reports whether err says the cluster is not ready to
// place replicated assets yet.
func placementPending(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10008, 10023, 10005, 10059:
			return true
		}
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}
