package jobs_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relaygw/relay/lanes/jobs"
)

// TestQueuePosition: a queued job's GET carries its place in its lane
// (the lane's jobs accepted before it that have not ended, per lane) and,
// once the lane has started jobs lately, an estimated start; running and
// finished jobs carry neither.
func TestQueuePosition(t *testing.T) {
	st := newStore(t)
	g := newGate()
	o := jobs.Options{Workers: 1, Lanes: map[string]time.Duration{"batch": time.Hour, "interactive": time.Hour}}
	s := open(t, st.js, g, o)
	const n = 10
	var batch []jobs.Job
	for range n {
		batch = append(batch, mustSubmit(t, s, sub("k")))
	}
	inter := sub("k")
	inter.Lane = "interactive"
	ij := mustSubmit(t, s, inter)
	position := func(j jobs.Job) (int, jobs.Job) {
		t.Helper()
		got, err := s.Get(t.Context(), "k", j.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got.QueuePosition == nil {
			return -1, got
		}
		return *got.QueuePosition, got
	}
	for i, j := range batch {
		if p, got := position(j); p != i || got.EstimatedStartAt != nil {
			t.Errorf("batch job %d before any run: position %d, estimated start %v; want %d and none (no starts yet)", i, p, got.EstimatedStartAt, i)
		}
	}
	if p, _ := position(ij); p != 0 {
		t.Errorf("the interactive lane's only job: position %d; want 0 (lanes are counted apart)", p)
	}
	// One worker: finish the first five jobs one by one; the sixth runs.
	run(t, s)
	for i := range 6 {
		id := <-g.started
		if id != batch[i].ID && id != ij.ID {
			t.Fatalf("started %s; want jobs in order", id)
		}
		if id == ij.ID {
			g.release <- jobs.Outcome{StatusCode: 200, Body: []byte(`{}`)}
			id = <-g.started
		}
		if i < 5 {
			g.release <- jobs.Outcome{StatusCode: 200, Body: []byte(`{}`)}
			waitJob(t, s, "k", id, status(jobs.StatusSucceeded))
		}
	}
	if p, got := position(batch[5]); p != -1 || got.Status != jobs.StatusRunning {
		t.Errorf("running job: status %s position %d; want running without a position", got.Status, p)
	}
	if p, _ := position(batch[0]); p != -1 {
		t.Errorf("finished job: position %d; want none", p)
	}
	before := time.Now()
	p, last := position(batch[n-1])
	if p != 4 {
		t.Errorf("last job: position %d; want 4 (one running, three queued before it)", p)
	}
	if last.EstimatedStartAt == nil || last.EstimatedStartAt.Before(before.Add(-time.Millisecond)) {
		t.Errorf("last job: estimated start %v; want one after %v (the lane started jobs lately)", last.EstimatedStartAt, before)
	}
	b, err := json.Marshal(last)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), fmt.Sprintf(`"queue_position":%d`, p)) || !strings.Contains(string(b), `"estimated_start_at":"`) {
		t.Errorf("JSON %s; want queue_position and estimated_start_at", b)
	}
	for range 5 {
		g.release <- jobs.Outcome{StatusCode: 200, Body: []byte(`{}`)}
		if len(g.started) == 0 {
			<-g.started
		}
	}
}
