package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// parkedOptions parameterises the parked scenario.
type parkedOptions struct {
	// Requests is how many synchronous requests are held at once, each on
	// its own connection.
	Requests int `json:"requests"`
	// Requested is what -n asked for, when the file descriptor limit
	// forced fewer.
	Requested int    `json:"requested"`
	NoFile    uint64 `json:"rlimit_nofile"`
	// OpenRate is how many connections per second are opened.
	OpenRate int           `json:"open_rate"`
	Latency  time.Duration `json:"upstream_latency_ns"`
	// Settle is how long RSS is sampled once every request is held.
	Settle time.Duration `json:"settle_ns"`
	// Timeout bounds each wait (all held, all gone).
	Timeout time.Duration `json:"timeout_ns"`
	Pprof   string        `json:"pprof_dir,omitempty"`
	// H2C holds the requests as HTTP/2 streams without TLS (prior
	// knowledge), many to a connection, instead of one HTTP/1.1
	// connection each.
	H2C bool `json:"h2c,omitempty"`
}

// holdRun is one target holding o.Requests requests.
type holdRun struct {
	Target string `json:"target"`
	// Held is how many requests the target held at once (for the relay:
	// parked on the lane plus the one upstream call).
	Held    int   `json:"held"`
	IdleRSS int64 `json:"idle_rss_bytes"`
	// PeakRSS is the highest RSS while every request was held (and
	// before any was canceled).
	PeakRSS int64 `json:"peak_rss_bytes"`
	// Growth is PeakRSS - IdleRSS; PerRequest Growth / Held.
	Growth     int64   `json:"rss_growth_bytes"`
	PerRequest int64   `json:"rss_per_request_bytes"`
	IdleGo     float64 `json:"idle_goroutines"`
	HeldGo     float64 `json:"held_goroutines"`
	// GoPerRequest is (HeldGo - IdleGo) / Held.
	GoPerRequest float64 `json:"goroutines_per_request"`
	AfterGo      float64 `json:"goroutines_after_cancel"`
	AfterRSS     int64   `json:"rss_after_cancel_bytes"`
	// PeakWhileHeld is the highest RSS sampled (every 100 ms) from the
	// first connection until the cancel; PeakAfterCancel after it.
	PeakWhileHeld   int64   `json:"peak_rss_while_held_bytes"`
	PeakAfterCancel int64   `json:"peak_rss_after_cancel_bytes"`
	HeapInuse       float64 `json:"heap_inuse_bytes,omitempty"`
	// LiveHeap and Stacks are the Go heap allocated and the goroutine
	// stacks in use right after a forced GC, every request held: what
	// each held request really keeps, without the garbage the GC had
	// not collected yet.
	LiveHeap int64 `json:"live_heap_bytes"`
	Stacks   int64 `json:"stack_inuse_bytes"`
	// OpenFor is how long it took from the first connection until all
	// were held; DrainFor from the clients' cancel until none was.
	OpenFor  time.Duration `json:"open_ns"`
	DrainFor time.Duration `json:"drain_ns"`
	// Answered counts requests answered before the cancel (none
	// should be), by status.
	Answered map[string]int `json:"answered_before_cancel"`
	// Canceled is relay_lane_rejected_total{reason="canceled"} added.
	Canceled float64 `json:"lane_canceled"`
	// Upstream is the upstream requests during the run (the relay: 1).
	Upstream int64 `json:"upstream_requests"`
	// MirrorDropped is relay_lane_mirror_dropped_total added: RELAY_LANES
	// records the relay could not queue.
	MirrorDropped float64 `json:"mirror_dropped"`
}

// parkedReport is the JSON report of the parked scenario.
type parkedReport struct {
	header
	Options  parkedOptions `json:"options"`
	Baseline holdRun       `json:"baseline"`
	Relay    holdRun       `json:"relay"`
	// GrowthVsBaseline is the relay's RSS growth over the baseline's.
	GrowthVsBaseline *float64 `json:"growth_vs_baseline,omitempty"`
}

// runHold is the hidden subcommand "_hold -listen ADDR": the least a Go
// net/http server can do to hold a request: read the body, then wait until
// the client goes away. GET /_hold/stats answers {"held":N,"goroutines":G}.
func runHold(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("_hold", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var held atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_hold/stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"held": held.Load(), "goroutines": int64(runtime.NumGoroutine())})
	})
	mux.HandleFunc("GET /_hold/memory", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(heldMemory{LiveHeap: int64(ms.HeapAlloc), Stacks: int64(ms.StackInuse)})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		held.Add(1)
		<-r.Context().Done()
		held.Add(-1)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	// As the relay: HTTP/1.1 and h2c.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	if err := serve(ctx, srv, *listen); err != nil {
		return fmt.Errorf("_hold: %w", err)
	}
	return nil
}

