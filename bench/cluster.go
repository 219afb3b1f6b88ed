package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/workers/simupstream"
)

// The cluster scenario: three relays whose embedded servers form one
// JetStream cluster (R3), a simulated upstream in the bench process that
// counts the calls of every job (by a marker in its content), and a
// callback receiver. It measures submit throughput of one relay against
// three, then runs jobs while one relay is killed with SIGKILL and, once
// it is back, another (a node of the cluster with it).

// clusterOptions are the scenario's flags.
type clusterOptions struct {
	common
	jobs         int           // jobs of each throughput phase
	chaos        int           // jobs of the fault phase
	clients      int           // concurrent submitters
	latency      time.Duration // upstream time to first byte (throughput phases)
	faultLatency time.Duration // upstream time to first byte (fault phase)
}

// upCall is one upstream call of a job: which relay made it (the path
// prefix of its provider's base URL), when it started and ended, and
// whether it completed (the relay read the whole answer).
type upCall struct {
	relay      string
	start, end time.Time
	completed  bool
}

// markedSim is the in-process upstream: per job marker (its content),
// every call. Each relay's provider base URL is the sim's URL plus
// "/<relay name>", so a call tells which relay made it.
type markedSim struct {
	fast, slow *simupstream.Server
	slowOn     atomic.Bool // the fault phase: answers take faultLatency
	mu         sync.Mutex
	calls      map[string][]*upCall
}

func newMarkedSim(o clusterOptions) *markedSim {
	return &markedSim{fast: simupstream.New(simupstream.Options{Latency: o.latency}),
		slow: simupstream.New(simupstream.Options{Latency: o.faultLatency}), calls: map[string][]*upCall{}}
}

func (m *markedSim) Close() {
	m.fast.Close()
	m.slow.Close()
}

func (m *markedSim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	marker := ""
	if json.Unmarshal(body, &req) == nil && len(req.Messages) > 0 {
		marker = req.Messages[0].Content
	}
	relay, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	c := &upCall{relay: relay, start: time.Now()}
	m.mu.Lock()
	m.calls[marker] = append(m.calls[marker], c)
	m.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.URL.Path = "/" + rest
	sim := m.fast
	if m.slowOn.Load() {
		sim = m.slow
	}
	sim.Handler().ServeHTTP(w, r)
	m.mu.Lock()
	c.end, c.completed = time.Now(), r.Context().Err() == nil
	m.mu.Unlock()
}

// inFlight returns the markers whose call from relay has not ended.
func (m *markedSim) inFlight(relay string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for marker, calls := range m.calls {
		for _, c := range calls {
			if c.relay == relay && c.end.IsZero() {
				out = append(out, marker)
				break
			}
		}
	}
	return out
}

// recovery returns, of the jobs in held (in flight upstream on relay
// when it was killed at kill), how many were called again after the kill
// (by another relay, or by relay once restarted), how many ended on relay anyway (their answer had arrived), and
// the longest time from kill to such a call's start: the recovery time.
func (m *markedSim) recovery(held []string, relay string, kill time.Time) (restarted, finishedThere int, first, median, longest time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ds []time.Duration
	for _, marker := range held {
		again := false
		for _, c := range m.calls[marker] {
			switch {
			case c.relay == relay && c.start.Before(kill) && c.completed:
				finishedThere++
			case !c.start.Before(kill) && !again: // by a survivor or the restarted relay
				again = true
				restarted++
				ds = append(ds, c.start.Sub(kill))
			}
		}
	}
	if len(ds) == 0 {
		return restarted, finishedThere, 0, 0, 0
	}
	slices.Sort(ds)
	return restarted, finishedThere, ds[0], ds[len(ds)/2], ds[len(ds)-1]
}

// clusterNode is one relay of the scenario.
type clusterNode struct {
	name, addr, natsAddr, route, cfgPath string
	c                                    *child
}

