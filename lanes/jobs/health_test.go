package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
)

// healthLoop runs a Health loop over the store's embedded server and s,
// as the relay wires it, until the test ends.
func healthLoop(t *testing.T, st *store, s *jobs.Service) (*jobs.Health, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := jobs.NewHealth(jobs.HealthOptions{
		Checks: []jobs.HealthCheck{
			{Name: "jetstream", Check: func(context.Context) error { return st.ns.StoreError() },
				Repair: func(context.Context) error { return st.ns.RecoverJetStream() }},
			{Name: "jobs", Check: s.CheckStore, Repair: s.RepairStore},
		},
		Interval: 500 * time.Millisecond,
		Trigger:  s.StoreErrors(),
		Registry: reg,
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return h, reg
}

// waitFor polls cond every 20 ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	natstest.Eventually(t, d, what, cond)
}

// gauge returns the value of a metric without labels from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestStoreHealsDeletedAssets deletes, through the service's own
// JetStream connection, each stream, bucket or consumer the service needs:
// CheckStore names what is missing, the health loop recreates it within a
// few seconds, and a job submitted afterwards runs.
func TestStoreHealsDeletedAssets(t *testing.T) {
	tests := []struct {
		name, want string
		del        func(ctx context.Context, st *store) error
	}{
		{"jobs stream", "stream RELAY_JOBS missing", func(ctx context.Context, st *store) error {
			return st.js.DeleteStream(ctx, jobs.JobsStream)
		}},
		{"state bucket", "bucket RELAY_JOB_STATE missing", func(ctx context.Context, st *store) error {
			return st.js.DeleteKeyValue(ctx, jobs.StateBucket)
		}},
		{"idempotency bucket", "bucket RELAY_JOB_IDEM missing", func(ctx context.Context, st *store) error {
			return st.js.DeleteKeyValue(ctx, jobs.IdemBucket)
		}},
		{"executor consumer", "consumer relay-jobs on RELAY_JOBS missing", func(ctx context.Context, st *store) error {
			return st.js.DeleteConsumer(ctx, jobs.JobsStream, jobs.ExecutorConsumer)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore(t)
			runner := &countingRunner{}
			s := start(t, st.js, runner, jobs.Options{})
			if err := s.CheckStore(t.Context()); err != nil {
				t.Fatalf("CheckStore on a fresh store: %v", err)
			}
			before, _, err := s.Submit(t.Context(), sub("team-a"))
			if err != nil {
				t.Fatal(err)
			}
			waitJob(t, s.Service, "team-a", before.ID, status(jobs.StatusSucceeded))

			if err := tt.del(t.Context(), st); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if err := s.CheckStore(t.Context()); err == nil || err.Error() != tt.want {
				t.Fatalf("CheckStore after the delete = %v; want %q", err, tt.want)
			}
			h, reg := healthLoop(t, st, s.Service)
			waitFor(t, 5*time.Second, "store healed", func() bool {
				return h.Err() == nil && s.CheckStore(t.Context()) == nil
			})
			if n := repairs(t, reg, "jobs"); n < 1 {
				t.Errorf("relay_job_store_repairs_total{what=jobs} = %v; want ≥ 1", n)
			}
			if up := gauge(t, reg, "relay_job_store_up"); up != 1 {
				t.Errorf("relay_job_store_up = %v; want 1", up)
			}
			after, _, err := s.Submit(t.Context(), sub("team-a"))
			if err != nil {
				t.Fatalf("Submit after the repair: %v", err)
			}
			waitJob(t, s.Service, "team-a", after.ID, status(jobs.StatusSucceeded))
			if n := runner.n.Load(); n != 2 {
				t.Errorf("runs = %d; want 2 (one per job)", n)
			}
		})
	}
}

// repairs returns relay_job_store_repairs_total{what} from reg.
func repairs(t *testing.T, reg *prometheus.Registry, what string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "relay_job_store_repairs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == what {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no relay_job_store_repairs_total{what=%q}", what)
	return 0
}

// TestStoreHealsAfterDiskFull runs the store on a small tmpfs and fills
// it while a job runs: submits fail and the health loop says why; once
// the filler is removed, JetStream is restarted, submits work again, and
// every accepted job ends exactly once (the running one is not run
// again).
func TestStoreHealsAfterDiskFull(t *testing.T) {
	mnt := natstest.SmallFS(t, "8m")
	st := &store{t: t, dir: filepath.Join(mnt, "nats")}
	st.start()
	t.Cleanup(st.stop)
	g := newGate()
	s := start(t, st.js, g, jobs.Options{})
	h, reg := healthLoop(t, st, s.Service)

	running, _, err := s.Submit(t.Context(), sub("team-a"))
	if err != nil {
		t.Fatal(err)
	}
	if id := <-g.started; id != running.ID {
		t.Fatalf("started %s; want %s", id, running.ID)
	}
	filler := filepath.Join(mnt, "filler")
	natstest.Fill(t, filler)

	big := sub("team-a")
	big.Body = []byte(`{"model":"claude-sonnet","pad":"` + strings.Repeat("a", 32<<10) + `"}`)
	var accepted []string
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		j, _, err := s.Submit(ctx, big)
		cancel()
		if err != nil {
			t.Logf("submit %d with the disk full: %v", i, err)
			break
		}
		accepted = append(accepted, j.ID)
		if i > 200 {
			t.Fatal("submits never failed on a full disk")
		}
	}
	waitFor(t, 5*time.Second, "health reports the write error", func() bool {
		err := h.Err()
		return err != nil && strings.Contains(err.Error(), "disk full?")
	})
	t.Logf("health: %v", h.Err())
	if up := gauge(t, reg, "relay_job_store_up"); up != 0 {
		t.Errorf("relay_job_store_up = %v while the disk is full; want 0", up)
	}
	// The running job ends while the store is down: its end is kept and
	// written once the store is back, not run again.
	g.release <- jobs.Outcome{StatusCode: 200, Body: []byte(`{"ok":true}`)}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "health recovered", func() bool { return h.Err() == nil })
	if n := repairs(t, reg, "jetstream"); n < 1 {
		t.Errorf("relay_job_store_repairs_total{what=jetstream} = %v; want ≥ 1", n)
	}
	next, _, err := s.Submit(t.Context(), sub("team-a"))
	if err != nil {
		t.Fatalf("Submit after space came back: %v", err)
	}
	accepted = append(accepted, next.ID)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // release every other job as it starts
		for {
			select {
			case <-g.started:
			case <-done:
				return
			}
			select {
			case g.release <- jobs.Outcome{StatusCode: 200, Body: []byte(`{"ok":true}`)}:
			case <-done:
				return
			}
		}
	})
	defer func() { close(done); wg.Wait() }()
	for _, id := range append([]string{running.ID}, accepted...) {
		waitJob(t, s.Service, "team-a", id, status(jobs.StatusSucceeded))
		if n := g.count(id); n != 1 {
			t.Errorf("job %s ran %d times; want 1", id, n)
		}
	}
}

