package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// The demo's key and a model it routes (configs/demo.yaml).
const (
	demoKey   = "relay-demo-key"
	demoModel = "claude-sonnet"
)

// demoAddrs are the loopback addresses configs/demo.yaml listens on (the
// relay, its admin API, NATS, the simulated upstream, which the providers'
// base_url also name) and its store directory: the demo scenario replaces
// each with a free port or a temporary directory, and leaves the rest of the
// file as it is.
var demoAddrs = []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:4222", "127.0.0.1:18790"}

const demoStoreDir = "./data/nats-demo"

// demoConfig returns the demo configuration src with its addresses replaced
// by the free ones in addrs (in the order of demoAddrs) and its store in
// storeDir. It fails when src lacks one of them, so the scenario cannot run
// silently on a stale picture of the file.
func demoConfig(src []byte, addrs []string, storeDir string) ([]byte, error) {
	if len(addrs) != len(demoAddrs) {
		return nil, fmt.Errorf("demo config: %d addresses for %d", len(addrs), len(demoAddrs))
	}
	out := src
	for i, old := range append(slices.Clone(demoAddrs), demoStoreDir) {
		if !bytes.Contains(out, []byte(old)) {
			return nil, fmt.Errorf("demo config: %q not found; update bench/demo.go", old)
		}
		repl := storeDir
		if i < len(addrs) {
			repl = addrs[i]
		}
		out = bytes.ReplaceAll(out, []byte(old), []byte(repl))
	}
	return out, nil
}

// demoOptions parameterises the demo scenario.
type demoOptions struct {
	Config   string        `json:"config"` // the demo configuration the relay runs
	Rates    []int         `json:"rates"`
	Duration time.Duration `json:"duration_ns"` // per rate
	Warmup   time.Duration `json:"warmup_ns"`   // at the first rate, unmeasured
	Pause    time.Duration `json:"pause_ns"`    // between rates
	// Conns is the closed-loop clients of the last run (0: none), which
	// measures the most the relay serves without the connection churn of
	// an open-loop load it cannot keep up with.
	Conns int `json:"closed_loop_conns"`
}

// demoRun is one open-loop run at one rate.
type demoRun struct {
	Rate  int `json:"rate"`  // 0 for the closed-loop run
	Conns int `json:"conns"` // closed-loop clients, or 0
	// Sent is the arrivals per second the load generator achieved (below
	// Rate when it could not keep up).
	Sent float64 `json:"sent_rps"`
	// Throughput is the successful answers per second, from the first
	// arrival to the last answer.
	Throughput float64        `json:"throughput_rps"`
	Latency    latencySummary `json:"latency"`
	// RelayCores is the relay process's CPU time (the simulated upstream
	// included: it runs inside the relay) over the run's wall time.
	RelayCores float64 `json:"relay_cpu_cores"`
	// RelayCPUPerOK is the relay's CPU time per successful answer.
	RelayCPUPerOK time.Duration `json:"relay_cpu_per_ok_ns"`
	// ClientCores is the load generator's (this process's) CPU time over
	// the run's wall time.
	ClientCores float64 `json:"client_cpu_cores"`
	// Parked counts the answers the relay parked on a lane first
	// (x-relay-queue-ms > 0).
	Parked    int    `json:"parked"`
	LoadAfter string `json:"loadavg_after"`
}

// demoReport is the JSON report of the demo scenario.
type demoReport struct {
	header
	Options demoOptions `json:"options"`
	Runs    []demoRun   `json:"runs"`
}

// runDemo starts the relay on the demo configuration and offers it each
// rate in turn, then o.Conns closed-loop clients.
func runDemo(ctx context.Context, l *lab, o demoOptions, rep *demoReport, log io.Writer) error {
	src, err := os.ReadFile(o.Config)
	if err != nil {
		return fmt.Errorf("read demo config: %w", err)
	}
	addrs := make([]string, len(demoAddrs))
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return err
		}
	}
	cfg, err := demoConfig(src, addrs, l.path("nats"))
	if err != nil {
		return err
	}
	path := l.path("demo.yaml")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return fmt.Errorf("write demo config: %w", err)
	}
	bin, err := l.relay(ctx)
	if err != nil {
		return err
	}
	relay, err := l.start(ctx, "relay", addrs[0], "/readyz", syscall.SIGTERM, bin, "serve", "--config", path)
	if err != nil {
		return err
	}
	req := demoRequest(relay.URL())
	if o.Warmup > 0 && len(o.Rates) > 0 {
		fmt.Fprintf(log, "demo: warm-up at %d req/s for %v\n", o.Rates[0], o.Warmup)
		if _, err := attack(ctx, "warmup", req, shape{Rate: o.Rates[0], Duration: o.Warmup, Timeout: 10 * time.Second}); err != nil {
			return err
		}
	}
	for i, rate := range o.Rates {
		if i > 0 {
			sleep(ctx, o.Pause)
		}
		fmt.Fprintf(log, "demo: %d req/s for %v\n", rate, o.Duration)
		run, err := demoMeasure(ctx, relay, req, shape{Rate: rate, Duration: o.Duration, Timeout: 10 * time.Second})
		if err != nil {
			return err
		}
		rep.Runs = append(rep.Runs, run)
	}
	if o.Conns > 0 {
		sleep(ctx, o.Pause)
		fmt.Fprintf(log, "demo: %d closed-loop clients for %v\n", o.Conns, o.Duration)
		run, err := demoMeasure(ctx, relay, req, shape{Workers: o.Conns, Duration: o.Duration, MaxRequests: 1 << 20, Timeout: 10 * time.Second})
		if err != nil {
			return err
		}
		rep.Runs = append(rep.Runs, run)
	}
	return nil
}

