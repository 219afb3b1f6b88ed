package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"time"

	"github.com/relaygw/relay/workers/simupstream"
)

// runUpstream is the hidden subcommand "_upstream -listen ADDR [-latency D]
// [-token-interval D] [-rps N] [-per-second N] [-per-minute N]
// [-max-concurrency N]": a simulated upstream as its own process, until
// ctx ends. With -rps it answers 429 past N requests per second (a token
// bucket holding one second's worth), with -per-second / -per-minute past
// N requests in any sliding second / minute, with -max-concurrency past N
// in flight, like a provider's hard limits. Its control endpoints (POST
// /_sim/fault?f=, POST /_sim/latency?d=, GET /_sim/stats) let the bench
// change it from outside.
func runUpstream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("_upstream", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to serve on")
	latency := fs.Duration("latency", 0, "time to first byte")
	interval := fs.Duration("token-interval", 0, "pause between streamed deltas")
	rps := fs.Float64("rps", 0, "hard limit in requests per second (token bucket), 429 past it (0: none)")
	perSecond := fs.Int("per-second", 0, "hard limit of requests in any sliding second, 429 past it (0: none)")
	perMinute := fs.Int("per-minute", 0, "hard limit of requests in any sliding minute, 429 past it (0: none)")
	maxConc := fs.Int("max-concurrency", 0, "hard limit of requests in flight, 429 past it (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sim := simupstream.New(simupstream.Options{Latency: *latency, TokenInterval: *interval, RPS: *rps,
		PerSecond: *perSecond, PerMinute: *perMinute, MaxConcurrency: *maxConc})
	defer sim.Close()
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	if err := serve(ctx, srv, *listen); err != nil {
		return fmt.Errorf("_upstream: %w", err)
	}
	return nil
}
