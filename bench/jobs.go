package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// jobsOptions parameterises the jobs scenario.
type jobsOptions struct {
	// Jobs is how many jobs the throughput phase submits, and how many
	// synchronous requests its baseline sends.
	Jobs int `json:"jobs"`
	// Submitters is the closed-loop concurrency of both the submits and
	// the synchronous baseline.
	Submitters int           `json:"submitters"`
	Latency    time.Duration `json:"upstream_latency_ns"`
	// MaxConcurrency is the provider's limit in the throughput phase:
	// capacity = MaxConcurrency / Latency.
	MaxConcurrency int `json:"max_concurrency"`
	// Workers is the relay's jobs.workers in both phases; 0 leaves the
	// relay's default.
	Workers int `json:"workers"`
	// Timeout bounds each phase's submits and the wait for completion.
	Timeout time.Duration `json:"timeout_ns"`
	// Queued is how many jobs the memory phase leaves queued behind a
	// provider with max_concurrency 1 and QueuedLatency; 0 skips it.
	Queued        int           `json:"queued"`
	QueuedLatency time.Duration `json:"queued_upstream_latency_ns"`
	// Pprof, when set, is a directory for the relay's CPU and heap
	// profiles.
	Pprof string `json:"pprof_dir,omitempty"`
}

// capacity is the provider's theoretical rate in the throughput phase.
func (o jobsOptions) capacity() float64 {
	if o.Latency <= 0 {
		return 0
	}
	return float64(o.MaxConcurrency) / o.Latency.Seconds()
}

// submitPhase is one batch of submits.
type submitPhase struct {
	Requests int            `json:"requests"`
	Accepted int            `json:"accepted"`
	Wall     time.Duration  `json:"wall_ns"` // first request sent to last response read
	Rate     float64        `json:"accepted_per_second"`
	Latency  latencySummary `json:"latency"`
	// RelayCPU is the relay's CPU time over Wall, in cores (1.0 = one core
	// busy); RelayCPUPerJob its CPU time per accepted job.
	RelayCPU       float64       `json:"relay_cpu_cores"`
	RelayCPUPerJob time.Duration `json:"relay_cpu_per_job_ns"`

	ids map[string]bool
}

// syncPhase is the synchronous baseline: the same number of requests
// through the same relay and provider, closed loop.
type syncPhase struct {
	Latency    latencySummary `json:"latency"`
	Wall       time.Duration  `json:"wall_ns"`
	Rate       float64        `json:"ok_per_second"`
	VsCapacity *float64       `json:"vs_capacity,omitempty"`
	RelayCPU   float64        `json:"relay_cpu_cores"`
	// RelayCPUPerRequest is the relay's CPU time per request.
	RelayCPUPerRequest time.Duration `json:"relay_cpu_per_request_ns"`
}

// memPoint is the relay's RSS and the jobs' progress at one instant.
type memPoint struct {
	At       time.Duration `json:"at_ns"`
	RSS      int64         `json:"rss_bytes"`
	Accepted int64         `json:"accepted"`
	Done     int           `json:"done"` // distinct callbacks received
	// Scraped tells whether the relay's gauges below were read at this
	// point: provider in-flight calls and batch lane depth.
	Scraped   bool    `json:"scraped,omitempty"`
	Inflight  float64 `json:"provider_inflight,omitempty"`
	LaneDepth float64 `json:"batch_lane_depth,omitempty"`
}

// jobsThroughput is the throughput phase's report.
type jobsThroughput struct {
	Sync   syncPhase   `json:"sync_baseline"`
	Submit submitPhase `json:"submit"`
	// Completion is from the first submit to the last job's callback.
	Completion     time.Duration `json:"completion_ns"`
	Complete       bool          `json:"complete"`
	CompletionRate float64       `json:"completion_per_second"`
	VsCapacity     *float64      `json:"completion_vs_capacity,omitempty"`
	// VsSync is Completion over the synchronous baseline's wall time.
	VsSync *float64 `json:"completion_vs_sync,omitempty"`
	// SubmitVsSync is the submit rate over the synchronous baseline's.
	SubmitVsSync *float64       `json:"submit_vs_sync,omitempty"`
	Callbacks    arrivalSummary `json:"callbacks"`
	ValidSigs    int            `json:"valid_signatures"`
	InvalidSigs  int            `json:"invalid_signatures"`
	SigErrors    []string       `json:"signature_errors,omitempty"`
	NATS         arrivalSummary `json:"nats"`
	// SubmitBenchCPU and SubmitUpstreamCPU are the bench process's
	// (submitters, callback receiver, NATS consumer) and the upstream's CPU
	// while submitting, in cores: the relay shares the machine with them.
	SubmitBenchCPU    float64 `json:"submit_bench_cpu_cores"`
	SubmitUpstreamCPU float64 `json:"submit_upstream_cpu_cores"`
	// DrainInflight and DrainLaneDepth are the means of the provider's
	// in-flight calls and of the batch lane's depth from the last submit
	// to the last callback: slots in use, and jobs waiting for one.
	DrainInflight  float64 `json:"drain_mean_provider_inflight"`
	DrainLaneDepth float64 `json:"drain_mean_batch_lane_depth"`
	// Relay CPU from the first submit to the last callback, in cores.
	RelayCPU         float64    `json:"relay_cpu_cores_until_done"`
	UpstreamRequests int64      `json:"upstream_requests"`
	IdleRSS          int64      `json:"idle_rss_bytes"`
	PeakRSS          int64      `json:"peak_rss_bytes"`
	PeakBacklog      int64      `json:"peak_backlog"`
	RSSAtPeakBacklog int64      `json:"rss_at_peak_backlog_bytes"`
	PeakBacklogAt    int64      `json:"peak_backlog_at_ns"`
	Memory           []memPoint `json:"memory"`
}

