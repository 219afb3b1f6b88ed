package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/simupstream"
)

// Several relays on one JetStream cluster, as real processes: three relays
// whose embedded servers form the cluster, and three relays on a cluster
// of three nats-server processes. A relay (or a NATS node) is killed with
// SIGKILL mid-run; every job answered 202 must finish exactly once from
// the caller's view, and no job answered an error may run.

// markedUpstream is a simulated Anthropic upstream that records the calls
// per job marker (the message content), so a test can tell which
// submissions reached the provider, how often, and from which relay
// (relay i's provider base URL is the server's URL plus "/r<i>").
type markedUpstream struct {
	*httptest.Server
	mu    sync.Mutex
	calls map[string][]*upCall
}

// upCall is one upstream call: the relay that made it, when it started,
// whether it ended and whether it completed (the relay read the answer).
type upCall struct {
	relay            string
	start            time.Time
	ended, completed bool
}

func newMarkedUpstream(t *testing.T, latency time.Duration) *markedUpstream {
	t.Helper()
	sim, err := simupstream.Start(context.Background(), "127.0.0.1:0", simupstream.Options{Latency: latency})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	u := &markedUpstream{calls: map[string][]*upCall{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		relay, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		c := &upCall{relay: relay, start: time.Now()}
		if json.Unmarshal(body, &req) == nil && len(req.Messages) > 0 {
			u.mu.Lock()
			u.calls[req.Messages[0].Content] = append(u.calls[req.Messages[0].Content], c)
			u.mu.Unlock()
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.URL.Path = "/" + rest
		sim.Handler().ServeHTTP(w, r)
		u.mu.Lock()
		c.ended, c.completed = true, r.Context().Err() == nil
		u.mu.Unlock()
	}))
	t.Cleanup(u.Close)
	return u
}

// callsOf returns how often marker reached the upstream.
func (u *markedUpstream) callsOf(marker string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.calls[marker])
}

// inFlight returns the job markers ("job-...") whose call from relay
// ("r<i>") has not ended.
func (u *markedUpstream) inFlight(relay string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for marker, calls := range u.calls {
		if !strings.HasPrefix(marker, "job-") {
			continue // a synchronous request
		}
		for _, c := range calls {
			if c.relay == relay && !c.ended {
				out = append(out, marker)
				break
			}
		}
	}
	return out
}

// callsSince returns the start times of marker's calls from relays other
// than relay started at or after t, how many of those completed, and
// whether relay's own call completed (its answer was written before
// relay died).
func (u *markedUpstream) callsSince(marker, relay string, t time.Time) (later []time.Time, completed int, own bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.calls[marker] {
		switch {
		case c.relay == relay:
			own = own || c.completed
		case !c.start.Before(t):
			later = append(later, c.start)
			if c.completed {
				completed++
			}
		}
	}
	return later, completed, own
}

// clusterRelay is one relay of a cluster test.
type clusterRelay struct {
	*jobsRelay
	p *relayProc
}

// simLimits are the limits of a cluster test's provider sim; 0
// means none.
type simLimits struct {
	conc int // max_concurrency
	rpm  int
}

