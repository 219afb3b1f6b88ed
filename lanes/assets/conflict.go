package assets

import (
	"errors"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// conflictCodes are the JetStream API error codes of a compare-and-set
// that lost: 10071 (JSStreamWrongLastSequenceErrF, a single server) and
// 10164 (JSStreamWrongLastSequenceConstantErr, replicated streams).
var conflictCodes = []jetstream.ErrorCode{
	jetstream.JSErrCodeStreamWrongLastSequence,
	jetstream.JSErrCodeStreamWrongLastSequenceConstant,
}

// IsConflict reports whether err is a lost compare-and-set (a KV Update
// or Create, or a publish with an expected last sequence), whatever code
// JetStream carried it with: matched on the API error code and nats.go's
// sentinels, never on text. Every package that writes by
// compare-and-set asks this one function.
func IsConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && slices.Contains(conflictCodes, apiErr.ErrorCode)
}
