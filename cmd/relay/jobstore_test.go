package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/workers/simupstream"
)

// waitSucceeded polls until every job in ids has succeeded.
func (r *jobsRelay) waitSucceeded(d time.Duration, ids ...string) {
	r.t.Helper()
	natstest.Eventually(r.t, d, fmt.Sprintf("%d jobs succeeded", len(ids)), func() bool {
		for _, id := range ids {
			if j, ok := r.job(id); !ok || j.Status != "succeeded" {
				return false
			}
		}
		return true
	})
}

// readyz returns /readyz's status and body.
func (p *relayProc) readyz() (int, string) { return p.get(p.addr, "/readyz") }

// waitUnready polls /readyz until it answers 503 with want in its body.
func (p *relayProc) waitUnready(d time.Duration, want string) string {
	p.t.Helper()
	var body string
	natstest.Eventually(p.t, d, fmt.Sprintf("/readyz 503 with %q", want), func() bool {
		var code int
		code, body = p.readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, want)
	})
	return body
}

// TestJobStoreHealsDeletedStream deletes RELAY_JOBS from outside: the
// relay says why it is unready, recreates the stream with its executor
// consumer within a few seconds, and runs jobs again.
func TestJobStoreHealsDeletedStream(t *testing.T) {
	t.Parallel()
	r := newJobsRelay(t, simupstream.Options{Latency: time.Millisecond}, 0)
	p := r.start()
	if code, body := p.get(p.addr, "/metrics"); code != http.StatusOK ||
		!strings.Contains(body, "relay_job_store_up 1") || !strings.Contains(body, `relay_job_store_repairs_total{what="jobs"} 0`) {
		t.Fatalf("/metrics at start lacks relay_job_store_up 1 or repairs at 0")
	}
	r.waitSucceeded(20*time.Second, r.submit(""))

	nc, err := nats.Connect("nats://"+r.natsAddr, nats.UserInfo("observer", observerPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(t.Context(), "RELAY_JOBS"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "RELAY_JOBS repaired", func() bool {
		return p.metric(`relay_job_store_repairs_total{what="jobs"}`) >= 1
	})
	p.waitLog("a log line saying the job store was unavailable because RELAY_JOBS was missing", map[string]string{"msg": "job store unavailable", "reason": "stream RELAY_JOBS missing"})
	p.waitReady()
	r.waitSucceeded(20*time.Second, r.submit(""))
	p.stopClean()
}

// TestJobStoreHealsAfterDiskFull runs the embedded NATS store on a small
// tmpfs and fills it while a job runs upstream: submits answer 503 and
// /readyz says why; once the filler is deleted the relay restarts
// JetStream by itself, is ready again, takes jobs, and every accepted job
// (the one running at the time included) runs exactly once.
func TestJobStoreHealsAfterDiskFull(t *testing.T) {
	mnt := natstest.SmallFS(t, "8m")
	t.Parallel()
	r := newJobsRelay(t, simupstream.Options{Latency: 2 * time.Second}, 0)
	r.writeConfig(fmt.Sprintf("{listen: %s, store_dir: %s}", r.natsAddr, filepath.Join(mnt, "nats")))
	p := r.start()
	accepted := []string{r.submit("")}
	natstest.Eventually(t, 10*time.Second, "the first job upstream", func() bool { return r.upstream.Stats().InFlight > 0 })

	filler := filepath.Join(mnt, "filler")
	natstest.Fill(t, filler)
	pad := strings.Repeat("a", 32<<10)
	for i := 0; ; i++ {
		code, id, body := r.trySubmit("", pad)
		if code == http.StatusServiceUnavailable {
			t.Logf("submit %d with the disk full: %d %s", i, code, body)
			break
		}
		if code != http.StatusAccepted || i > 200 {
			t.Fatalf("submit %d with the disk full: %d %s; want 202s, then a 503", i, code, body)
		}
		accepted = append(accepted, id)
	}
	body := p.waitUnready(10*time.Second, "disk full?")
	t.Logf("/readyz: %s", body)
	if up := p.metric("relay_job_store_up"); up != 0 {
		t.Errorf("relay_job_store_up = %v with the disk full; want 0", up)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	p.waitReady()
	if n := p.metric(`relay_job_store_repairs_total{what="jetstream"}`); n < 1 {
		t.Errorf(`relay_job_store_repairs_total{what="jetstream"} = %v; want ≥ 1`, n)
	}
	accepted = append(accepted, r.submit(""))
	r.waitSucceeded(60*time.Second, accepted...)
	if n := r.upstream.Stats().Requests; n != int64(len(accepted)) {
		t.Errorf("upstream calls = %d; want %d, one per accepted job", n, len(accepted))
	}
	p.stopClean()
}

// TestJobStoreExternalNATSRestart stops the external nats-server the
// relay uses: /readyz says the connection is lost and submits answer 503;
// the server is started again on the same store and port, and the relay
// is ready and runs jobs again without a restart.
func TestJobStoreExternalNATSRestart(t *testing.T) {
	t.Parallel()
	ns := startNATSServer(t)
	r := newJobsRelay(t, simupstream.Options{Latency: time.Millisecond}, 0)
	r.writeConfig("{url: nats://" + ns.addr + "}")
	p := r.start()
	r.waitSucceeded(20*time.Second, r.submit(""))

	ns.stop()
	t.Logf("/readyz: %s", p.waitUnready(10*time.Second, "nats connection lost"))
	if code, _, body := r.trySubmit("", "hi"); code != http.StatusServiceUnavailable {
		t.Errorf("submit with NATS down: %d %s; want 503", code, body)
	}
	ns.start()
	p.waitReady()
	r.waitSucceeded(20*time.Second, r.submit(""))
	p.stopClean()
}
