package natstest

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamMsgs returns the number of messages stream holds, or of those on
// subject when subject is not "". It fails the test when the stream
// cannot be read.
func StreamMsgs(t testing.TB, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("natstest: stream %s: %v", stream, err)
	}
	var opts []jetstream.StreamInfoOpt
	if subject != "" {
		opts = append(opts, jetstream.WithSubjectFilter(subject))
	}
	info, err := st.Info(t.Context(), opts...)
	if err != nil {
		t.Fatalf("natstest: stream %s info: %v", stream, err)
	}
	if subject != "" {
		return info.State.Subjects[subject]
	}
	return info.State.Msgs
}