// demoMeasure offers req to relay in shape s and measures the run.
func demoMeasure(ctx context.Context, relay *child, req request, s shape) (demoRun, error) {
	relay0, err := treeUsage(relay.PID())
	if err != nil {
		return demoRun{}, fmt.Errorf("relay CPU: %w", err)
	}
	self0, err := treeUsage(os.Getpid())
	if err != nil {
		return demoRun{}, fmt.Errorf("bench CPU: %w", err)
	}
	name := fmt.Sprint("demo-", s.Rate)
	if s.Rate <= 0 {
		name = fmt.Sprint("demo-closed-", s.Workers)
	}
	samples, err := attack(ctx, name, req, s)
	if err != nil {
		return demoRun{}, err
	}
	relay1, err := treeUsage(relay.PID())
	if err != nil {
		return demoRun{}, fmt.Errorf("relay CPU: %w", err)
	}
	self1, err := treeUsage(os.Getpid())
	if err != nil {
		return demoRun{}, fmt.Errorf("bench CPU: %w", err)
	}
	run := demoRun{Rate: s.Rate, Latency: summarize(samples), LoadAfter: loadAvg()}
	if s.Rate <= 0 {
		run.Conns = s.Workers
	}
	run.Sent = float64(len(samples)) / s.Duration.Seconds()
	var end time.Duration
	for _, x := range samples {
		end = max(end, x.At+x.Latency)
		if x.Queue > 0 {
			run.Parked++
		}
	}
	if end > 0 {
		run.Throughput = float64(run.Latency.OK) / end.Seconds()
	}
	if wall := relay1.At.Sub(relay0.At); wall > 0 {
		run.RelayCores = float64(relay1.CPU-relay0.CPU) / float64(wall)
		run.ClientCores = float64(self1.CPU-self0.CPU) / float64(self1.At.Sub(self0.At))
	}
	if run.Latency.OK > 0 {
		run.RelayCPUPerOK = (relay1.CPU - relay0.CPU) / time.Duration(run.Latency.OK)
	}
	return run, nil
}

// demoRequest is the non-streaming Anthropic request the demo scenario
// sends to the relay at baseURL, with the demo key.
func demoRequest(baseURL string) request {
	h := http.Header{}
	h.Set("x-api-key", demoKey)
	h.Set("anthropic-version", "2023-06-01")
	h.Set("content-type", "application/json")
	body := `{"model":"` + demoModel + `","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}`
	return request{URL: baseURL + "/v1/messages", Header: h, Body: []byte(body)}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// print writes the demo table.
func (r *demoReport) print(w io.Writer) error {
	t := newTable("offered", "sent req/s", "served req/s", "ok", "errors", "parked", "p50 ms", "p99 ms", "max ms",
		"relay CPU cores", "relay CPU ms/ok", "client CPU cores", "codes", "load after")
	for _, x := range r.Runs {
		offered := strconv.Itoa(x.Rate) + " req/s"
		if x.Conns > 0 {
			offered = strconv.Itoa(x.Conns) + " clients"
		}
		t.add(offered, fmt.Sprintf("%.0f", x.Sent), fmt.Sprintf("%.0f", x.Throughput),
			strconv.Itoa(x.Latency.OK), pct(x.Latency.ErrorRatio), strconv.Itoa(x.Parked), ms(x.Latency.P50), ms(x.Latency.P99), ms(x.Latency.Max),
			fmt.Sprintf("%.2f", x.RelayCores), ms(x.RelayCPUPerOK), fmt.Sprintf("%.2f", x.ClientCores), codes(x.Latency.Codes), x.LoadAfter)
	}
	return writeSections(w, r.Notes, section{fmt.Sprintf("The demo (%s) under open-loop load, then closed-loop clients: non-streaming Anthropic requests for %s with the demo key, %v per run",
		filepath.Base(r.Options.Config), demoModel, r.Options.Duration), t})
}

// demoMain parses the demo scenario's flags and runs it.
func demoMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("demo", stderr, &c)
	rates := fs.String("rates", "500,1000,2000,4000", "comma-separated arrival `rates` (req/s)")
	duration := fs.Duration("duration", 5*time.Second, "load time per rate")
	conns := fs.Int("conns", 64, "closed-loop clients of the last run (0: no such run)")
	config := fs.String("config", "", "demo configuration `file` (default configs/demo.yaml of the module)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	rs, err := parseInts(quickDefault(&c, "rates", *rates, "100,200"))
	if err != nil {
		return fmt.Errorf("-rates: %w", err)
	}
	if *config == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		*config = filepath.Join(root, "configs", "demo.yaml")
	}
	o := demoOptions{
		Config:   *config,
		Rates:    rs,
		Duration: quickDefault(&c, "duration", *duration, time.Second),
		Warmup:   quickDefault(&c, "duration", time.Second, 200*time.Millisecond),
		Pause:    quickDefault(&c, "duration", time.Second, 100*time.Millisecond),
		Conns:    quickDefault(&c, "conns", *conns, 8),
	}
	rep := &demoReport{header: newHeader("demo", args, c.quick), Options: o}
	rep.Notes = append(rep.Notes, "the load generator runs on the same machine as the relay (and the simulated upstream inside it), sharing its cores")
	err = withLab(c.relay, func(l *lab) error { return runDemo(ctx, l, o, rep, stderr) })
	if err != nil {
		return err
	}
	return finish(&c, &rep.header, rep, rep.print, stdout)
}