// jobsQueued is the memory phase's report.
type jobsQueued struct {
	Submit  submitPhase `json:"submit"`
	IdleRSS int64       `json:"idle_rss_bytes"`
	PeakRSS int64       `json:"peak_rss_bytes"`
	// SettledRSS is the RSS 3 s after the last submit, with every job
	// still queued.
	SettledRSS int64 `json:"settled_rss_bytes"`
	// QueuedMetric is relay_jobs_queued then; HeapInuse
	// go_memstats_heap_inuse_bytes.
	QueuedMetric     float64    `json:"relay_jobs_queued"`
	HeapInuse        float64    `json:"heap_inuse_bytes"`
	LaneDepth        float64    `json:"batch_lane_depth"`
	UpstreamRequests int64      `json:"upstream_requests"`
	Memory           []memPoint `json:"memory"`
}

// jobsReport is the JSON report of the jobs scenario.
type jobsReport struct {
	header
	Options    jobsOptions     `json:"options"`
	Capacity   float64         `json:"provider_capacity_per_second"`
	Throughput *jobsThroughput `json:"throughput"`
	Queued     *jobsQueued     `json:"queued,omitempty"`
}

// jobBody returns the body of POST /v1/jobs: the bench's small Messages
// request on the batch lane, with callbackURL.
func jobBody(callbackURL string) []byte {
	return []byte(`{"endpoint":"/v1/messages","lane":"batch","callback_url":"` + callbackURL +
		`","body":{"model":"` + benchModel + `","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}}`)
}

// The bench's user of the relay's NATS client port (loopback only).
const (
	benchNATSUser     = "bench-reader"
	benchNATSPassword = "bench-nats-password"
)

// jobsRelayConfig is the relay configuration of the jobs scenario: one
// provider limited to maxConcurrency, the default lanes, the embedded NATS
// server's client port on natsListen, signed callbacks allowed to loopback,
// and jobs.workers set to workers unless it is 0 (the relay's default).
func jobsRelayConfig(listen, admin, natsListen, storeDir, upstream string, maxConcurrency, workers int) relayConfig {
	cfg := newRelayConfig(listen, storeDir, []string{upstream}, nil)
	cfg.AdminListen = admin
	cfg.ShutdownGrace = "2s"
	cfg.NATS.Listen = natsListen
	// The results reader reads every key's results with an ordered
	// consumer: JetStream API calls, and replies on any inbox.
	cfg.NATS.Users = []relayNATSUser{{User: benchNATSUser, Password: benchNATSPassword,
		Publish: []string{"$JS.API.>"}, Subscribe: []string{"relay.results.>", "_INBOX.>"}}}
	cfg.Callbacks = &relayCallbacks{SigningSecret: benchSigningSecret, AllowPrivateNetworks: true}
	cfg.Providers[0].MaxConcurrency = maxConcurrency
	if workers > 0 {
		cfg.Jobs = &relayJobs{Workers: workers}
	}
	return cfg
}

// startJobsRelay starts a relay for the jobs scenario and returns it with
// its NATS and admin addresses.
func startJobsRelay(ctx context.Context, l *lab, name, upstream string, maxConcurrency, workers int) (relay *child, natsAddr, adminAddr string, err error) {
	var addrs [3]string
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return nil, "", "", err
		}
	}
	relay, err = l.startRelay(ctx, jobsRelayConfig(addrs[0], addrs[1], addrs[2], l.path(name), upstream, maxConcurrency, workers))
	return relay, addrs[2], addrs[1], err
}