// clusterReport is the scenario's result.
type clusterReport struct {
	Jobs, Chaos, Clients           int
	OneRelayRate, ThreeRate        float64 // accepted submissions per second
	Accepted, AnsweredError        int
	Unanswered                     int
	Lost                           int           // accepted, not succeeded by the end
	ErrorButRan                    int           // answered an error, reached the upstream
	RanTwice                       int           // two completed upstream calls
	Twice                          []string      // the first ten of those, with their calls
	RepeatedCalls                  int           // jobs called upstream more than once
	ResultDuplicates               int           // jobs with more than one RELAY_RESULTS message
	Recovery1, Recovery2           time.Duration // kill → the last held job called again elsewhere
	First1, First2                 time.Duration // kill → the first one
	Leaders1, Leaders2             []string      // the job assets whose leader was the killed node
	Median1, Median2               time.Duration
	Held1, Held2                   int // jobs in flight upstream on the killed relay at the kill
	Restarted1, Restarted2         int // of those, called again by another relay
	FinishedThere1, FinishedThere2 int // of those, answered to the killed relay before it died
	Kill1At, Kill2At               time.Duration
	CallbackIDsOK                  bool
	DeliveredCallbacks, Wanted     int
}

func clusterMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o clusterOptions
	fs := newFlagSet("cluster", stderr, &o.common)
	fs.IntVar(&o.jobs, "jobs", 1500, "jobs submitted in each throughput phase")
	fs.IntVar(&o.chaos, "chaos", 600, "jobs submitted in the fault phase")
	fs.IntVar(&o.clients, "clients", 32, "concurrent submitters")
	fs.DurationVar(&o.latency, "latency", 300*time.Millisecond, "upstream time to first byte (throughput phases)")
	fs.DurationVar(&o.faultLatency, "fault-latency", 3*time.Second, "upstream time to first byte in the fault phase (long, so a kill finds jobs in flight)")
	if err := o.parse(fs, args); err != nil {
		return err
	}
	if o.quick && !o.set["jobs"] {
		o.jobs, o.chaos = 150, 150
	}
	l, err := newLab(o.relay)
	if err != nil {
		return err
	}
	defer l.Close()
	rep, err := runCluster(ctx, l, o, stderr)
	if err != nil {
		return err
	}
	if o.out != "" {
		if err := writeJSON(o.out, rep); err != nil {
			return err
		}
	}
	return rep.print(stdout)
}

