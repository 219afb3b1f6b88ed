package embeddednats

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestStoreErrorAndRecover: StoreError is nil on a fresh server, names a
// disabled JetStream or a logged write error, and RecoverJetStream brings
// JetStream back with its streams and messages, over the same client
// connection.
func TestStoreErrorAndRecover(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(s *Server)
		want    error
	}{
		{"jetstream disabled", func(s *Server) { _ = s.ns.ShutdownJetStream() }, ErrJetStreamDisabled},
		{"write error logged", func(s *Server) {
			s.log.Errorf("JetStream stream '%s > %s' critical write error: %v", "$G", "T", "write x: no space left on device")
		}, ErrStoreWrite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Start(t.Context(), Options{StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = s.Shutdown(ctx)
			}()
			nc, err := s.Connect()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(t.Context(), "t", []byte("before")); err != nil {
				t.Fatal(err)
			}
			if err := s.StoreError(); err != nil {
				t.Fatalf("StoreError on a fresh server: %v", err)
			}
			tt.breakIt(s)
			if err := s.StoreError(); !errors.Is(err, tt.want) {
				t.Fatalf("StoreError = %v; want %v", err, tt.want)
			}
			if err := s.RecoverJetStream(); err != nil {
				t.Fatalf("RecoverJetStream: %v", err)
			}
			if err := s.StoreError(); err != nil {
				t.Fatalf("StoreError after RecoverJetStream: %v", err)
			}
			if _, err := js.Publish(t.Context(), "t", []byte("after")); err != nil {
				t.Fatalf("publish after recovery: %v", err)
			}
			st, err := js.Stream(t.Context(), "T")
			if err != nil {
				t.Fatal(err)
			}
			if info, err := st.Info(t.Context()); err != nil || info.State.Msgs != 2 {
				t.Fatalf("stream T after recovery: %+v, %v; want 2 messages", info, err)
			}
		})
	}
}
