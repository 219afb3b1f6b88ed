// Command bench measures the relay against a simulated upstream, a bare
// httputil.ReverseProxy and nginx, all started by itself on loopback.
//
//	go run ./bench SCENARIO [-out FILE.json] [-quick] [flags]
//
// Load is open loop (fixed arrival rates, generated with vegeta), so a slow
// target cannot hide its queueing by slowing the client down. Every run is
// bounded in requests and in time and stops by itself. The simulated upstream
// and the proxies run as separate processes (the bench binary re-executed with
// the hidden subcommands _upstream, _proxy and _hold, nginx, and the relay built from
// ./cmd/relay), so the CPU time and memory of each can be read from /proc.
// They run in their own process groups and are stopped when the bench exits,
// Ctrl-C included. See docs/BENCHMARKS.md for the figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const usage = `usage: go run ./bench SCENARIO [-out FILE.json] [-quick] [flags]

scenarios:
  overhead   latency, CPU per request, RSS and throughput ceiling: direct to the
             upstream vs a bare httputil.ReverseProxy vs nginx vs the relay
  burst      a burst at 10x an upstream's hard rate limit: upstream 429s, client
             errors, queue wait and lane depth, vs the same burst sent direct
  priority   batch traffic saturates a provider, interactive traffic joins:
             each lane's wait and the batch lane's share of dispatches
  failover   two upstreams behind the relay, one fails mid-run: client error
             rate and time until the relay stops sending to it
  ramp       Locust-like ramp of closed-loop users with think time: error rate,
             latency, relay CPU and RSS growth
  jobs       async jobs: submit throughput and latency, end-to-end completion,
             signed callbacks and NATS results, vs the same number of
             synchronous requests; then relay RSS with 100,000 jobs queued
  parked     10,000 synchronous requests parked on a lane, one connection
             each: relay RSS growth and goroutines, vs a bare net/http server
             holding as many; then every client cancels
  cluster    three relays clustering their embedded NATS (R3): submit
             throughput vs one relay; then jobs while a relay and later
             another node are killed: lost, answered-error-but-ran, ran
             twice, recovery time
  cluster-limits
             one upstream with a hard limit of 10 req/s, a provider with rpm
             540 and max_concurrency 4, driven at 30 req/s through one relay,
             then three relays on one cluster: upstream calls and 429s,
             client 200s and errors, queue wait per lane, upstream
             concurrency, each relay's lease share over time
  demo       the relay on configs/demo.yaml (ports and store moved), offered
             non-streaming requests at 500 to 4000 req/s, then 64
             closed-loop clients: rate sent and served, p50/p99, errors,
             relay CPU per request and the load average

Run "go run ./bench SCENARIO -h" for a scenario's flags.
`

// errUsage reports a command line that names no known scenario.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp), errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run dispatches to a scenario or a hidden subcommand. Tables go to stdout,
// progress to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	rest := args[1:]
	switch args[0] {
	case "overhead":
		return overheadMain(ctx, rest, stdout, stderr)
	case "burst":
		return burstMain(ctx, rest, stdout, stderr)
	case "priority":
		return priorityMain(ctx, rest, stdout, stderr)
	case "failover":
		return failoverMain(ctx, rest, stdout, stderr)
	case "ramp":
		return rampMain(ctx, rest, stdout, stderr)
	case "jobs":
		return jobsMain(ctx, rest, stdout, stderr)
	case "parked":
		return parkedMain(ctx, rest, stdout, stderr)
	case "cluster":
		return clusterMain(ctx, rest, stdout, stderr)
	case "cluster-limits":
		return limitsMain(ctx, rest, stdout, stderr)
	case "demo":
		return demoMain(ctx, rest, stdout, stderr)
	case "_upstream":
		return runUpstream(ctx, rest)
	case "_proxy":
		return runProxy(ctx, rest)
	case "_hold":
		return runHold(ctx, rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "unknown scenario %q\n\n%s", args[0], usage)
		return errUsage
	}
}

// common holds the flags every scenario takes.
type common struct {
	out   string
	quick bool
	relay string
	set   map[string]bool // flags given on the command line
}

// newFlagSet returns a flag set for scenario with the common flags.
func newFlagSet(scenario string, stderr io.Writer, c *common) *flag.FlagSet {
	fs := flag.NewFlagSet(scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.out, "out", "", "write the JSON report to `FILE`")
	fs.BoolVar(&c.quick, "quick", false, "a few seconds in all, for CI smoke tests (figures are not meaningful)")
	fs.StringVar(&c.relay, "relay", "", "use this relay `binary` instead of building ./cmd/relay")
	return fs
}

// parse parses args and records which flags were given, so -quick changes
// only the defaults.
func (c *common) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	c.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	return nil
}

// quickDefault returns quick when -quick is on and flag name was not given,
// else full.
func quickDefault[T any](c *common, name string, full, quick T) T {
	if c.quick && !c.set[name] {
		return quick
	}
	return full
}

// newHeader starts a report's header.
func newHeader(scenario string, args []string, quick bool) header {
	var notes []string
	if quick {
		notes = append(notes, "-quick: a smoke run; its figures and goal verdicts mean nothing")
	}
	return header{
		Notes:      notes,
		LoadBefore: loadAvg(),
		Scenario:   scenario,
		Command:    strings.TrimSpace("go run ./bench " + scenario + " " + strings.Join(args, " ")),
		Started:    time.Now().UTC().Truncate(time.Second),
		Quick:      quick,
		Machine:    readMachine(),
	}
}

// withLab runs fn with a fresh lab and always closes it.
func withLab(relayBin string, fn func(*lab) error) error {
	l, err := newLab(relayBin)
	if err != nil {
		return err
	}
	err = fn(l)
	if cerr := l.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("stop children: %w", cerr))
	}
	return err
}

// finish prints the tables and writes the JSON report when -out was given.
func finish(c *common, h *header, rep any, print func(io.Writer) error, stdout io.Writer) error {
	h.Elapsed = time.Since(h.Started).Round(time.Second).Seconds()
	h.LoadAfter = loadAvg()
	fmt.Fprintf(stdout, "\n## %s (%s, %d cores, %s; load average %s before, %s after)\n",
		h.Scenario, h.Machine.CPU, h.Machine.Cores, h.Machine.Go, h.LoadBefore, h.LoadAfter)
	if err := print(stdout); err != nil {
		return fmt.Errorf("print report: %w", err)
	}
	if c.out == "" {
		return nil
	}
	if err := writeJSON(c.out, rep); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nreport written to %s\n", c.out)
	return nil
}