// runCluster runs the phases.
func runCluster(ctx context.Context, l *lab, o clusterOptions, log io.Writer) (*clusterReport, error) {
	m := newMarkedSim(o)
	defer m.Close()
	up, err := serveLocal(ctx, m)
	if err != nil {
		return nil, err
	}
	cb := &cbCounter{ids: map[string]int{}}
	cbURL, err := serveLocal(ctx, cb)
	if err != nil {
		return nil, err
	}
	rep := &clusterReport{Jobs: o.jobs, Chaos: o.chaos, Clients: o.clients}

	fmt.Fprintln(log, "cluster: one relay (embedded, single node)")
	one, err := startClusterNodes(ctx, l, "one", 1, up)
	if err != nil {
		return nil, err
	}
	rep.OneRelayRate, _ = submitSpread(ctx, one, cbURL, "one", o.jobs, o.clients, nil)
	one[0].c.terminate()
	_ = one[0].c.wait(time.Now().Add(stopTimeout))

	fmt.Fprintln(log, "cluster: three relays (embedded clustering, R3)")
	nodes, err := startClusterNodes(ctx, l, "three", 3, up)
	if err != nil {
		return nil, err
	}
	rep.ThreeRate, _ = submitSpread(ctx, nodes, cbURL, "three", o.jobs, o.clients, nil)

	fmt.Fprintln(log, "cluster: fault phase")
	m.slowOn.Store(true)
	start := time.Now()
	var kill1, kill2 time.Time
	var held1, held2 []string
	dead := &atomic.Int32{}
	dead.Store(-1)
	var once1, once2 sync.Once
	var killed2 atomic.Bool
	// killBusy waits (up to 30 s) until nd has jobs in flight upstream
	// (calls that last faultLatency), then kills it and returns the
	// time and those jobs' markers.
	killBusy := func(nd *clusterNode, server string, leaders *[]string) (time.Time, []string) {
		for i := 0; i < 1500 && len(m.inFlight(nd.name)) < 3; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		*leaders = leadersOn(ctx, nodes[0].natsAddr, server)
		held := m.inFlight(nd.name)
		at := time.Now()
		_ = syscall.Kill(nd.c.PID(), syscall.SIGKILL)
		return at, held
	}
	fault := func(done int) {
		if done >= o.chaos/3 {
			once1.Do(func() {
				kill1, held1 = killBusy(nodes[2], "relay3", &rep.Leaders1)
				dead.Store(2)
				fmt.Fprintln(log, "cluster: killed relay 3")
				go func() {
					_, err := restartNode(ctx, l, nodes[2])
					if err != nil {
						fmt.Fprintln(log, "cluster: restart relay 3:", err)
						return
					}
					dead.Store(-1)
				}()
			})
		}
		if done >= 2*o.chaos/3 && dead.Load() == -1 && !kill1.IsZero() {
			once2.Do(func() {
				kill2, held2 = killBusy(nodes[1], "relay2", &rep.Leaders2)
				killed2.Store(true)
				dead.Store(1)
				fmt.Fprintln(log, "cluster: killed relay 2 (a node of the cluster)")
			})
		}
	}
	// Past o.chaos jobs, submitting goes on until the second kill (relay 3
	// must be back first, which takes long on a loaded machine).
	_, outs := submitPaced(ctx, nodes, cbURL, o.chaos, 8, dead, fault, func() bool { return !killed2.Load() })
	rep.Kill1At, rep.Kill2At = kill1.Sub(start), nonNeg(kill2, start)
	if err := finishCluster(ctx, rep, nodes[0], outs, m, cb, start); err != nil {
		return nil, err
	}
	rep.Held1, rep.Held2 = len(held1), len(held2)
	rep.Restarted1, rep.FinishedThere1, rep.First1, rep.Median1, rep.Recovery1 = m.recovery(held1, nodes[2].name, kill1)
	rep.Restarted2, rep.FinishedThere2, rep.First2, rep.Median2, rep.Recovery2 = m.recovery(held2, nodes[1].name, kill2)
	return rep, nil
}

func nonNeg(t, from time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return t.Sub(from)
}

// serveLocal serves h on a loopback port until ctx ends and returns its
// base URL.
func serveLocal(ctx context.Context, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), nil
}

// cbCounter counts callbacks per webhook-id and checks each body's id.
type cbCounter struct {
	mu  sync.Mutex
	ids map[string]int
	bad int
}

