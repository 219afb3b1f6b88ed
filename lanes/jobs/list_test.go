package jobs_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
)

// byModel runs a job by its model: "ok" succeeds, "bad" fails (a 400),
// "wait" finds no capacity for an hour (so stays queued), "hang" runs
// until the service stops.
var byModel = jobs.RunnerFunc(func(ctx context.Context, j jobs.Job, _ []byte) jobs.Outcome {
	switch j.Model {
	case "bad":
		return jobs.Outcome{StatusCode: 400, Body: []byte(`{"type":"error"}`)}
	case "hang":
		<-ctx.Done()
		return jobs.Outcome{Err: ctx.Err(), Retryable: true}
	default:
		return jobs.Outcome{StatusCode: 200, Body: []byte(`{}`)}
	}
})

// waitRunner keeps "wait" jobs queued: it never starts them.
type waitRunner struct{ jobs.Runner }

func (w waitRunner) Run(ctx context.Context, j jobs.Job, body []byte, start func() bool) jobs.Outcome {
	if j.Model == "wait" {
		return jobs.Outcome{Err: errors.New("no capacity"), Retryable: true, RetryAfter: time.Hour}
	}
	return w.Runner.Run(ctx, j, body, start)
}

func ids(js []jobs.Job) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.ID
	}
	return out
}

func list(t *testing.T, s *jobs.Service, key string, q jobs.JobQuery) jobs.JobPage {
	t.Helper()
	p, err := s.ListJobs(t.Context(), key, q)
	if err != nil {
		t.Fatalf("ListJobs(%s, %+v): %v", key, q, err)
	}
	if n := len(p.Data); n > 0 && (p.FirstID == nil || *p.FirstID != p.Data[0].ID || *p.LastID != p.Data[n-1].ID) {
		t.Fatalf("first_id/last_id do not match the page")
	}
	return p
}

// Pagination both ways over several pages, newest first, and key
// isolation: key B never sees key A's jobs, whatever the cursor.
func TestListJobsPagesAndKeys(t *testing.T) {
	st := newStore(t)
	s := open(t, st.js, okRunner, jobs.Options{}) // not running: the jobs stay queued
	var a, b []string
	for i := range 7 {
		a = append(a, mustSubmit(t, s, sub("team-a")).ID)
		if i < 3 {
			b = append(b, mustSubmit(t, s, sub("team-b")).ID)
		}
	}
	for _, x := range [][]string{a, b} { // newest first: by id (ids of one millisecond sort randomly)
		slices.Sort(x)
		slices.Reverse(x)
	}
	var got []string
	q := jobs.JobQuery{Limit: 3}
	var pages []jobs.JobPage
	for {
		p := list(t, s, "team-a", q)
		pages = append(pages, p)
		got = append(got, ids(p.Data)...)
		if !p.HasMore {
			break
		}
		q.AfterID = *p.LastID
	}
	if !slices.Equal(got, a) || len(pages) != 3 {
		t.Fatalf("forward pages = %v (%d pages); want %v in 3", got, len(pages), a)
	}
	// Back from the last page: before_id gives the pages again.
	for i := len(pages) - 1; i > 0; i-- {
		p := list(t, s, "team-a", jobs.JobQuery{Limit: 3, BeforeID: *pages[i].FirstID})
		if !slices.Equal(ids(p.Data), ids(pages[i-1].Data)) || p.HasMore != (i-1 > 0) {
			t.Fatalf("before %s = %v, has_more %v; want %v", *pages[i].FirstID, ids(p.Data), p.HasMore, ids(pages[i-1].Data))
		}
	}
	if p := list(t, s, "team-a", jobs.JobQuery{BeforeID: a[0]}); len(p.Data) != 0 || p.HasMore || p.FirstID != nil {
		t.Errorf("before the newest = %+v; want an empty page", p)
	}
	// Key B: only its own jobs, with any cursor, A's ids included.
	cursors := append([]jobs.JobQuery{{}}, jobs.JobQuery{AfterID: a[0]}, jobs.JobQuery{BeforeID: a[6]},
		jobs.JobQuery{AfterID: jobs.NewID(time.Now().Add(time.Hour))}, jobs.JobQuery{BeforeID: jobs.NewID(time.Time{})})
	for _, q := range cursors {
		p := list(t, s, "team-b", q)
		for _, id := range ids(p.Data) {
			if !slices.Contains(b, id) {
				t.Fatalf("team-b listing %+v holds %s, not its job", q, id)
			}
		}
	}
	if p := list(t, s, "team-b", jobs.JobQuery{}); !slices.Equal(ids(p.Data), b) {
		t.Errorf("team-b = %v; want %v", ids(p.Data), b)
	}
	if p := list(t, s, "team-c", jobs.JobQuery{}); len(p.Data) != 0 || p.Data == nil {
		t.Errorf("unknown key = %+v; want an empty data array", p)
	}
	if _, err := s.ListJobs(t.Context(), "team-a", jobs.JobQuery{AfterID: a[1], BeforeID: a[0]}); !errors.Is(err, jobs.ErrInvalid) {
		t.Errorf("both cursors: %v; want ErrInvalid", err)
	}
}

