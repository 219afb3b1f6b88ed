package lanes

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
)

// openMirrored opens a harness whose Set mirrors to js.
func openMirrored(t *testing.T, js jetstream.JetStream, specs ...Spec) *harness {
	t.Helper()
	s, err := Open(t.Context(), Options{Lanes: deep(specs...), JetStream: js})
	if err != nil {
		t.Fatalf("Open with JetStream: %v", err)
	}
	h := &harness{t: t, s: s, c: newCapacity()}
	t.Cleanup(func() {
		_ = s.Close()
		h.wg.Wait()
	})
	return h
}

func TestMirror(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns)
	h := openMirrored(t, js, Spec{Name: "interactive", MaxWait: time.Minute}, Spec{Name: "batch", MaxWait: time.Minute})
	info, err := js.Stream(t.Context(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := info.CachedInfo().Config; cfg.Storage != jetstream.MemoryStorage {
		t.Errorf("stream storage %v, want memory", cfg.Storage)
	}
	var chans []<-chan result
	for i := range 3 {
		id := fmt.Sprintf("b%d", i)
		chans = append(chans, h.start(t.Context(), id, h.waiter(id, "batch", "team-a", "claude")))
	}
	chans = append(chans, h.start(t.Context(), "i0", h.waiter("i0", "interactive", "team-a", "claude")))
	h.poll("4 parked requests in "+StreamName, func() bool { return natstest.StreamMsgs(t, js, StreamName, "") == 4 })
	if n := natstest.StreamMsgs(t, js, StreamName, SubjectPrefix+"batch"); n != 3 {
		t.Errorf("%sbatch holds %d, want 3", SubjectPrefix, n)
	}
	// The message says who waits for what.
	msg, err := js.Stream(t.Context(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := msg.GetLastMsgForSubject(t.Context(), SubjectPrefix+"interactive")
	if err != nil {
		t.Fatal(err)
	}
	if want := `"key":"team-a","route":"claude"`; !strings.Contains(string(raw.Data), want) {
		t.Errorf("mirror message %s, want it to hold %s", raw.Data, want)
	}

	h.c.add(h.s, "claude", 4)
	for _, ch := range chans {
		if r := h.recv(ch); r.err != nil {
			t.Errorf("%s: %v", r.id, r.err)
		}
	}
	h.poll("empty "+StreamName+" after dispatch", func() bool { return natstest.StreamMsgs(t, js, StreamName, "") == 0 })

	// Leaving by cancel or expiry also removes the message.
	ctx, cancel := context.WithCancel(t.Context())
	gone := h.start(ctx, "gone", h.waiter("gone", "batch", "team-a", "claude"))
	w := h.waiter("short", "batch", "team-a", "claude")
	w.MaxWait = 30 * time.Millisecond
	short := h.start(t.Context(), "short", w)
	h.poll("2 parked", func() bool { return natstest.StreamMsgs(t, js, StreamName, "") >= 1 })
	cancel()
	h.recv(gone)
	h.recv(short)
	h.poll("empty "+StreamName+" after cancel and expiry", func() bool { return natstest.StreamMsgs(t, js, StreamName, "") == 0 })
}

// TestMirrorCloseWhileParked closes a mirrored Set that holds requests:
// they fail with ErrClosed, and no waiter writes to the closed mirror.
func TestMirrorCloseWhileParked(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns)
	h := openMirrored(t, js, Spec{Name: "l", MaxWait: time.Hour})
	var chans []<-chan result
	for i := range 20 {
		id := fmt.Sprintf("w%d", i)
		chans = append(chans, h.start(t.Context(), id, h.waiter(id, "l", "k", "r")))
	}
	h.poll("20 mirrored", func() bool { return natstest.StreamMsgs(t, js, StreamName, "") == 20 })
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chans {
		if r := h.recv(ch); !errors.Is(r.err, ErrClosed) {
			t.Errorf("%s: %v, want ErrClosed", r.id, r.err)
		}
	}
	if n := natstest.StreamMsgs(t, js, StreamName, ""); n != 0 {
		t.Errorf("%s holds %d after Close, want 0", StreamName, n)
	}
}

// TestMirrorReopen opens lanes on a server whose RELAY_LANES already
// exists, as after a restart: on the same server (messages already there
// are kept, since other relays sharing the stream may own them: stale ones
// expire with the stream's max age; a larger configuration is applied) and
// on a server restarted on the same store directory.
func TestMirrorReopen(t *testing.T) {
	dir := t.TempDir()
	start := func() (*embeddednats.Server, jetstream.JetStream) {
		ns, err := embeddednats.Start(t.Context(), embeddednats.Options{StoreDir: dir})
		if err != nil {
			t.Fatalf("start NATS: %v", err)
		}
		nc, err := ns.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return ns, js
	}
	shutdown := func(ns *embeddednats.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ns.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ns, js := start()
	h := openMirrored(t, js, Spec{Name: "a", MaxDepth: 10, MaxWait: time.Minute})
	ch := h.start(t.Context(), "w", h.waiter("w", "a", "k", "r"))
	h.poll("mirrored", func() bool { return natstest.StreamMsgs(t, js, StreamName, "") == 1 })
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	h.recv(ch)
	// A stale message, as a crashed relay leaves behind.
	if _, err := js.Publish(t.Context(), SubjectPrefix+"a", []byte(`{"id":1}`)); err != nil {
		t.Fatal(err)
	}
	h2 := openMirrored(t, js, Spec{Name: "a", MaxDepth: 20, MaxWait: 2 * time.Minute}, Spec{Name: "b", MaxWait: time.Minute})
	if n := natstest.StreamMsgs(t, js, StreamName, ""); n != 1 {
		t.Errorf("reopened stream holds %d messages, want the 1 already there (no purge)", n)
	}
	st, err := js.Stream(t.Context(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxMsgs; got != 20+10000 {
		t.Errorf("reopened stream MaxMsgs %d, want the new lanes' total depth %d", got, 20+10000)
	}
	ch = h2.start(t.Context(), "w2", h2.waiter("w2", "b", "k", "r"))
	h2.poll("mirrored after reopen", func() bool { return natstest.StreamMsgs(t, js, StreamName, "") == 2 })
	h2.c.add(h2.s, "r", 1)
	if r := h2.recv(ch); r.err != nil {
		t.Fatal(r.err)
	}
	if err := h2.s.Close(); err != nil {
		t.Fatal(err)
	}
	shutdown(ns)

	ns, js = start()
	defer shutdown(ns)
	h3 := openMirrored(t, js, Spec{Name: "a", MaxWait: time.Minute})
	ch = h3.start(t.Context(), "w3", h3.waiter("w3", "a", "k", "r"))
	h3.poll("mirrored after restart", func() bool { return natstest.StreamMsgs(t, js, StreamName, "") == 1 })
	h3.c.add(h3.s, "r", 1)
	if r := h3.recv(ch); r.err != nil {
		t.Fatal(r.err)
	}
	if err := h3.s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMirrorBurst parks a lane's whole depth at once, far faster than
// records can be written one by one: every request parks, and every one
// reaches RELAY_LANES (the writers' queues grow with the burst), none is
// dropped; relay_lane_mirror_dropped_total stays 0.
func TestMirrorBurst(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns)
	reg := prometheus.NewRegistry()
	const n = 10000
	s, err := Open(t.Context(), Options{Lanes: []Spec{{Name: "l", MaxDepth: n, MaxWait: time.Minute}},
		JetStream: js, Registry: reg})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c := newCapacity()
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("w%d", i)
		if _, err := s.Park(t.Context(), Waiter{Lane: "l", Key: "k", Route: "r", Admit: c.admit(id, "r")}); err != nil {
			t.Fatalf("Park %s: %v", id, err)
		}
	}
	parked := time.Since(start)
	natstest.Eventually(t, 60*time.Second, fmt.Sprintf("all %d in RELAY_LANES", n), func() bool {
		inStream, dropped := natstest.StreamMsgs(t, js, StreamName, ""), uint64(gathered(t, reg, "relay_lane_mirror_dropped_total"))
		if dropped != 0 {
			t.Fatalf("%d records dropped (%d in RELAY_LANES), want none", dropped, inStream)
		}
		return inStream == n
	})
	t.Logf("%d parked in %v; all in RELAY_LANES %v later", n, parked, time.Since(start)-parked)
}

// TestMirrorDropsCounted leaves the writers no room at all: every
// request still parks, and every record is counted as dropped.
func TestMirrorDropsCounted(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns)
	reg := prometheus.NewRegistry()
	const n = 100
	s, err := Open(t.Context(), Options{Lanes: []Spec{{Name: "l", MaxDepth: n, MaxWait: time.Minute}},
		JetStream: js, Registry: reg})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.mirror.limit.Store(0)
	c := newCapacity()
	for i := range n {
		id := fmt.Sprintf("w%d", i)
		if _, err := s.Park(t.Context(), Waiter{Lane: "l", Key: "k", Route: "r", Admit: c.admit(id, "r")}); err != nil {
			t.Fatalf("Park %s: %v", id, err)
		}
	}
	if d := s.Depth("l"); d != n {
		t.Errorf("depth %d, want %d: a dropped record must not drop its request", d, n)
	}
	if dropped := gathered(t, reg, "relay_lane_mirror_dropped_total"); dropped != n {
		t.Errorf("relay_lane_mirror_dropped_total = %v, want %d", dropped, n)
	}
	if got := natstest.StreamMsgs(t, js, StreamName, ""); got != 0 {
		t.Errorf("RELAY_LANES holds %d, want 0", got)
	}
}

// gathered returns the value of the unlabelled counter or gauge name in
// reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// TestMirrorRepair deletes RELAY_LANES: CheckMirror says so, and
// RepairMirror recreates it with the lanes' current limits (those of the
// last Update).
func TestMirrorRepair(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns)
	h := openMirrored(t, js, Spec{Name: "l", MaxDepth: 10, MaxWait: time.Minute})
	if err := h.s.CheckMirror(t.Context()); err != nil {
		t.Fatalf("CheckMirror: %v", err)
	}
	if err := h.s.Update([]Spec{{Name: "l", MaxDepth: 20, MaxWait: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(t.Context(), StreamName); err != nil {
		t.Fatal(err)
	}
	if err := h.s.CheckMirror(t.Context()); err == nil || err.Error() != "stream RELAY_LANES missing" {
		t.Fatalf("CheckMirror after the delete = %v; want stream RELAY_LANES missing", err)
	}
	if err := h.s.RepairMirror(t.Context()); err != nil {
		t.Fatalf("RepairMirror: %v", err)
	}
	if err := h.s.CheckMirror(t.Context()); err != nil {
		t.Fatalf("CheckMirror after the repair: %v", err)
	}
	st, err := js.Stream(t.Context(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxMsgs; got != 20 {
		t.Errorf("recreated stream MaxMsgs = %d; want 20 (the limits after Update)", got)
	}
}