func (c *cbCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var j struct {
		ID string `json:"id"`
	}
	id := r.Header.Get("webhook-id")
	c.mu.Lock()
	if json.Unmarshal(body, &j) != nil || j.ID != id {
		c.bad++
	}
	c.ids[id]++
	c.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// clusterConcurrency is each relay's provider max_concurrency: room for
// a survivor to start a dead relay's jobs beside its own at once, so the
// recovery time measures the takeover, not a wait for capacity.
const clusterConcurrency = 256

// startClusterNodes starts n relays of the jobs configuration, each
// calling its own path of upstream; with n > 1 their embedded servers
// form one cluster.
func startClusterNodes(ctx context.Context, l *lab, prefix string, n int, upstream string) ([]*clusterNode, error) {
	return startClusterNodesWith(ctx, l, prefix, n, func(nd *clusterNode) relayConfig {
		return jobsRelayConfig(nd.addr, "", nd.natsAddr, l.path(nd.name), upstream+"/"+nd.name, clusterConcurrency, 0)
	})
}

// startClusterNodesWith starts n relays configured by mk (which sets the
// listen and NATS addresses from the node); with n > 1 their embedded
// servers form one cluster.
func startClusterNodesWith(ctx context.Context, l *lab, prefix string, n int, mk func(nd *clusterNode) relayConfig) ([]*clusterNode, error) {
	nodes := make([]*clusterNode, n)
	var routes []string
	for i := range nodes {
		nd := &clusterNode{name: fmt.Sprintf("%s-relay%d", prefix, i+1)}
		for _, p := range []*string{&nd.addr, &nd.natsAddr, &nd.route} {
			a, err := freeAddr()
			if err != nil {
				return nil, err
			}
			*p = a
		}
		routes = append(routes, nd.route)
		nodes[i] = nd
	}
	for i, nd := range nodes {
		cfg := mk(nd)
		if n > 1 {
			cfg.NATS.ServerName = fmt.Sprintf("relay%d", i+1)
			cfg.NATS.Cluster = &relayCluster{Name: prefix, Listen: nd.route, Routes: routes}
		}
		data, err := cfg.YAML()
		if err != nil {
			return nil, err
		}
		nd.cfgPath = l.path(nd.name + ".yaml")
		if err := os.WriteFile(nd.cfgPath, data, 0o600); err != nil {
			return nil, err
		}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Go(func() { nd.c, errs[i] = restartNode(ctx, l, nd) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return nodes, nil
}

// restartNode starts (again) the relay of nd and waits until it is ready.
func restartNode(ctx context.Context, l *lab, nd *clusterNode) (*child, error) {
	bin, err := l.relay(ctx)
	if err != nil {
		return nil, err
	}
	c, err := l.startWithin(ctx, clusterReadyTimeout, nd.name, nd.addr, "/readyz", syscall.SIGKILL, bin, "serve", "--config", nd.cfgPath)
	if err == nil {
		nd.c = c
	}
	return c, err
}

// submission is one job's submission.
type submission struct {
	marker, id string
	code       int
}

// submitSpread submits n jobs round-robin over nodes from clients
// submitters as fast as they go and returns the accepted rate.
func submitSpread(ctx context.Context, nodes []*clusterNode, cbURL, prefix string, n, clients int, dead *atomic.Int32) (float64, []submission) {
	outs := make([]submission, n)
	client := &http.Client{Timeout: 30 * time.Second, Transport: newTransport(clients)}
	var next, accepted atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				k := i % len(nodes)
				if dead != nil && int(dead.Load()) == k {
					k = (k + 1) % len(nodes)
				}
				outs[i] = submitMarkedJob(ctx, client, nodes[k].addr, cbURL, fmt.Sprintf("%s-%05d", prefix, i))
				if outs[i].code == http.StatusAccepted {
					accepted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(accepted.Load()) / time.Since(start).Seconds(), outs
}

// submitPaced submits n jobs from clients submitters, each pausing 50 ms
// between jobs, avoiding the node dead names, and calls fault after each
// answer with the number answered so far; past n it goes on while more
// says so (up to 3n jobs).
func submitPaced(ctx context.Context, nodes []*clusterNode, cbURL string, n, clients int, dead *atomic.Int32, fault func(int), more func() bool) (float64, []submission) {
	outs := make([]submission, 3*n)
	client := &http.Client{Timeout: 60 * time.Second, Transport: newTransport(clients)}
	var next, answered atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(outs) || i >= n && !more() {
					return
				}
				k := i % len(nodes)
				for int(dead.Load()) == k {
					k = (k + 1) % len(nodes)
				}
				outs[i] = submitMarkedJob(ctx, client, nodes[k].addr, cbURL, fmt.Sprintf("chaos-%05d", i))
				fault(int(answered.Add(1)))
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	var sent []submission
	for _, o := range outs {
		if o.marker != "" {
			sent = append(sent, o)
		}
	}
	return 0, sent
}

// submitMarkedJob posts one job whose content is marker.
func submitMarkedJob(ctx context.Context, client *http.Client, addr, cbURL, marker string) submission {
	body := fmt.Sprintf(`{"endpoint":"/v1/messages","callback_url":%q,"body":{"model":%q,"max_tokens":8,`+
		`"messages":[{"role":"user","content":%q}]}}`, cbURL+"/cb", benchModel, marker)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/jobs", strings.NewReader(body))
	if err != nil {
		return submission{marker: marker}
	}
	req.Header.Set("x-api-key", benchKey)
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return submission{marker: marker}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var j struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &j)
	return submission{marker: marker, id: j.ID, code: resp.StatusCode}
}

// finishCluster waits for the fault phase's accepted jobs to end (up to
// 3 minutes), then fills in the report from the upstream's calls, the
// callbacks and RELAY_RESULTS.
func finishCluster(ctx context.Context, rep *clusterReport, live *clusterNode, outs []submission, m *markedSim, cb *cbCounter, start time.Time) error {
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(3 * time.Minute)
	pending := map[string]bool{}
	for _, s := range outs {
		if s.code == http.StatusAccepted {
			pending[s.id] = true
		}
	}
	for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		for id := range pending {
			if jobSucceeded(ctx, client, live.addr, id) {
				delete(pending, id)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	rep.Lost = len(pending)
	results, err := resultCounts(ctx, live.natsAddr)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cb.mu.Lock()
	defer cb.mu.Unlock()
	rep.CallbackIDsOK = cb.bad == 0
	for _, s := range outs {
		switch {
		case s.code == http.StatusAccepted:
			rep.Accepted++
			rep.Wanted++
			if cb.ids[s.id] > 0 {
				rep.DeliveredCallbacks++
			}
			if results[s.id] > 1 {
				rep.ResultDuplicates++
			}
		case s.code == 0:
			rep.Unanswered++
		default:
			rep.AnsweredError++
			if len(m.calls[s.marker]) > 0 {
				rep.ErrorButRan++
			}
		}
	}
	// Every job of the run, the throughput phases' too (they may still run
	// during the fault phase).
	for marker, calls := range m.calls {
		completed := 0
		for _, c := range calls {
			if c.completed {
				completed++
			}
		}
		if completed > 1 {
			rep.RanTwice++
			if len(rep.Twice) < 10 {
				rep.Twice = append(rep.Twice, describeCalls(marker, calls, start))
			}
		}
		if len(calls) > 1 {
			rep.RepeatedCalls++
		}
	}
	return nil
}

// jobSucceeded reports whether GET /v1/jobs/{id} says succeeded.
func jobSucceeded(ctx context.Context, client *http.Client, addr, id string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/jobs/"+id, nil)
	if err != nil {
		return false
	}
	req.Header.Set("x-api-key", benchKey)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var j struct {
		Status string `json:"status"`
	}
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&j) == nil && j.Status == "succeeded"
}

// resultCounts returns the RELAY_RESULTS messages per job id, read as the
// bench's NATS user from natsAddr.
func resultCounts(ctx context.Context, natsAddr string) (map[string]uint64, error) {
	nc, err := nats.Connect("nats://"+natsAddr, nats.UserInfo(benchNATSUser, benchNATSPassword))
	if err != nil {
		return nil, fmt.Errorf("connect NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, "RELAY_RESULTS")
	if err != nil {
		return nil, fmt.Errorf("RELAY_RESULTS: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return nil, fmt.Errorf("RELAY_RESULTS info: %w", err)
	}
	out := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		out[filepath.Ext(subj)[1:]] += n
	}
	return out, nil
}

// print writes the report's table.
func (r *clusterReport) print(w io.Writer) error {
	t := newTable("measure", "value")
	t.add("submit throughput, one relay (jobs/s)", fmt.Sprintf("%.0f", r.OneRelayRate))
	t.add("submit throughput, three relays R3 (jobs/s)", fmt.Sprintf("%.0f", r.ThreeRate))
	t.add("fault phase: accepted (202)", fmt.Sprint(r.Accepted))
	t.add("fault phase: answered an error", fmt.Sprint(r.AnsweredError))
	t.add("fault phase: unanswered (relay killed mid-request)", fmt.Sprint(r.Unanswered))
	t.add("lost (accepted, not succeeded)", fmt.Sprint(r.Lost))
	t.add("answered an error but ran", fmt.Sprint(r.ErrorButRan))
	t.add("ran twice to completion", fmt.Sprint(r.RanTwice))
	for _, d := range r.Twice {
		t.add("  ran twice", d)
	}
	t.add("jobs called upstream again (dead relay's in-flight)", fmt.Sprint(r.RepeatedCalls))
	t.add("jobs with more than one result message", fmt.Sprint(r.ResultDuplicates))
	t.add("accepted jobs with a callback", fmt.Sprintf("%d / %d (webhook-id = job id: %v)", r.DeliveredCallbacks, r.Wanted, r.CallbackIDsOK))
	t.add("kill 1 (relay 3 at "+secs3(r.Kill1At)+"): jobs in flight upstream on it", held(r.Held1, r.Restarted1, r.FinishedThere1))
	t.add("kill 1: job assets led by the killed node", leaders(r.Leaders1))
	t.add("recovery after kill 1 (kill → last of them called again)", secs3(r.Recovery1))
	t.add("  first / median of them called again", secs3(r.First1)+" / "+secs3(r.Median1))
	t.add("kill 2 (relay 2 at "+secs3(r.Kill2At)+"): jobs in flight upstream on it", held(r.Held2, r.Restarted2, r.FinishedThere2))
	t.add("kill 2: job assets led by the killed node", leaders(r.Leaders2))
	t.add("recovery after kill 2", secs3(r.Recovery2))
	t.add("  first / median of them called again", secs3(r.First2)+" / "+secs3(r.Median2))
	return t.write(w)
}

// held describes the jobs a killed relay had in flight.
func held(n, restarted, finished int) string {
	return fmt.Sprintf("%d (%d called again elsewhere, %d answered before the kill)", n, restarted, finished)
}

func leaders(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// leadersOn returns which of the assets a job's takeover needs (the job
// stream and its consumer, the records, the executors' liveness keys)
// have their raft leader on server, asked through natsAddr. A relay's
// death takes such leaders with it: JetStream elects new ones after its
// election timeout (4 to 9 s), during which they do not answer.
func leadersOn(ctx context.Context, natsAddr, server string) []string {
	nc, err := nats.Connect("nats://"+natsAddr, nats.UserInfo(benchNATSUser, benchNATSPassword))
	if err != nil {
		return []string{"(unknown: " + err.Error() + ")"}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var out []string
	for _, name := range []string{"RELAY_JOBS", "KV_RELAY_JOB_STATE", "KV_RELAY_EXECUTORS"} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			continue
		}
		if ci := st.CachedInfo().Cluster; ci != nil && ci.Leader == server {
			out = append(out, name)
		}
		if name != "RELAY_JOBS" {
			continue
		}
		if c, err := st.Consumer(ctx, "relay-jobs"); err == nil {
			if ci := c.CachedInfo().Cluster; ci != nil && ci.Leader == server {
				out = append(out, "consumer relay-jobs")
			}
		}
	}
	return out
}

// describeCalls shows a job's calls: relay, start (seconds after the
// fault phase began) and whether each completed.
func describeCalls(marker string, calls []*upCall, start time.Time) string {
	parts := []string{marker + ":"}
	for _, c := range calls {
		parts = append(parts, fmt.Sprintf("%s@%s(%s)", c.relay, secs3(c.start.Sub(start)), map[bool]string{true: "done", false: "cut"}[c.completed]))
	}
	return strings.Join(parts, " ")
}