// submitJobs submits n jobs to base+/v1/jobs from workers closed-loop
// clients, counting 202s in accepted as they come. It stops early when ctx
// ends or timeout passes.
func submitJobs(ctx context.Context, base string, body []byte, n, workers int, timeout time.Duration, accepted *atomic.Int64) (submitPhase, []sample) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := newTransport(workers)
	tr.MaxConnsPerHost = workers
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next atomic.Int64
	samples := make([]sample, n)
	ids := make([]string, n)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				samples[i], ids[i] = submitOne(ctx, client, base, body, start)
				if samples[i].OK {
					accepted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	sent := samples[:0]
	p := submitPhase{ids: map[string]bool{}}
	for i, s := range samples {
		if s.Code == 0 && s.Err == "" && s.Latency == 0 {
			continue // never sent: the run was cut short
		}
		sent = append(sent, s)
		if s.OK {
			p.ids[ids[i]] = true
		}
	}
	p.Requests = len(sent)
	p.Accepted = len(p.ids)
	p.Latency = summarize(sent)
	p.Wall = lastDone(sent)
	if p.Wall > 0 {
		p.Rate = float64(p.Accepted) / p.Wall.Seconds()
	}
	return p, sent
}

// submitOne sends one job and returns its sample and, on 202, its id.
func submitOne(ctx context.Context, client *http.Client, base string, body []byte, epoch time.Time) (sample, string) {
	t0 := time.Now()
	s := sample{At: t0.Sub(epoch)}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/jobs", bytes.NewReader(body))
	if err != nil {
		s.Err = err.Error()
		return s, ""
	}
	req.Header.Set("x-api-key", benchKey)
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		s.Latency, s.Err = time.Since(t0), err.Error()
		return s, ""
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	s.Latency, s.Code = time.Since(t0), resp.StatusCode
	if err != nil {
		s.Err = err.Error()
		return s, ""
	}
	var j struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if resp.StatusCode != http.StatusAccepted {
		s.Err = fmt.Sprintf("status %d: %.200s", resp.StatusCode, data)
		return s, ""
	}
	if err := json.Unmarshal(data, &j); err != nil || j.ID == "" {
		s.Err = fmt.Sprintf("202 without a job id: %.200s", data)
		return s, ""
	}
	s.OK = true
	return s, j.ID
}

// memWatch samples the relay's RSS every interval, with the jobs accepted
// and completed so far, until ctx ends.
type memWatch struct {
	pid      int
	accepted *atomic.Int64
	done     func() int
	// relay, when set, is the relay's base URL: its gauges are scraped
	// every scrapeEvery samples.
	relay       string
	scrapeEvery int
	points      []memPoint
	err         error
}