// TestHealthCheckOrder: a pass runs the checks in order and stops at the
// first that still fails after its repair; a repair that works counts in
// relay_job_store_repairs_total and leaves the store up.
func TestHealthCheckOrder(t *testing.T) {
	errMissing := errors.New("stream X missing")
	tests := []struct {
		name      string
		repair    func(*bool) error // nil: b has no repair
		want      string            // Err's text; "" is up
		wantC     bool              // the check after b ran
		wantCount float64           // repairs of b
	}{
		{"no repair", nil, "stream X missing", false, 0},
		{"repaired", func(fixed *bool) error { *fixed = true; return nil }, "", true, 1},
		{"repair fails", func(*bool) error { return errors.New("disk full") },
			"stream X missing (repair failed: disk full)", false, 0},
		{"repair does not help", func(*bool) error { return nil }, "stream X missing (still, after a repair)", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fixed, cRan := false, false
			b := jobs.HealthCheck{Name: "b", Check: func(context.Context) error {
				if fixed {
					return nil
				}
				return errMissing
			}}
			if tt.repair != nil {
				b.Repair = func(context.Context) error { return tt.repair(&fixed) }
			}
			reg := prometheus.NewRegistry()
			h := jobs.NewHealth(jobs.HealthOptions{Registry: reg, Checks: []jobs.HealthCheck{
				{Name: "a", Check: func(context.Context) error { return nil }},
				b,
				{Name: "c", Check: func(context.Context) error { cRan = true; return nil }},
			}})
			err := h.Check(t.Context())
			if got := fmt.Sprint(err); (tt.want == "" && err != nil) || (tt.want != "" && got != tt.want) {
				t.Errorf("Check = %v; want %q", err, tt.want)
			}
			if h.Err() != err {
				t.Errorf("Err = %v; want %v", h.Err(), err)
			}
			if cRan != tt.wantC {
				t.Errorf("check c ran: %v; want %v", cRan, tt.wantC)
			}
			if tt.repair != nil {
				if n := repairs(t, reg, "b"); n != tt.wantCount {
					t.Errorf("repairs{b} = %v; want %v", n, tt.wantCount)
				}
			}
			wantUp := 0.0
			if tt.want == "" {
				wantUp = 1
			}
			if up := gauge(t, reg, "relay_job_store_up"); up != wantUp {
				t.Errorf("relay_job_store_up = %v; want %v", up, wantUp)
			}
		})
	}
}

// TestHealthAdvisory: an advisory check that fails (the lanes' mirror)
// is repaired like the others but never takes the store down, and the
// checks after it still run.
func TestHealthAdvisory(t *testing.T) {
	tests := []struct {
		name      string
		repair    func(*bool) error
		wantCount float64
	}{
		{"repair fails", func(*bool) error { return errors.New("no placement") }, 0},
		{"repair does not help", func(*bool) error { return nil }, 0},
		{"repaired", func(fixed *bool) error { *fixed = true; return nil }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fixed, cRan := false, false
			reg := prometheus.NewRegistry()
			h := jobs.NewHealth(jobs.HealthOptions{Registry: reg, Checks: []jobs.HealthCheck{
				{Name: "mirror", Advisory: true, Check: func(context.Context) error {
					if fixed {
						return nil
					}
					return errors.New("stream M: context deadline exceeded")
				}, Repair: func(context.Context) error { return tt.repair(&fixed) }},
				{Name: "c", Check: func(context.Context) error { cRan = true; return nil }},
			}})
			if err := h.Check(t.Context()); err != nil || h.Err() != nil {
				t.Errorf("Check = %v, Err = %v; want the store up", err, h.Err())
			}
			if !cRan {
				t.Error("the check after the advisory one did not run")
			}
			if up := gauge(t, reg, "relay_job_store_up"); up != 1 {
				t.Errorf("relay_job_store_up = %v; want 1", up)
			}
			if n := repairs(t, reg, "mirror"); n != tt.wantCount {
				t.Errorf("repairs{mirror} = %v; want %v", n, tt.wantCount)
			}
		})
	}
}
