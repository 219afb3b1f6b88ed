package natstest_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestHelpers(t *testing.T) {
	tests := []struct {
		name    string
		start   func(testing.TB) *embeddednats.Server
		wantTCP bool
	}{
		{name: "Start", start: natstest.Start},
		{name: "StartTCP", start: natstest.StartTCP, wantTCP: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.start(t)
			if !s.Ready() {
				t.Errorf("%s: Ready() = false; want true", tt.name)
			}
			if got := s.ClientURL() != ""; got != tt.wantTCP {
				t.Errorf("%s: ClientURL() = %q; want TCP %v", tt.name, s.ClientURL(), tt.wantTCP)
			}
			js := natstest.JetStream(t, s)
			if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
				Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage,
			}); err != nil {
				t.Fatalf("CreateStream: %v", err)
			}
			ack, err := js.Publish(t.Context(), "t.x", []byte("v"))
			if err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if ack.Sequence != 1 {
				t.Errorf("Publish sequence = %d; want 1", ack.Sequence)
			}
			if _, err := js.Publish(t.Context(), "t.y", []byte("w")); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			for subject, want := range map[string]uint64{"": 2, "t.x": 1, "t.z": 0} {
				if got := natstest.StreamMsgs(t, js, "T", subject); got != want {
					t.Errorf("StreamMsgs(T, %q) = %d; want %d", subject, got, want)
				}
			}
		})
	}
}