// Every filter: status (each status), lane, created_after, and together.
func TestListJobsFilters(t *testing.T) {
	st := newStore(t)
	var now atomic.Pointer[time.Time]
	t0 := time.Now().UTC()
	now.Store(&t0)
	clock := func() time.Time { return *now.Load() }
	s := start(t, st.js, waitRunner{byModel}, jobs.Options{Now: clock,
		Lanes: map[string]time.Duration{"batch": 24 * time.Hour, "standard": 24 * time.Hour}})
	submit := func(model, lane string) jobs.Job {
		next := now.Load().Add(time.Millisecond) // ids of one millisecond sort randomly
		now.Store(&next)
		x := sub("team-a")
		x.Model, x.Lane = model, lane
		return mustSubmit(t, s, x)
	}
	ok := submit("ok", "batch")
	bad := submit("bad", "standard")
	hang := submit("hang", "batch")
	canceled := submit("wait", "standard")
	t1 := t0.Add(time.Hour)
	now.Store(&t1)
	queued := submit("wait", "batch")
	waitJob(t, s.Service, "team-a", ok.ID, status(jobs.StatusSucceeded))
	waitJob(t, s.Service, "team-a", bad.ID, status(jobs.StatusFailed))
	waitJob(t, s.Service, "team-a", hang.ID, status(jobs.StatusRunning))
	if _, err := s.Cancel(t.Context(), "team-a", canceled.ID); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		q    jobs.JobQuery
		want []jobs.Job // newest first
	}{
		{"all", jobs.JobQuery{}, []jobs.Job{queued, canceled, hang, bad, ok}},
		{"queued", jobs.JobQuery{Status: jobs.StatusQueued}, []jobs.Job{queued}},
		{"running", jobs.JobQuery{Status: jobs.StatusRunning}, []jobs.Job{hang}},
		{"succeeded", jobs.JobQuery{Status: jobs.StatusSucceeded}, []jobs.Job{ok}},
		{"failed", jobs.JobQuery{Status: jobs.StatusFailed}, []jobs.Job{bad}},
		{"canceled", jobs.JobQuery{Status: jobs.StatusCanceled}, []jobs.Job{canceled}},
		{"lane", jobs.JobQuery{Lane: "standard"}, []jobs.Job{canceled, bad}},
		{"unknown lane", jobs.JobQuery{Lane: "nope"}, nil},
		{"created_after", jobs.JobQuery{CreatedAfter: t0.Add(30 * time.Minute)}, []jobs.Job{queued}},
		{"created_after, exactly a creation time", jobs.JobQuery{CreatedAfter: canceled.CreatedAt}, []jobs.Job{queued}},
		{"created_after before all", jobs.JobQuery{CreatedAfter: t0.Add(-time.Second)}, []jobs.Job{queued, canceled, hang, bad, ok}},
		{"lane and status", jobs.JobQuery{Lane: "batch", Status: jobs.StatusSucceeded}, []jobs.Job{ok}},
		{"lane and a page", jobs.JobQuery{Lane: "batch", Limit: 1, AfterID: queued.ID}, []jobs.Job{hang}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := list(t, s.Service, "team-a", tc.q)
			if !slices.Equal(ids(p.Data), ids(tc.want)) {
				t.Errorf("ids = %v; want %v", ids(p.Data), ids(tc.want))
			}
		})
	}
	if p := list(t, s.Service, "team-a", jobs.JobQuery{Status: jobs.StatusSucceeded}); p.Data[0].Result == nil {
		t.Errorf("listed job has no result: %+v", p.Data[0])
	}
}

