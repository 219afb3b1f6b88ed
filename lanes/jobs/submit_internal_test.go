package jobs

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestPublishOutcome: which publish errors say for sure that a job
// message was not stored (answered 503 at once) and which leave it
// unknown (settled by a "not accepted" record before answering).
func TestPublishOutcome(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		definitive bool
	}{
		{"refused by the server", &jetstream.APIError{ErrorCode: 10077}, true},
		{"no stream answered", jetstream.ErrNoStreamResponse, true},
		{"no responders", nats.ErrNoResponders, true},
		{"too large", ErrTooLarge, true},
		{"reconnecting, not buffered: never sent", fmt.Errorf("publish: %w", nats.ErrReconnectBufExceeded), true},
		{"acknowledgement lost", nats.ErrTimeout, false},
		{"deadline while waiting", context.DeadlineExceeded, false},
		// A request whose connection closed after sending says so too.
		{"connection closed", nats.ErrConnectionClosed, false},
		{"an earlier try unknown", publishError(nats.ErrReconnectBufExceeded, true), false},
		{"other", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := definitive(tt.err); got != tt.definitive {
				t.Errorf("definitive(%v) = %v; want %v", tt.err, got, tt.definitive)
			}
		})
	}
}