// holders opens n requests, each on its own connection (h2c: as streams
// sharing connections), at rate per second, and keeps them waiting until
// cancel is called.
type holders struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	answered map[string]int // before the cancel
	canceled atomic.Bool
	tr       *http.Transport
}

// openHolders starts the requests in the background.
func openHolders(ctx context.Context, r request, n, rate int, h2c bool) *holders {
	ctx, cancel := context.WithCancel(ctx)
	h := &holders{cancel: cancel, answered: map[string]int{}}
	h.tr = newTransport(1)
	if h2c {
		// Streams share a connection up to the server's
		// MAX_CONCURRENT_STREAMS, then the transport dials another.
		h.tr.Protocols = new(http.Protocols)
		h.tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		// One connection per request: none is reused while its request
		// waits.
		h.tr.DisableKeepAlives = true
	}
	client := &http.Client{Transport: h.tr}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		start := time.Now()
		for i := range n {
			// Pace: request i starts at i/rate seconds.
			if d := time.Duration(float64(i)/float64(rate)*float64(time.Second)) - time.Since(start); d > time.Millisecond {
				if sleepCtx(ctx, d) != nil {
					return
				}
			}
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(r.Body))
				if err != nil {
					return
				}
				req.Header = r.Header.Clone()
				resp, err := client.Do(req)
				key := "error"
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					key = strconv.Itoa(resp.StatusCode)
				}
				if h.canceled.Load() && err != nil {
					return // the cancel ended it, as intended
				}
				h.mu.Lock()
				h.answered[key]++
				h.mu.Unlock()
			}()
		}
	}()
	return h
}

// stop cancels every request and waits for the client side to finish.
func (h *holders) stop() {
	h.canceled.Store(true)
	h.cancel()
	h.wg.Wait()
	h.tr.CloseIdleConnections()
}

// answeredSoFar returns the responses received before the cancel.
func (h *holders) answeredSoFar() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.answered {
		out[k] = v
	}
	return out
}