// writeClusterConfig writes a relay configuration for a cluster test: the
// nats section natsYAML, a provider on upstream with limits lim, the
// observer user on the embedded client port, result_ttl ttl.
func writeClusterConfig(t *testing.T, r *jobsRelay, upstream, natsYAML string, lim simLimits, ttl string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nshutdown_grace: 5s\n", r.addr)
	fmt.Fprintf(&b, "nats: %s\n", natsYAML)
	fmt.Fprintf(&b, "providers:\n  - name: sim\n    type: anthropic\n    base_url: %s\n    api_key: %s\n", upstream, canaryUpstream)
	if lim.conc > 0 {
		fmt.Fprintf(&b, "    max_concurrency: %d\n", lim.conc)
	}
	if lim.rpm > 0 {
		fmt.Fprintf(&b, "    rpm: %d\n", lim.rpm)
	}
	b.WriteString("routes:\n  - model: claude-sonnet\n    targets:\n      - {provider: sim, model: claude-sonnet-4-5}\n")
	fmt.Fprintf(&b, "keys:\n  - name: key0\n    key: %s\n", canaryKey)
	fmt.Fprintf(&b, "callbacks: {signing_secret: %q, allow_private_networks: true}\n", r.secret)
	fmt.Fprintf(&b, "jobs: {result_ttl: %s}\nlog: {level: info}\n", ttl)
	if err := os.WriteFile(filepath.Join(r.dir, "relay.yaml"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startAll starts the relays at once (a cluster needs a majority of its
// nodes before any is ready) and waits until each is ready.
func startAll(t *testing.T, rs []*clusterRelay) {
	t.Helper()
	for _, r := range rs {
		r.p = newProc(t, relayOpts{}, r.dir)
		r.p.addr = r.addr
		r.p.run()
	}
	for _, r := range rs {
		waitReadyFor(r.p, 90*time.Second)
	}
}

// waitShares waits until every relay holds a share of at least one of
// provider sim's max_concurrency.
func waitShares(t *testing.T, rs []*clusterRelay) {
	t.Helper()
	natstest.Eventually(t, 60*time.Second, "every relay holding a concurrency share", func() bool {
		for _, r := range rs {
			if r.p.metric(`relay_lease_share{limit="max_concurrency",provider="sim"}`) < 1 {
				return false
			}
		}
		return true
	})
}

// waitReadyFor polls /readyz until 200, for at most d.
func waitReadyFor(p *relayProc, d time.Duration) {
	p.t.Helper()
	natstest.Eventually(p.t, d, "relay ready", func() bool {
		select {
		case <-p.done:
			p.t.Fatalf("relay exited before ready: %v", p.waitErr)
		default:
		}
		code, _ := p.get(p.addr, "/readyz")
		return code == http.StatusOK
	})
}

// newClusterRelays returns n relays (configured by writeClusterConfig with
// natsYAML(i, r)) sharing one marked upstream and one callback receiver.
func newClusterRelays(t *testing.T, n int, natsYAML func(i int, r *jobsRelay) string) ([]*clusterRelay, *markedUpstream) {
	t.Helper()
	up := newMarkedUpstream(t, 300*time.Millisecond)
	// Each relay calls its own path, so the upstream tells the relays apart.
	return clusterRelaysOn(t, n, func(i int) string { return fmt.Sprintf("%s/r%d", up.URL, i) }, simLimits{conc: 8}, natsYAML), up
}

// clusterRelaysOn returns n relays (configured by writeClusterConfig with
// natsYAML(i, r)) whose provider sim is upstream(i) with limits lim.
func clusterRelaysOn(t *testing.T, n int, upstream func(i int) string, lim simLimits, natsYAML func(i int, r *jobsRelay) string) []*clusterRelay {
	t.Helper()
	rs := make([]*clusterRelay, n)
	for i := range rs {
		r := &jobsRelay{t: t, dir: t.TempDir(), addr: freePort(t), natsAddr: freePort(t), secret: "whsec_" + strings.Repeat("QUJD", 8)}
		writeClusterConfig(t, r, upstream(i), natsYAML(i, r), lim, "1h")
		rs[i] = &clusterRelay{jobsRelay: r}
	}
	return rs
}

// outcome is what a submission was answered.
type outcome struct {
	marker string
	code   int // 0: no answer (the relay died mid-request)
	id     string
}

// chaosRun submits n jobs spread over the live relays from 8 clients and
// sends synchronous requests meanwhile; fault is called once when a third
// of the jobs were answered; it calls markDead with the index of the
// relay it is about to kill, if any (no request is sent to it from then
// on, and one in flight to it may fail). It returns every submission's
// outcome and the synchronous answers that were not 200.
func chaosRun(t *testing.T, rs []*clusterRelay, up *markedUpstream, rc *receiver, n int, fault func(markDead func(int))) ([]outcome, []string) {
	t.Helper()
	var dead atomic.Int32
	dead.Store(-1)
	outs := make([]outcome, n)
	var next, answered atomic.Int32
	var faulted sync.Once
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				r := rs[i%len(rs)]
				if int(dead.Load()) == i%len(rs) {
					r = rs[(i+1)%len(rs)]
				}
				marker := fmt.Sprintf("job-%04d", i)
				code, id := submitMarked(r.jobsRelay, rc.cbURL(), marker)
				outs[i] = outcome{marker: marker, code: code, id: id}
				if answered.Add(1) >= int32(n/3) {
					faulted.Do(func() { fault(func(i int) { dead.Store(int32(i)) }) })
				}
			}
		})
	}
	var syncBad []string
	var smu sync.Mutex
	stop := make(chan struct{})
	var sg sync.WaitGroup
	sg.Go(func() {
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			i := k % len(rs)
			if int(dead.Load()) == i {
				continue
			}
			if code := rs[i].p.messageAsync(); code != http.StatusOK && int(dead.Load()) != i {
				smu.Lock()
				syncBad = append(syncBad, fmt.Sprintf("relay %d: %d", i, code))
				smu.Unlock()
			}
		}
	})
	wg.Wait()
	close(stop)
	sg.Wait()
	return outs, syncBad
}