func (w *memWatch) run(ctx context.Context, epoch time.Time, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	ctl := newControlClient()
	for i := 0; ; i++ {
		rss, err := readRSS(w.pid)
		if err != nil {
			w.err = err
			return
		}
		p := memPoint{At: time.Since(epoch), RSS: rss, Accepted: w.accepted.Load()}
		if w.done != nil {
			p.Done = w.done()
		}
		if w.relay != "" && i%max(w.scrapeEvery, 1) == 0 {
			if g, err := readRelayGauges(ctx, ctl, w.relay, laneBatch); err == nil {
				p.Scraped, p.Inflight, p.LaneDepth = true, g.inflight, g.depth
			}
		}
		w.points = append(w.points, p)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// meanGauges returns the mean provider in-flight calls and batch lane
// depth over the scraped points in [from, to].
func meanGauges(points []memPoint, from, to time.Duration) (inflight, depth float64) {
	n := 0
	for _, p := range points {
		if p.Scraped && p.At >= from && p.At <= to {
			inflight += p.Inflight
			depth += p.LaneDepth
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return inflight / float64(n), depth / float64(n)
}

// peakRSS returns the highest RSS of points.
func peakRSS(points []memPoint) int64 {
	var m int64
	for _, p := range points {
		m = max(m, p.RSS)
	}
	return m
}

// peakBacklog returns the point where accepted minus done was highest.
func peakBacklog(points []memPoint) (memPoint, int64) {
	var best memPoint
	var b int64 = -1
	for _, p := range points {
		if d := p.Accepted - int64(p.Done); d > b {
			best, b = p, d
		}
	}
	return best, max(b, 0)
}

// cpuSince returns the relay's CPU time since before, and the new reading.
func cpuSince(pid int, before procStat) (time.Duration, procStat, error) {
	now, err := readStat(pid)
	if err != nil {
		return 0, procStat{}, err
	}
	return now.CPU() - before.CPU(), now, nil
}

// runJobsThroughput runs the synchronous baseline, then submits the jobs
// and waits until every accepted job's callback and NATS result came.
func runJobsThroughput(ctx context.Context, l *lab, o jobsOptions, log io.Writer) (*jobsThroughput, error) {
	up, err := l.startUpstream(ctx, "upstream", upstreamOptions{Latency: o.Latency})
	if err != nil {
		return nil, err
	}
	relay, natsAddr, adminAddr, err := startJobsRelay(ctx, l, "nats", up.URL(), o.MaxConcurrency, o.Workers)
	if err != nil {
		return nil, err
	}
	epoch := time.Now()
	sink := &callbackSink{secret: benchSigningSecret, seen: newArrivals(epoch)}
	cbURL, stopSink, err := startCallbackSink(ctx, sink)
	if err != nil {
		return nil, err
	}
	defer stopSink()
	natsSeen := newArrivals(epoch)
	stopNATS, err := subscribeResults(ctx, "nats://"+benchNATSUser+":"+benchNATSPassword+"@"+natsAddr, natsSeen)
	if err != nil {
		return nil, err
	}
	defer stopNATS()
	ctl := newControlClient()
	rep := &jobsThroughput{}

	// Baseline: the same number of synchronous requests, same concurrency.
	req := messagesRequest(relay.URL(), false)
	if _, err := attack(ctx, "warmup", req, shape{Workers: o.Submitters, MaxRequests: uint64(4 * o.Submitters), Duration: 10 * time.Second}); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "jobs: baseline, %d synchronous requests from %d closed-loop clients\n", o.Jobs, o.Submitters)
	cpu0, err := readStat(relay.PID())
	if err != nil {
		return nil, err
	}
	samples, err := attack(ctx, "sync", req, shape{Workers: o.Submitters, MaxRequests: uint64(o.Jobs), Duration: o.Timeout, Timeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	cpu, _, err := cpuSince(relay.PID(), cpu0)
	if err != nil {
		return nil, err
	}
	rep.Sync = syncPhase{Latency: summarize(samples), Wall: lastDone(samples)}
	if rep.Sync.Wall > 0 {
		rep.Sync.Rate = float64(rep.Sync.Latency.OK) / rep.Sync.Wall.Seconds()
		rep.Sync.RelayCPU = cpu.Seconds() / rep.Sync.Wall.Seconds()
	}
	if n := len(samples); n > 0 {
		rep.Sync.RelayCPUPerRequest = cpu / time.Duration(n)
	}
	rep.Sync.VsCapacity = ratio(rep.Sync.Rate, o.capacity())
	fmt.Fprintf(log, "jobs: baseline %.0f req/s, %d of %d ok\n", rep.Sync.Rate, rep.Sync.Latency.OK, rep.Sync.Latency.Requests)

	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	if rep.IdleRSS, err = readRSS(relay.PID()); err != nil {
		return nil, err
	}
	upBefore, err := upstreamStats(ctx, ctl, up.URL())
	if err != nil {
		return nil, err
	}

	fmt.Fprintf(log, "jobs: submitting %d jobs from %d closed-loop clients\n", o.Jobs, o.Submitters)
	var accepted atomic.Int64
	w := &memWatch{pid: relay.PID(), accepted: &accepted, done: sink.seen.distinct, relay: relay.URL(), scrapeEvery: 5}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var wg sync.WaitGroup
	wg.Add(1)
	// The memory watch counts from the start of the submits.
	start := time.Now()
	go func() { defer wg.Done(); w.run(wctx, start, 100*time.Millisecond) }()
	profDone := startCPUProfile(ctx, o.Pprof, adminAddr, "jobs-submit", 5*time.Second, log)
	cpu0, err = readStat(relay.PID())
	if err != nil {
		return nil, err
	}
	self0, err := readStat(os.Getpid())
	if err != nil {
		return nil, err
	}
	up0, err := readStat(up.PID())
	if err != nil {
		return nil, err
	}
	rep.Submit, _ = submitJobs(ctx, relay.URL(), jobBody(cbURL), o.Jobs, o.Submitters, o.Timeout, &accepted)
	cpu, _, err = cpuSince(relay.PID(), cpu0)
	if err != nil {
		return nil, err
	}
	selfCPU, _, err := cpuSince(os.Getpid(), self0)
	if err != nil {
		return nil, err
	}
	upCPU, _, err := cpuSince(up.PID(), up0)
	if err != nil {
		return nil, err
	}
	if rep.Submit.Wall > 0 {
		rep.SubmitBenchCPU = selfCPU.Seconds() / rep.Submit.Wall.Seconds()
		rep.SubmitUpstreamCPU = upCPU.Seconds() / rep.Submit.Wall.Seconds()
	}
	if rep.Submit.Wall > 0 {
		rep.Submit.RelayCPU = cpu.Seconds() / rep.Submit.Wall.Seconds()
	}
	if rep.Submit.Accepted > 0 {
		rep.Submit.RelayCPUPerJob = cpu / time.Duration(rep.Submit.Accepted)
	}
	fmt.Fprintf(log, "jobs: %d of %d accepted in %v (%.0f/s); waiting for callbacks and NATS results\n",
		rep.Submit.Accepted, rep.Submit.Requests, rep.Submit.Wall.Round(time.Millisecond), rep.Submit.Rate)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Wait until every accepted job was seen terminal on both channels.
	deadline := start.Add(o.Timeout)
	n := rep.Submit.Accepted
	for (sink.seen.distinct() < n || natsSeen.distinct() < n) && time.Now().Before(deadline) {
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	cpu, _, err = cpuSince(relay.PID(), cpu0)
	if err != nil {
		return nil, err
	}
	heapProfile(ctx, o.Pprof, adminAddr, "jobs-done", log)
	<-profDone
	// A last look for duplicates, then stop watching.
	_ = sleepCtx(ctx, 300*time.Millisecond)
	stopWatch()
	wg.Wait()
	if w.err != nil {
		return nil, w.err
	}
	upAfter, err := upstreamStats(ctx, ctl, up.URL())
	if err != nil {
		return nil, err
	}
	rep.UpstreamRequests = upAfter.sub(upBefore).Requests

	// Times below count from the first submit; the arrivals count from
	// epoch, a little earlier.
	shift := start.Sub(epoch)
	rep.Callbacks = sink.seen.summary(rep.Submit.ids)
	rep.NATS = natsSeen.summary(rep.Submit.ids)
	for _, s := range []*arrivalSummary{&rep.Callbacks, &rep.NATS} {
		s.First -= shift
		s.Last -= shift
	}
	sink.mu.Lock()
	rep.ValidSigs, rep.InvalidSigs, rep.SigErrors = sink.valid, sink.bad, sink.errs
	sink.mu.Unlock()
	rep.Complete = rep.Callbacks.Missing == 0 && rep.NATS.Missing == 0 && n > 0
	rep.Completion = rep.Callbacks.Last
	if rep.Completion > 0 {
		rep.CompletionRate = float64(rep.Callbacks.Distinct-rep.Callbacks.Unexpected) / rep.Completion.Seconds()
		rep.RelayCPU = cpu.Seconds() / rep.Completion.Seconds()
	}
	rep.VsCapacity = ratio(rep.CompletionRate, o.capacity())
	rep.VsSync = ratio(float64(rep.Completion), float64(rep.Sync.Wall))
	rep.SubmitVsSync = ratio(rep.Submit.Rate, rep.Sync.Rate)
	rep.Memory = w.points
	rep.DrainInflight, rep.DrainLaneDepth = meanGauges(w.points, rep.Submit.Wall, rep.Completion)
	rep.PeakRSS = peakRSS(w.points)
	p, b := peakBacklog(w.points)
	rep.PeakBacklog, rep.RSSAtPeakBacklog, rep.PeakBacklogAt = b, p.RSS, int64(p.At)
	return rep, nil
}

// runJobsQueued submits o.Queued jobs to a fresh relay whose one provider
// takes one call at a time and answers after o.QueuedLatency, so all but a
// few stay queued, and reads the relay's memory.
func runJobsQueued(ctx context.Context, l *lab, o jobsOptions, log io.Writer) (*jobsQueued, error) {
	up, err := l.startUpstream(ctx, "upstream-slow", upstreamOptions{Latency: o.QueuedLatency})
	if err != nil {
		return nil, err
	}
	relay, _, adminAddr, err := startJobsRelay(ctx, l, "nats-queued", up.URL(), 1, o.Workers)
	if err != nil {
		return nil, err
	}
	ctl := newControlClient()
	rep := &jobsQueued{}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	if rep.IdleRSS, err = readRSS(relay.PID()); err != nil {
		return nil, err
	}
	upBefore, err := upstreamStats(ctx, ctl, up.URL())
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "jobs: queueing %d jobs behind max_concurrency 1 and %v upstream latency\n", o.Queued, o.QueuedLatency)
	var accepted atomic.Int64
	w := &memWatch{pid: relay.PID(), accepted: &accepted}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() { defer wg.Done(); w.run(wctx, start, 250*time.Millisecond) }()
	profDone := startCPUProfile(ctx, o.Pprof, adminAddr, "queued-submit", 10*time.Second, log)
	cpu0, err := readStat(relay.PID())
	if err != nil {
		return nil, err
	}
	// The callback URL is never called (no job finishes); it only makes
	// the stored job as large as in the throughput phase.
	rep.Submit, _ = submitJobs(ctx, relay.URL(), jobBody("http://127.0.0.1:9/callback"), o.Queued, o.Submitters, o.Timeout, &accepted)
	cpu, _, err := cpuSince(relay.PID(), cpu0)
	if err != nil {
		return nil, err
	}
	if rep.Submit.Wall > 0 {
		rep.Submit.RelayCPU = cpu.Seconds() / rep.Submit.Wall.Seconds()
	}
	if rep.Submit.Accepted > 0 {
		rep.Submit.RelayCPUPerJob = cpu / time.Duration(rep.Submit.Accepted)
	}
	fmt.Fprintf(log, "jobs: %d of %d accepted in %v (%.0f/s)\n", rep.Submit.Accepted, rep.Submit.Requests,
		rep.Submit.Wall.Round(time.Millisecond), rep.Submit.Rate)
	<-profDone
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return nil, err
	}
	if rep.SettledRSS, err = readRSS(relay.PID()); err != nil {
		return nil, err
	}
	body, err := control(ctx, ctl, http.MethodGet, relay.URL()+"/metrics")
	if err != nil {
		return nil, err
	}
	rep.QueuedMetric = promValues(body, "relay_jobs_queued", "")[""]
	rep.HeapInuse = promValues(body, "go_memstats_heap_inuse_bytes", "")[""]
	rep.LaneDepth = promValues(body, "relay_lane_depth", "lane")[laneBatch]
	heapProfile(ctx, o.Pprof, adminAddr, "queued", log)
	stopWatch()
	wg.Wait()
	if w.err != nil {
		return nil, w.err
	}
	upAfter, err := upstreamStats(ctx, ctl, up.URL())
	if err != nil {
		return nil, err
	}
	rep.UpstreamRequests = upAfter.sub(upBefore).Requests
	rep.Memory = w.points
	rep.PeakRSS = max(peakRSS(w.points), rep.SettledRSS)
	// Stop this relay now: it holds a long upstream call and the queue.
	relay.terminate()
	_ = relay.wait(time.Now().Add(stopTimeout))
	return rep, nil
}

// startCPUProfile fetches a CPU profile of d from the relay's admin
// listener into dir (when dir is set) in the background; the channel closes
// when it is written.
func startCPUProfile(ctx context.Context, dir, admin, name string, d time.Duration, log io.Writer) <-chan struct{} {
	done := make(chan struct{})
	if dir == "" {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, int(d.Seconds()))
		saveURL(ctx, url, filepath.Join(dir, name+".cpu.pprof"), d+10*time.Second, log)
	}()
	return done
}

// heapProfile saves the relay's heap profile into dir, when dir is set.
func heapProfile(ctx context.Context, dir, admin, name string, log io.Writer) {
	if dir == "" {
		return
	}
	saveURL(ctx, "http://"+admin+"/debug/pprof/heap", filepath.Join(dir, name+".heap.pprof"), 10*time.Second, log)
}

// saveURL writes the body of GET url to path; failures are logged, not
// fatal (a profile is an aid, not a figure).
func saveURL(ctx context.Context, url, path string, timeout time.Duration, log io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		return os.WriteFile(path, data, 0o644)
	}()
	if err != nil {
		fmt.Fprintf(log, "profile %s: %v\n", url, err)
		return
	}
	fmt.Fprintf(log, "profile written to %s\n", path)
}

// print writes the jobs tables.
func (r *jobsReport) print(w io.Writer) error {
	var sections []section
	if t := r.Throughput; t != nil {
		o := r.Options
		a := newTable("path", "requests", "ok / accepted", "wall s", "rate/s", "vs sync", "p50 ms", "p99 ms", "relay CPU cores", "relay CPU µs/req")
		a.add("sync requests (baseline)", strconv.Itoa(t.Sync.Latency.Requests), strconv.Itoa(t.Sync.Latency.OK),
			secs3(t.Sync.Wall), fmt.Sprintf("%.0f", t.Sync.Rate), "1.00x", ms(t.Sync.Latency.P50), ms(t.Sync.Latency.P99),
			fmt.Sprintf("%.2f", t.Sync.RelayCPU), us(t.Sync.RelayCPUPerRequest))
		a.add("job submits (202)", strconv.Itoa(t.Submit.Requests), strconv.Itoa(t.Submit.Accepted),
			secs3(t.Submit.Wall), fmt.Sprintf("%.0f", t.Submit.Rate), times(t.SubmitVsSync), ms(t.Submit.Latency.P50), ms(t.Submit.Latency.P99),
			fmt.Sprintf("%.2f", t.Submit.RelayCPU), us(t.Submit.RelayCPUPerJob))
		a.add("jobs to last callback", strconv.Itoa(t.Submit.Accepted), strconv.Itoa(t.Callbacks.Statuses["succeeded"]),
			secs3(t.Completion), fmt.Sprintf("%.0f", t.CompletionRate), times(t.VsSync)+" time", "", "",
			fmt.Sprintf("%.2f", t.RelayCPU), "")
		f := newTable("figure", "value", "goal")
		f.add("submit throughput (accepted jobs/s)", fmt.Sprintf("%.0f", t.Submit.Rate), "≥ 5000: "+verdict(t.Submit.Rate >= 5000))
		f.add("submit latency p50 / p99 / max ms", fmt.Sprintf("%s / %s / %s", ms(t.Submit.Latency.P50), ms(t.Submit.Latency.P99), ms(t.Submit.Latency.Max)), "")
		f.add("submit errors", fmt.Sprintf("%d (%s)", t.Submit.Requests-t.Submit.Accepted, codes(t.Submit.Latency.Codes)), "")
		f.add("relay CPU while submitting", fmt.Sprintf("%.2f cores (%.0f%% of the machine)", t.Submit.RelayCPU, 100*t.Submit.RelayCPU/float64(r.Machine.Cores)), "")
		f.add("bench / upstream CPU while submitting", fmt.Sprintf("%.2f / %.2f cores", t.SubmitBenchCPU, t.SubmitUpstreamCPU), "")
		f.add("provider capacity (max_concurrency / latency)", fmt.Sprintf("%.0f/s (%d / %v)", r.Capacity, o.MaxConcurrency, o.Latency), "")
		f.add("sync baseline rate vs capacity", times(t.Sync.VsCapacity), "")
		f.add("end-to-end: first submit to last callback", secs3(t.Completion)+" s", "")
		f.add("completion rate vs capacity", times(t.VsCapacity), "")
		f.add("completion time vs sync baseline", times(t.VsSync), "")
		f.add("drain: mean provider slots in use / batch lane depth", fmt.Sprintf("%.1f of %d / %.1f", t.DrainInflight, o.MaxConcurrency, t.DrainLaneDepth), "")
		f.add("all jobs terminal on both channels", fmt.Sprintf("%v (missing: %d callbacks, %d NATS)", t.Complete, t.Callbacks.Missing, t.NATS.Missing), "")
		f.add("callbacks: distinct webhook-ids / deliveries", fmt.Sprintf("%d / %d (%s)", t.Callbacks.Distinct, t.Callbacks.Deliveries, codes(t.Callbacks.Statuses)),
			fmt.Sprintf("= %d: %s", t.Submit.Accepted, verdict(t.Callbacks.Distinct == t.Submit.Accepted && t.Callbacks.Unexpected == 0)))
		f.add("callback signatures valid / invalid (all checked)", fmt.Sprintf("%d / %d", t.ValidSigs, t.InvalidSigs), "0 invalid: "+verdict(t.InvalidSigs == 0))
		f.add("callback rate, first to last callback", fmt.Sprintf("%.0f/s", t.Callbacks.Rate), "")
		f.add("NATS: distinct Nats-Msg-Id / messages", fmt.Sprintf("%d / %d (%s)", t.NATS.Distinct, t.NATS.Deliveries, codes(t.NATS.Statuses)),
			fmt.Sprintf("= %d: %s", t.Submit.Accepted, verdict(t.NATS.Distinct == t.Submit.Accepted && t.NATS.Unexpected == 0)))
		f.add("NATS rate, first to last result", fmt.Sprintf("%.0f/s", t.NATS.Rate), "")
		f.add("upstream requests for the jobs", strconv.FormatInt(t.UpstreamRequests, 10), "")
		f.add("relay RSS idle / peak", fmt.Sprintf("%s / %s MiB", mib(t.IdleRSS), mib(t.PeakRSS)), "")
		f.add("relay RSS at peak backlog", fmt.Sprintf("%s MiB with %d jobs unfinished (%.1f s)", mib(t.RSSAtPeakBacklog), t.PeakBacklog,
			time.Duration(t.PeakBacklogAt).Seconds()), "")
		sections = append(sections,
			section{fmt.Sprintf("Jobs: %d jobs vs %d synchronous requests, %d closed-loop clients each; upstream latency %v, provider max_concurrency %d",
				o.Jobs, o.Jobs, o.Submitters, o.Latency, o.MaxConcurrency), a},
			section{"Jobs figures", f},
			section{"Backlog and relay RSS over time (highest backlog of each slice)", memTable(t.Memory, 12, true)})
	}
	if q := r.Queued; q != nil {
		f := newTable("figure", "value", "goal")
		f.add("jobs accepted / submitted", fmt.Sprintf("%d / %d", q.Submit.Accepted, q.Submit.Requests), "")
		f.add("submit throughput, nothing finishing (accepted/s)", fmt.Sprintf("%.0f", q.Submit.Rate), "≥ 5000: "+verdict(q.Submit.Rate >= 5000))
		f.add("submit latency p50 / p99 ms", fmt.Sprintf("%s / %s", ms(q.Submit.Latency.P50), ms(q.Submit.Latency.P99)), "")
		f.add("relay CPU while submitting", fmt.Sprintf("%.2f cores, %s µs/job", q.Submit.RelayCPU, us(q.Submit.RelayCPUPerJob)), "")
		f.add("relay_jobs_queued after submit", fmt.Sprintf("%.0f", q.QueuedMetric), "")
		f.add("batch lane depth / upstream requests", fmt.Sprintf("%.0f / %d", q.LaneDepth, q.UpstreamRequests), "")
		f.add("relay RSS idle", mib(q.IdleRSS)+" MiB", "")
		f.add("relay RSS peak / settled (3 s after)", fmt.Sprintf("%s / %s MiB", mib(q.PeakRSS), mib(q.SettledRSS)), "≤ 300 MiB: "+verdict(q.PeakRSS <= 300<<20))
		f.add("relay RSS peak vs idle", times(ratio(float64(q.PeakRSS), float64(q.IdleRSS))), "")
		per := int64(0)
		if q.Submit.Accepted > 0 {
			per = (q.PeakRSS - q.IdleRSS) / int64(q.Submit.Accepted)
		}
		f.add("RSS growth per queued job", fmt.Sprintf("%.2f KiB", float64(per)/1024), "")
		f.add("Go heap in use after submit", mib(int64(q.HeapInuse))+" MiB", "")
		sections = append(sections,
			section{fmt.Sprintf("Queued jobs: %d behind max_concurrency 1, upstream latency %v", r.Options.Queued, r.Options.QueuedLatency), f},
			section{"Relay RSS while queueing", memTable(q.Memory, 10, false)})
	}
	return writeSections(w, r.Notes, sections...)
}

// memTable prints memory points in at most rows rows: in each slice the
// point with the highest backlog (withDone) or RSS.
func memTable(points []memPoint, rows int, withDone bool) *table {
	head := []string{"t s", "accepted"}
	if withDone {
		head = append(head, "done", "backlog")
	}
	head = append(head, "relay RSS MiB")
	t := newTable(head...)
	if len(points) == 0 || rows <= 0 {
		return t
	}
	per := (len(points) + rows - 1) / rows
	for i := 0; i < len(points); i += per {
		chunk := points[i:min(i+per, len(points))]
		best := chunk[0]
		for _, p := range chunk {
			if (withDone && p.Accepted-int64(p.Done) > best.Accepted-int64(best.Done)) || (!withDone && p.RSS > best.RSS) {
				best = p
			}
		}
		cells := []string{secs(best.At), strconv.FormatInt(best.Accepted, 10)}
		if withDone {
			cells = append(cells, strconv.Itoa(best.Done), strconv.FormatInt(best.Accepted-int64(best.Done), 10))
		}
		t.add(append(cells, mib(best.RSS))...)
	}
	return t
}

// secs3 formats a duration in seconds with three decimals.
func secs3(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 3, 64)
}

// jobsMain parses the jobs scenario's flags and runs it.
func jobsMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("jobs", stderr, &c)
	n := fs.Int("n", 20000, "jobs to submit (and synchronous requests in the baseline)")
	submitters := fs.Int("submitters", 64, "closed-loop concurrent submitters (and baseline clients)")
	latency := fs.Duration("latency", 20*time.Millisecond, "upstream latency")
	maxConc := fs.Int("max-concurrency", 32, "the provider's max_concurrency in the throughput phase")
	workers := fs.Int("workers", 0, "the relay's jobs.workers (0: the relay's default)")
	timeout := fs.Duration("timeout", 90*time.Second, "bound on each phase's submits and on waiting for completion")
	queued := fs.Int("queued", 100000, "jobs left queued for the memory phase (0 skips it)")
	queuedLatency := fs.Duration("queued-latency", 10*time.Minute, "upstream latency in the memory phase")
	pprofDir := fs.String("pprof", "", "save the relay's CPU and heap profiles into `DIR`")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	o := jobsOptions{
		Jobs:           quickDefault(&c, "n", *n, 500),
		Submitters:     *submitters,
		Latency:        *latency,
		MaxConcurrency: *maxConc,
		Workers:        *workers,
		Timeout:        *timeout,
		Queued:         quickDefault(&c, "queued", *queued, 5000),
		QueuedLatency:  *queuedLatency,
		Pprof:          *pprofDir,
	}
	if o.Jobs <= 0 || o.Submitters <= 0 || o.MaxConcurrency <= 0 || o.Queued < 0 || o.Workers < 0 || o.Timeout <= 0 {
		return fmt.Errorf("-n, -submitters, -max-concurrency and -timeout must be positive, -queued and -workers not negative")
	}
	rep := &jobsReport{header: newHeader("jobs", args, c.quick), Options: o, Capacity: o.capacity()}
	err := withLab(c.relay, func(l *lab) error {
		var err error
		if rep.Throughput, err = runJobsThroughput(ctx, l, o, stderr); err != nil {
			return err
		}
		if o.Queued > 0 {
			// The throughput phase's relay and upstream are idle now;
			// stop them so the memory phase has the machine.
			for _, ch := range l.children {
				ch.terminate()
			}
			for _, ch := range l.children {
				_ = ch.wait(time.Now().Add(stopTimeout))
			}
			if rep.Queued, err = runJobsQueued(ctx, l, o, stderr); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return finish(&c, &rep.header, rep, rep.print, stdout)
}