// waitFor polls cond every 50 ms until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %v", timeout)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// rssOver samples pid's RSS every 100 ms for d and returns the peak.
func rssOver(ctx context.Context, pid int, d time.Duration) (int64, error) {
	var peak int64
	end := time.Now().Add(d)
	for {
		rss, err := readRSS(pid)
		if err != nil {
			return 0, err
		}
		peak = max(peak, rss)
		if time.Now().After(end) {
			return peak, nil
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// rssWatch samples a process's RSS every 100 ms in the background and
// keeps the peak before and after mark was called.
type rssWatch struct {
	stop   context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	marked bool
	before int64 // peak until mark
	after  int64 // peak since mark
	err    error
}

func watchRSS(ctx context.Context, pid int) *rssWatch {
	ctx, stop := context.WithCancel(ctx)
	w := &rssWatch{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			rss, err := readRSS(pid)
			w.mu.Lock()
			switch {
			case err != nil:
				w.err = err
			case w.marked:
				w.after = max(w.after, rss)
			default:
				w.before = max(w.before, rss)
			}
			w.mu.Unlock()
			if err != nil || sleepCtx(ctx, 100*time.Millisecond) != nil {
				return
			}
		}
	}()
	return w
}

// mark starts the second peak.
func (w *rssWatch) mark() {
	w.mu.Lock()
	w.marked = true
	w.mu.Unlock()
}

// finish stops sampling and returns both peaks.
func (w *rssWatch) finish() (before, after int64, err error) {
	w.stop()
	<-w.done
	return w.before, w.after, w.err
}

// heldMemory is the live heap and stacks after a forced GC.
type heldMemory struct {
	LiveHeap int64 `json:"live_heap"`
	Stacks   int64 `json:"stacks"`
}

// holdMemory forces a GC in the _hold server and reads its memory.
func holdMemory(ctx context.Context, ctl *http.Client, base string) (heldMemory, error) {
	var m heldMemory
	body, err := control(ctx, ctl, http.MethodGet, base+"/_hold/memory")
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return m, fmt.Errorf("decode hold memory: %w", err)
	}
	return m, nil
}

// relayMemory forces a GC in the relay (pprof's heap profile with gc=1,
// on the admin listener) and reads its memory from /metrics.
func relayMemory(ctx context.Context, ctl *http.Client, relay, admin string) (heldMemory, error) {
	if _, err := control(ctx, ctl, http.MethodGet, "http://"+admin+"/debug/pprof/heap?gc=1"); err != nil {
		return heldMemory{}, fmt.Errorf("force a GC: %w", err)
	}
	body, err := control(ctx, ctl, http.MethodGet, relay+"/metrics")
	if err != nil {
		return heldMemory{}, err
	}
	return heldMemory{
		LiveHeap: int64(promValues(body, "go_memstats_heap_alloc_bytes", "")[""]),
		Stacks:   int64(promValues(body, "go_memstats_stack_inuse_bytes", "")[""]),
	}, nil
}

// holdStats reads the _hold server's counters.
func holdStats(ctx context.Context, ctl *http.Client, base string) (held, goroutines float64, err error) {
	body, err := control(ctx, ctl, http.MethodGet, base+"/_hold/stats")
	if err != nil {
		return 0, 0, err
	}
	var st struct {
		Held       float64 `json:"held"`
		Goroutines float64 `json:"goroutines"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return 0, 0, fmt.Errorf("decode hold stats: %w", err)
	}
	return st.Held, st.Goroutines, nil
}

// runParkedBaseline holds the requests on the _hold server.
func runParkedBaseline(ctx context.Context, l *lab, o parkedOptions, log io.Writer) (holdRun, error) {
	run := holdRun{Target: "net/http hold (baseline)"}
	addr, err := freeAddr()
	if err != nil {
		return run, err
	}
	srv, err := l.start(ctx, "hold", addr, "/_hold/stats", syscall.SIGKILL, l.self, "_hold", "-listen", addr)
	if err != nil {
		return run, err
	}
	defer func() { srv.terminate(); _ = srv.wait(time.Now().Add(stopTimeout)) }()
	ctl := newControlClient()
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return run, err
	}
	if run.IdleRSS, err = readRSS(srv.PID()); err != nil {
		return run, err
	}
	if _, run.IdleGo, err = holdStats(ctx, ctl, srv.URL()); err != nil {
		return run, err
	}
	fmt.Fprintf(log, "parked: baseline, holding %d requests on a bare net/http server\n", o.Requests)
	rw := watchRSS(ctx, srv.PID())
	defer rw.stop()
	h := openHolders(ctx, messagesRequest(srv.URL(), false), o.Requests, o.OpenRate, o.H2C)
	defer h.stop()
	start := time.Now()
	err = waitFor(ctx, o.Timeout, func() (bool, error) {
		held, _, err := holdStats(ctx, ctl, srv.URL())
		return int(held) >= o.Requests, err
	})
	if err != nil {
		return run, fmt.Errorf("baseline: waiting for %d held requests: %w", o.Requests, err)
	}
	run.OpenFor = time.Since(start)
	if run.PeakRSS, err = rssOver(ctx, srv.PID(), o.Settle); err != nil {
		return run, err
	}
	var held float64
	if held, run.HeldGo, err = holdStats(ctx, ctl, srv.URL()); err != nil {
		return run, err
	}
	m, err := holdMemory(ctx, ctl, srv.URL())
	if err != nil {
		return run, err
	}
	run.LiveHeap, run.Stacks = m.LiveHeap, m.Stacks
	run.Held = int(held)
	run.Answered = h.answeredSoFar()
	cancelAt := time.Now()
	rw.mark()
	h.stop()
	err = waitFor(ctx, o.Timeout, func() (bool, error) {
		held, _, err := holdStats(ctx, ctl, srv.URL())
		return held == 0, err
	})
	if err != nil {
		return run, fmt.Errorf("baseline: waiting for the held requests to end: %w", err)
	}
	run.DrainFor = time.Since(cancelAt)
	if err := sleepCtx(ctx, time.Second); err != nil {
		return run, err
	}
	if _, run.AfterGo, err = holdStats(ctx, ctl, srv.URL()); err != nil {
		return run, err
	}
	if run.AfterRSS, err = readRSS(srv.PID()); err != nil {
		return run, err
	}
	if run.PeakWhileHeld, run.PeakAfterCancel, err = rw.finish(); err != nil {
		return run, err
	}
	run.finish()
	return run, nil
}

// finish computes the derived figures.
func (r *holdRun) finish() {
	r.PeakRSS = max(r.PeakRSS, r.PeakWhileHeld)
	r.Growth = r.PeakRSS - r.IdleRSS
	if r.Held > 0 {
		r.PerRequest = r.Growth / int64(r.Held)
		r.GoPerRequest = (r.HeldGo - r.IdleGo) / float64(r.Held)
	}
}

// parkedRelayConfig is the relay configuration of the parked scenario: one
// provider taking one call at a time, an interactive lane deep and patient
// enough to park every request.
func parkedRelayConfig(listen, admin, storeDir, upstream string, o parkedOptions) relayConfig {
	cfg := newRelayConfig(listen, storeDir, []string{upstream}, nil)
	cfg.AdminListen = admin
	cfg.ShutdownGrace = "2s"
	cfg.Providers[0].MaxConcurrency = 1
	wait := (10 * time.Minute).String()
	cfg.Lanes = []relayLane{
		{Name: laneInteractive, MaxDepth: o.Requests + 1000, MaxWait: wait},
		{Name: laneStandard, MaxDepth: 10000, MaxWait: wait},
		{Name: laneBatch, MaxDepth: 10000, MaxWait: wait},
	}
	cfg.Keys[0].DefaultLane = laneInteractive
	return cfg
}

// relayGauges reads the relay's figures the parked scenario needs.
type relayGauges struct {
	depth, inflight, goroutines, heapInuse, canceled, jobsQueued, mirrorDropped float64
}

// readRelayGauges scrapes the relay's /metrics; depth is lane's.
func readRelayGauges(ctx context.Context, ctl *http.Client, relay, lane string) (relayGauges, error) {
	body, err := control(ctx, ctl, http.MethodGet, relay+"/metrics")
	if err != nil {
		return relayGauges{}, err
	}
	return relayGauges{
		depth:         promValues(body, "relay_lane_depth", "lane")[lane],
		inflight:      promValues(body, "relay_provider_inflight", "provider")[providerName(0)],
		goroutines:    promValues(body, "go_goroutines", "")[""],
		heapInuse:     promValues(body, "go_memstats_heap_inuse_bytes", "")[""],
		canceled:      promValues(body, "relay_lane_rejected_total", "reason")["canceled"],
		jobsQueued:    promValues(body, "relay_jobs_queued", "")[""],
		mirrorDropped: promValues(body, "relay_lane_mirror_dropped_total", "")[""],
	}, nil
}

// runParkedRelay parks the requests on the relay.
func runParkedRelay(ctx context.Context, l *lab, o parkedOptions, log io.Writer) (holdRun, error) {
	run := holdRun{Target: "relay (parked)"}
	up, err := l.startUpstream(ctx, "upstream", upstreamOptions{})
	if err != nil {
		return run, err
	}
	var addrs [2]string
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return run, err
		}
	}
	relay, err := l.startRelay(ctx, parkedRelayConfig(addrs[0], addrs[1], l.path("nats"), up.URL(), o))
	if err != nil {
		return run, err
	}
	ctl := newControlClient()
	req := messagesRequest(relay.URL(), false)
	if _, err := attack(ctx, "warmup", req, shape{Workers: 1, MaxRequests: 5, Duration: 5 * time.Second}); err != nil {
		return run, err
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return run, err
	}
	if run.IdleRSS, err = readRSS(relay.PID()); err != nil {
		return run, err
	}
	g0, err := readRelayGauges(ctx, ctl, relay.URL(), laneInteractive)
	if err != nil {
		return run, err
	}
	run.IdleGo = g0.goroutines
	upBefore, err := upstreamStats(ctx, ctl, up.URL())
	if err != nil {
		return run, err
	}
	if _, err := control(ctx, ctl, http.MethodPost, up.URL()+"/_sim/latency?d="+o.Latency.String()); err != nil {
		return run, err
	}
	fmt.Fprintf(log, "parked: relay, parking %d requests behind max_concurrency 1 and %v upstream latency\n", o.Requests, o.Latency)
	rw := watchRSS(ctx, relay.PID())
	defer rw.stop()
	h := openHolders(ctx, req, o.Requests, o.OpenRate, o.H2C)
	defer h.stop()
	start := time.Now()
	err = waitFor(ctx, o.Timeout, func() (bool, error) {
		g, err := readRelayGauges(ctx, ctl, relay.URL(), laneInteractive)
		return int(g.depth+g.inflight) >= o.Requests, err
	})
	if err != nil {
		return run, fmt.Errorf("relay: waiting for %d parked requests: %w (answered so far: %v)", o.Requests, err, h.answeredSoFar())
	}
	run.OpenFor = time.Since(start)
	if run.PeakRSS, err = rssOver(ctx, relay.PID(), o.Settle); err != nil {
		return run, err
	}
	g1, err := readRelayGauges(ctx, ctl, relay.URL(), laneInteractive)
	if err != nil {
		return run, err
	}
	run.Held, run.HeldGo, run.HeapInuse = int(g1.depth+g1.inflight), g1.goroutines, g1.heapInuse
	m, err := relayMemory(ctx, ctl, relay.URL(), addrs[1])
	if err != nil {
		return run, err
	}
	run.LiveHeap, run.Stacks = m.LiveHeap, m.Stacks
	if o.Pprof != "" {
		// After relayMemory's forced GC, so the heap profile shows what
		// the parked requests keep.
		saveURL(ctx, "http://"+addrs[1]+"/debug/pprof/goroutine?debug=1", o.Pprof+"/parked.goroutine.txt", 10*time.Second, log)
		heapProfile(ctx, o.Pprof, addrs[1], "parked", log)
	}
	run.Answered = h.answeredSoFar()
	fmt.Fprintf(log, "parked: %d held, %.0f goroutines; cancelling every client\n", run.Held, run.HeldGo)
	cancelAt := time.Now()
	rw.mark()
	h.stop()
	err = waitFor(ctx, o.Timeout, func() (bool, error) {
		g, err := readRelayGauges(ctx, ctl, relay.URL(), laneInteractive)
		return g.depth == 0 && g.inflight == 0, err
	})
	if err != nil {
		return run, fmt.Errorf("relay: waiting for the lane to empty: %w", err)
	}
	run.DrainFor = time.Since(cancelAt)
	if err := sleepCtx(ctx, time.Second); err != nil {
		return run, err
	}
	g2, err := readRelayGauges(ctx, ctl, relay.URL(), laneInteractive)
	if err != nil {
		return run, err
	}
	run.AfterGo, run.Canceled = g2.goroutines, g2.canceled-g0.canceled
	run.MirrorDropped = g2.mirrorDropped - g0.mirrorDropped
	if run.AfterRSS, err = readRSS(relay.PID()); err != nil {
		return run, err
	}
	if run.PeakWhileHeld, run.PeakAfterCancel, err = rw.finish(); err != nil {
		return run, err
	}
	upAfter, err := upstreamStats(ctx, ctl, up.URL())
	if err != nil {
		return run, err
	}
	run.Upstream = upAfter.sub(upBefore).Requests
	run.finish()
	return run, nil
}

// print writes the parked tables.
func (r *parkedReport) print(w io.Writer) error {
	t := newTable("target", "held", "idle RSS MiB", "peak RSS MiB", "growth MiB", "KiB/request", "idle goroutines", "goroutines held",
		"goroutines/request", "live heap KiB/request", "stacks KiB/request", "goroutines after", "peak RSS after cancel MiB", "all held after s", "gone after s")
	for _, x := range []holdRun{r.Baseline, r.Relay} {
		t.add(x.Target, strconv.Itoa(x.Held), mib(x.IdleRSS), mib(x.PeakRSS), mib(x.Growth), fmt.Sprintf("%.1f", float64(x.PerRequest)/1024),
			fmt.Sprintf("%.0f", x.IdleGo), fmt.Sprintf("%.0f", x.HeldGo), fmt.Sprintf("%.2f", x.GoPerRequest),
			perRequestKiB(x.LiveHeap, x.Held), perRequestKiB(x.Stacks, x.Held),
			fmt.Sprintf("%.0f", x.AfterGo), mib(max(x.PeakAfterCancel, x.AfterRSS)), secs(x.OpenFor), secs3(x.DrainFor))
	}
	rl := r.Relay
	f := newTable("figure", "value", "goal")
	f.add("relay RSS growth with the requests parked", mib(rl.Growth)+" MiB", "≤ 100 MB: "+verdict(rl.Growth <= 100e6))
	f.add("relay RSS growth vs the bare net/http hold", times(r.GrowthVsBaseline), "")
	f.add("relay goroutines per parked request", fmt.Sprintf("%.2f (baseline %.2f)", rl.GoPerRequest, r.Baseline.GoPerRequest),
		"the handler's own: "+verdict(rl.GoPerRequest <= r.Baseline.GoPerRequest+0.05))
	f.add("relay Go heap in use, requests parked", mib(int64(rl.HeapInuse))+" MiB", "")
	answered := codes(rl.Answered)
	if answered == "" {
		answered = "none"
	}
	f.add("answered before the cancel (should be none)", answered, "")
	f.add("parked requests removed as canceled", fmt.Sprintf("%.0f", rl.Canceled), "")
	f.add("lane depth back to 0 after the cancel", secs3(rl.DrainFor)+" s", "")
	f.add("relay goroutines idle / after the cancel", fmt.Sprintf("%.0f / %.0f", rl.IdleGo, rl.AfterGo), "")
	f.add("upstream requests during the run", strconv.FormatInt(rl.Upstream, 10), "1 (the slot holder)")
	f.add("RELAY_LANES records dropped (relay_lane_mirror_dropped_total)", fmt.Sprintf("%.0f", rl.MirrorDropped), "0")
	conns := "one connection each"
	if r.Options.H2C {
		conns = "HTTP/2 streams (h2c)"
	}
	title := fmt.Sprintf("Parked: %d concurrent requests, %s, behind max_concurrency 1 (upstream latency %v)",
		r.Options.Requests, conns, r.Options.Latency)
	return writeSections(w, r.Notes, section{title, t}, section{"Parked figures (relay)", f})
}

// perRequestKiB is b/held in KiB (the idle part included: it is small
// next to 10,000 requests).
func perRequestKiB(b int64, held int) string {
	if held == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(b)/float64(held)/1024)
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit (children
// inherit it) and returns the new soft limit.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("setrlimit: %w", err)
		}
	}
	return lim.Cur, nil
}

// fdReserve is what the bench and the relay need besides the held
// connections (listeners, NATS, the upstream, files).
const fdReserve = 300

// parkedMain parses the parked scenario's flags and runs it.
func parkedMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("parked", stderr, &c)
	n := fs.Int("n", 10000, "requests to park at once, one connection each (capped by RLIMIT_NOFILE)")
	rate := fs.Int("open-rate", 2000, "connections opened per second")
	latency := fs.Duration("latency", 10*time.Minute, "upstream latency while the requests are parked")
	settle := fs.Duration("settle", 2*time.Second, "how long RSS is sampled once every request is held")
	timeout := fs.Duration("timeout", 60*time.Second, "bound on each wait (all parked, all gone)")
	pprofDir := fs.String("pprof", "", "save the relay's goroutine and heap profiles into `DIR`")
	h2c := fs.Bool("h2c", false, "hold the requests as HTTP/2 streams without TLS, many to a connection")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	o := parkedOptions{
		Requests: quickDefault(&c, "n", *n, 500),
		OpenRate: *rate,
		Latency:  *latency,
		Settle:   quickDefault(&c, "settle", *settle, 500*time.Millisecond),
		Timeout:  *timeout,
		Pprof:    *pprofDir,
		H2C:      *h2c,
	}
	if o.Requests <= 0 || o.OpenRate <= 0 || o.Timeout <= 0 {
		return errors.New("-n, -open-rate and -timeout must be positive")
	}
	rep := &parkedReport{header: newHeader("parked", args, c.quick)}
	nofile, err := raiseNoFile()
	if err != nil {
		return err
	}
	o.NoFile = nofile
	if most := int(nofile) - fdReserve; o.Requests > most {
		o.Requested, o.Requests = o.Requests, max(most, 1)
		rep.Notes = append(rep.Notes, fmt.Sprintf("RLIMIT_NOFILE hard limit %d: parked %d requests instead of %d", nofile, o.Requests, o.Requested))
		fmt.Fprintf(stderr, "parked: %s\n", rep.Notes[len(rep.Notes)-1])
	}
	rep.Options = o
	err = withLab(c.relay, func(l *lab) error {
		var err error
		if rep.Baseline, err = runParkedBaseline(ctx, l, o, stderr); err != nil {
			return err
		}
		rep.Relay, err = runParkedRelay(ctx, l, o, stderr)
		return err
	})
	if err != nil {
		return err
	}
	rep.GrowthVsBaseline = ratio(float64(rep.Relay.Growth), float64(rep.Baseline.Growth))
	return finish(&c, &rep.header, rep, rep.print, stdout)
}