// A job past its expires_at leaves the list (injected clock), and once
// the bucket's TTL removes its record, its index entry goes too (real
// TTL).
func TestListJobsExpiry(t *testing.T) {
	st := newStore(t)
	var now atomic.Pointer[time.Time]
	t0 := time.Now()
	now.Store(&t0)
	clock := func() time.Time { return *now.Load() }
	s := start(t, st.js, okRunner, jobs.Options{ResultTTL: time.Hour, Now: clock})
	j := mustSubmit(t, s, sub("team-a"))
	waitJob(t, s.Service, "team-a", j.ID, status(jobs.StatusSucceeded))
	if p := list(t, s.Service, "team-a", jobs.JobQuery{}); len(p.Data) != 1 {
		t.Fatalf("before expiry: %v", ids(p.Data))
	}
	later := t0.Add(61 * time.Minute)
	now.Store(&later)
	if p := list(t, s.Service, "team-a", jobs.JobQuery{}); len(p.Data) != 0 {
		t.Fatalf("after expires_at: %v; want none", ids(p.Data))
	}

	st2 := newStore(t)
	s2 := start(t, st2.js, okRunner, jobs.Options{ResultTTL: time.Second})
	j2 := mustSubmit(t, s2, sub("team-a"))
	waitJob(t, s2.Service, "team-a", j2.ID, status(jobs.StatusSucceeded))
	kv, err := st2.js.KeyValue(t.Context(), jobs.StateBucket)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, "record and index entry expired", func() bool {
		keys, err := kv.ListKeysFiltered(t.Context(), "k.>")
		if err != nil {
			return false
		}
		n := 0
		for range keys.Keys() {
			n++
		}
		return n == 0 && len(list(t, s2.Service, "team-a", jobs.JobQuery{}).Data) == 0
	})
}

// Many concurrent submissions are all listed once; a limit above
// MaxListLimit is cut to it.
func TestListJobsConcurrentAndCap(t *testing.T) {
	st := newStore(t)
	s := open(t, st.js, okRunner, jobs.Options{})
	const n = jobs.MaxListLimit + 10
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= n {
				if _, _, err := s.Submit(context.Background(), sub("team-a")); err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	p := list(t, s, "team-a", jobs.JobQuery{Limit: 1_000_000})
	if len(p.Data) != jobs.MaxListLimit || !p.HasMore {
		t.Fatalf("huge limit: %d jobs, has_more %v; want %d and more", len(p.Data), p.HasMore, jobs.MaxListLimit)
	}
	rest := list(t, s, "team-a", jobs.JobQuery{Limit: 100, AfterID: *p.LastID})
	all := append(ids(p.Data), ids(rest.Data)...)
	if len(rest.Data) != 10 || rest.HasMore || len(all) != n {
		t.Fatalf("rest: %d, has_more %v; want 10 and no more", len(rest.Data), rest.HasMore)
	}
	if !slices.IsSortedFunc(all, func(a, b string) int { return strings.Compare(b, a) }) || len(slices.Compact(slices.Clone(all))) != n {
		t.Fatalf("listing is not strictly newest first")
	}
	if d := list(t, s, "team-a", jobs.JobQuery{}); len(d.Data) != jobs.DefaultListLimit {
		t.Errorf("default page: %d; want %d", len(d.Data), jobs.DefaultListLimit)
	}
}
