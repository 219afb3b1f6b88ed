package embeddednats

import (
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrJetStreamDisabled is wrapped by StoreError when the server runs
// with JetStream disabled: it disables it itself after some write errors.
var ErrJetStreamDisabled = errors.New("jetstream disabled after a write error (disk full?)")

// ErrStoreWrite is wrapped by StoreError when the server logged a failed
// store write: the stream concerned refuses every later write (its
// publishes go unanswered) until JetStream restarts.
var ErrStoreWrite = errors.New("jetstream store write error (disk full?)")

// spaceProbeSize is what RecoverJetStream writes to StoreDir to tell that
// the disk has space again.
const spaceProbeSize = 256 << 10

// StoreError reports why JetStream cannot store messages now: the server
// is down, JetStream is disabled, or a store write failed since JetStream
// last started. It returns nil when none of these holds. It is cheap.
func (s *Server) StoreError() error {
	select {
	case <-s.done:
		return errors.New("embedded nats server shut down")
	default:
	}
	if !s.ns.Running() {
		return errors.New("embedded nats server not running")
	}
	if !s.ns.JetStreamEnabled() {
		return ErrJetStreamDisabled
	}
	if msg := s.log.storeWriteErr(); msg != "" {
		return fmt.Errorf("%w: %s", ErrStoreWrite, msg)
	}
	return nil
}

// RecoverJetStream restarts JetStream after a store error, once the store
// directory takes writes again (it writes and removes a probe file
// first), so that streams whose writes failed reload from disk and take
// writes again. Stored messages and consumer state are kept: it is
// JetStream's own shutdown and start, as at a process restart, with the
// configuration of Start. Client connections stay open. It returns an
// error, and leaves JetStream as it was, while the disk is still full.
func (s *Server) RecoverJetStream() error {
	if !s.ns.Running() {
		return errors.New("embeddednats: recover jetstream: server not running")
	}
	if err := probeSpace(s.storeDir); err != nil {
		return fmt.Errorf("embeddednats: recover jetstream: %w", err)
	}
	if s.ns.JetStreamEnabled() {
		if err := s.ns.ShutdownJetStream(); err != nil {
			return fmt.Errorf("embeddednats: recover jetstream: shut down: %w", err)
		}
	}
	// Errors logged while shutting down belong to the old run.
	s.log.clearWriteErr()
	if err := s.ns.EnableJetStream(&server.JetStreamConfig{StoreDir: s.storeDir}); err != nil {
		return fmt.Errorf("embeddednats: recover jetstream: enable: %w", err)
	}
	return nil
}

// probeSpace writes and removes a file of spaceProbeSize bytes in dir.
func probeSpace(dir string) (err error) {
	f, err := os.CreateTemp(dir, ".relay-space-probe-*")
	if err != nil {
		return fmt.Errorf("store dir %s takes no writes: %w", dir, err)
	}
	defer func() {
		_ = f.Close()
		if rerr := os.Remove(f.Name()); rerr != nil && err == nil {
			err = fmt.Errorf("remove space probe: %w", rerr)
		}
	}()
	if _, err := f.Write(make([]byte, spaceProbeSize)); err != nil {
		return fmt.Errorf("store dir %s takes no writes: %w", dir, pathless(err))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store dir %s takes no writes: %w", dir, pathless(err))
	}
	return nil
}

// pathless drops the probe file's random name from err, so the reason a
// recovery failed reads the same at each try.
func pathless(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