// submitMarked posts a Messages job whose content is marker; code 0
// means the relay did not answer.
func submitMarked(r *jobsRelay, cb, marker string) (int, string) {
	reqBody := fmt.Sprintf(`{"endpoint":"/v1/messages","callback_url":%q,"body":{"model":"claude-sonnet","max_tokens":8,`+
		`"messages":[{"role":"user","content":%q}]}}`, cb, marker)
	req, err := http.NewRequest(http.MethodPost, "http://"+r.addr+"/v1/jobs", strings.NewReader(reqBody))
	if err != nil {
		return 0, ""
	}
	req.Header.Set("x-api-key", canaryKey)
	req.Header.Set("content-type", "application/json")
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var j jobView
	if resp.StatusCode == http.StatusAccepted && json.Unmarshal(b, &j) != nil {
		return 0, ""
	}
	return resp.StatusCode, j.ID
}

// checkExactlyOnce asserts the caller's view after a chaos run: every job
// answered 202 succeeded, has one result message in RELAY_RESULTS and
// callbacks carrying its own id as webhook-id; no job answered an error
// reached the upstream. live is a relay that is up, js a JetStream handle.
func checkExactlyOnce(t *testing.T, live *jobsRelay, js jetstream.JetStream, up *markedUpstream, rc *receiver, outs []outcome) {
	t.Helper()
	var accepted, refused, unanswered int
	for _, o := range outs {
		switch {
		case o.code == http.StatusAccepted:
			accepted++
		case o.code == 0:
			unanswered++
		default:
			refused++
		}
	}
	t.Logf("submissions: %d accepted, %d answered an error, %d unanswered (relay killed mid-request)", accepted, refused, unanswered)
	if accepted < len(outs)/2 {
		t.Fatalf("only %d of %d submissions accepted", accepted, len(outs))
	}
	var stuck string
	deadline := time.Now().Add(180 * time.Second)
	for done := false; !done; {
		done = true
		for _, o := range outs {
			if o.code != http.StatusAccepted {
				continue
			}
			j, ok := live.job(o.id)
			if !ok || j.Status != "succeeded" || j.Callback == nil || j.Callback.Outcome != "delivered" {
				stuck, done = fmt.Sprintf("%s (%s): found %v, %+v", o.id, o.marker, ok, j), false
				break
			}
		}
		if !done && time.Now().After(deadline) {
			t.Fatalf("not every accepted job succeeded with its callback delivered within 180 s; first not done: %s", stuck)
		}
		if !done {
			time.Sleep(200 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, jobs.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	perID := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		perID[subj[strings.LastIndex(subj, ".")+1:]] += n
	}
	cbs := map[string]int{}
	for _, d := range rc.deliveries() {
		var body struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(d.body, &body); err != nil || body.ID != d.id {
			t.Errorf("callback with webhook-id %q carries job %q", d.id, body.ID)
		}
		cbs[d.id]++
	}
	for _, o := range outs {
		switch {
		case o.code == http.StatusAccepted:
			if perID[o.id] != 1 {
				t.Errorf("job %s: %d result messages; want 1", o.id, perID[o.id])
			}
			if cbs[o.id] == 0 {
				t.Errorf("job %s: no callback", o.id)
			}
		case o.code != 0:
			if n := up.callsOf(o.marker); n != 0 {
				t.Errorf("submission %s answered %d but reached the upstream %d times", o.marker, o.code, n)
			}
		}
	}
}

// observer connects to url as the observer user until the test ends.
func observer(t *testing.T, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("observer connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// embeddedClusterNATS returns the nats section of relay i of an embedded
// cluster whose route addresses are routes.
func embeddedClusterNATS(routes []string) func(i int, r *jobsRelay) string {
	return func(i int, r *jobsRelay) string {
		return fmt.Sprintf("{listen: %s, store_dir: %s, server_name: relay%d, cluster: {name: relays, listen: %s, routes: [%s]}, "+
			"users: [{user: observer, password: %s, publish: [\">\"], subscribe: [\">\"]}]}",
			r.natsAddr, filepath.Join(r.dir, "nats"), i+1, routes[i], strings.Join(routes, ", "), observerPassword)
	}
}

// TestClusterEmbeddedKillRelay: three relays whose embedded servers form a
// JetStream cluster (R3); one is killed with SIGKILL mid-run.
func TestClusterEmbeddedKillRelay(t *testing.T) {
	t.Parallel()
	routes := []string{freePort(t), freePort(t), freePort(t)}
	rs, up := newClusterRelays(t, 3, embeddedClusterNATS(routes))
	rc := newReceiver(t, func(string, int) int { return http.StatusOK })
	startAll(t, rs)
	js := observer(t, "nats://"+rs[0].natsAddr, nats.UserInfo("observer", observerPassword))
	// Every stream the relays made is R3, the lanes' memory mirror too:
	// an R1 stream dies with its node and can be neither read nor made
	// again while its assignment lives on, so readiness never came back.
	names := js.StreamNames(t.Context())
	n := 0
	for name := range names.Name() {
		n++
		if st, err := js.Stream(t.Context(), name); err != nil || st.CachedInfo().Config.Replicas != 3 {
			t.Errorf("stream %s: %v; want 3 replicas", name, err)
		}
	}
	if err := names.Err(); err != nil || n == 0 {
		t.Fatalf("listing streams: %v (%d found)", err, n)
	}
	if _, err := js.Stream(t.Context(), lanes.StreamName); err != nil {
		t.Fatalf("%s: %v", lanes.StreamName, err)
	}
	// Relay 3 must be running jobs when it is killed: wait until every
	// relay holds a share of the provider's concurrency (a relay joining
	// gets one only once the first gives some back), or the first jobs
	// all go to the other two.
	waitShares(t, rs)
	var killedAt time.Time
	var held []string // jobs relay 3 was calling the upstream for when killed
	outs, syncBad := chaosRun(t, rs, up, rc, 240, func(markDead func(int)) {
		natstest.Eventually(t, 30*time.Second, "relay 3 calling the upstream", func() bool { return len(up.inFlight("r2")) > 0 })
		markDead(2)
		t.Logf("killing relay 3, leader of %v", ledBy(t, js, "relay3"))
		held = up.inFlight("r2")
		rs[2].p.kill()
		killedAt = time.Now()
	})
	if len(syncBad) > 0 {
		t.Errorf("synchronous requests to live relays failed: %v", syncBad)
	}
	checkExactlyOnce(t, rs[0].jobsRelay, js, up, rc, outs)
	t.Logf("all accepted jobs done %v after the kill", time.Since(killedAt).Round(time.Millisecond))

	// Every job the dead relay held was run again by a survivor, once
	// to completion; the survivors counted the repeated runs. (The bench
	// measures how soon: here only a generous bound.) A job whose answer
	// the upstream wrote just before the kill may have been recorded by
	// the dead relay: then nobody runs it again.
	var recovery time.Duration
	rerun := 0
	for _, marker := range held {
		later, completed, own := up.callsSince(marker, "r2", killedAt)
		switch {
		case len(later) == 0 && own:
			t.Logf("job %s: answered to the killed relay just before the kill", marker)
		case len(later) == 0:
			t.Errorf("job %s, held by the killed relay, was not run again by a survivor", marker)
		case completed != 1:
			t.Errorf("job %s, held by the killed relay: %d completed upstream calls on the survivors; want exactly 1", marker, completed)
		default:
			rerun++
			recovery = max(recovery, later[0].Sub(killedAt))
		}
	}
	if recovery > 60*time.Second {
		t.Errorf("the dead relay's jobs started elsewhere %v after the kill; want well within a minute", recovery)
	}
	repeated := rs[0].p.metric("relay_jobs_repeated_runs_total") + rs[1].p.metric("relay_jobs_repeated_runs_total")
	if repeated < float64(rerun) {
		t.Errorf("relay_jobs_repeated_runs_total on the survivors = %v; want at least the %d jobs of the dead relay they ran again", repeated, rerun)
	}
	t.Logf("the killed relay held %d jobs upstream; all started on a survivor within %v; repeated runs counted: %v",
		len(held), recovery.Round(time.Millisecond), repeated)
}

// ledBy returns which of the assets a job's takeover needs have their
// leader on server (a node killed with them makes JetStream elect new
// leaders, which takes 4 to 9 s: the recovery waits for it).
func ledBy(t *testing.T, js jetstream.JetStream, server string) []string {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	var out []string
	for _, name := range []string{jobs.JobsStream, "KV_" + jobs.StateBucket, "KV_" + jobs.ExecutorsBucket} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			continue
		}
		if ci := st.CachedInfo().Cluster; ci != nil && ci.Leader == server {
			out = append(out, name)
		}
		if name != jobs.JobsStream {
			continue
		}
		if c, err := st.Consumer(ctx, jobs.ExecutorConsumer); err == nil && c.CachedInfo().Cluster != nil && c.CachedInfo().Cluster.Leader == server {
			out = append(out, "consumer "+jobs.ExecutorConsumer)
		}
	}
	return out
}

// TestClusterKillNATSNode: three relays on a cluster of three nats-server
// processes (R3 through nats.replicas); one node is killed with SIGKILL
// mid-run and started again later.
func TestClusterKillNATSNode(t *testing.T) {
	t.Parallel()
	nodes := natstest.ProcessCluster(t, 3)
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.URL()
	}
	seeds := strings.Join(urls, ",")
	rs, up := newClusterRelays(t, 3, func(int, *jobsRelay) string { return fmt.Sprintf("{url: %q, replicas: 3}", seeds) })
	rc := newReceiver(t, func(string, int) int { return http.StatusOK })
	startAll(t, rs)
	js := observer(t, seeds)
	outs, syncBad := chaosRun(t, rs, up, rc, 240, func(func(int)) {
		// The node that leads RELAY_JOBS: the worst one to lose.
		victim := nodes[0]
		if st, err := js.Stream(t.Context(), jobs.JobsStream); err == nil && st.CachedInfo().Cluster != nil {
			for _, n := range nodes {
				if n.Name == st.CachedInfo().Cluster.Leader {
					victim = n
				}
			}
		}
		victim.Kill()
		time.AfterFunc(10*time.Second, victim.Start)
	})
	if len(syncBad) > 0 {
		t.Errorf("synchronous requests failed: %v", syncBad)
	}
	checkExactlyOnce(t, rs[0].jobsRelay, js, up, rc, outs)
}

// TestClusterResultTTLConverges: two relays with different result_ttl on
// one NATS server. The shared assets take the longer retention whichever
// relay starts first, a restart of the shorter one never shortens it, and
// the shorter one reports the drift (relay_nats_asset_drift and a log).
func TestClusterResultTTLConverges(t *testing.T) {
	t.Parallel()
	ns := startNATSServer(t)
	url := "nats://" + ns.addr
	rs, _ := newClusterRelays(t, 2, func(int, *jobsRelay) string { return fmt.Sprintf("{url: %q}", url) })
	short, long := rs[0], rs[1]
	writeClusterConfig(t, short.jobsRelay, "http://127.0.0.1:1", fmt.Sprintf("{url: %q}", url), simLimits{conc: 1}, "1h")
	writeClusterConfig(t, long.jobsRelay, "http://127.0.0.1:1", fmt.Sprintf("{url: %q}", url), simLimits{conc: 1}, "2h")
	js := observer(t, url)
	maxAge := func(stream string) time.Duration {
		st, err := js.Stream(t.Context(), stream)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.MaxAge
	}
	startAll(t, []*clusterRelay{short})
	if got := maxAge(jobs.ResultsStream); got != time.Hour {
		t.Fatalf("RELAY_RESULTS max age %v after the 1h relay; want 1h", got)
	}
	startAll(t, []*clusterRelay{long})
	short.p.stopClean()
	startAll(t, []*clusterRelay{short})
	for _, s := range []string{jobs.ResultsStream, "KV_" + jobs.StateBucket, "KV_" + jobs.IdemBucket} {
		if got := maxAge(s); got != 2*time.Hour {
			t.Errorf("%s max age %v; want the longer 2h kept", s, got)
		}
	}
	if v := short.p.metric(`relay_nats_asset_drift{asset="RELAY_RESULTS"}`); v != 1 {
		t.Errorf("1h relay: relay_nats_asset_drift{RELAY_RESULTS} = %v; want 1", v)
	}
	if v := long.p.metric(`relay_nats_asset_drift{asset="RELAY_RESULTS"}`); v != 0 {
		t.Errorf("2h relay: relay_nats_asset_drift{RELAY_RESULTS} = %v; want 0", v)
	}
	if short.p.findLog(map[string]string{"stream": jobs.ResultsStream}) == nil {
		t.Error("the 1h relay logged nothing about RELAY_RESULTS")
	}
}
