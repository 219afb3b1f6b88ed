package jobs

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestIsConflict: a lost compare-and-set is recognized whatever code
// JetStream carries it with (10071 on one server, 10164 on replicated
// streams) and however nats.go wraps it; other errors are not conflicts.
func TestIsConflict(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"10071", &jetstream.APIError{Code: 400, ErrorCode: 10071, Description: "wrong last sequence: 3"}, true},
		{"10164 wrapped", fmt.Errorf("jobs: %w", &jetstream.APIError{Code: 400, ErrorCode: 10164}), true},
		{"key exists", jetstream.ErrKeyExists, true},
		{"revision mismatch", fmt.Errorf("x: %w", jetstream.ErrKeyRevisionMismatch), true},
		{"other API error", &jetstream.APIError{Code: 503, ErrorCode: 10008}, false},
		{"timeout", errors.New("context deadline exceeded"), false},
		{"nil", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := isConflict(tc.err); got != tc.want {
				t.Errorf("isConflict(%v) = %v; want %v", tc.err, got, tc.want)
			}
		})
	}
}
