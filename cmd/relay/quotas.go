package main

// This file wires the keys' limits and budgets (gateway.Quotas): the
// budgets' shared state in the KV bucket RELAY_BUDGETS, and the number of
// live relays the keys' limits are divided by.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/budgets"
	"github.com/relaygw/relay/workers/keylimits"
)

// relayCountEvery is how often the live relays are counted.
const relayCountEvery = 2 * time.Second

// openQuotas declares RELAY_BUDGETS (within ctx) and returns the Quotas,
// with what runs them (the ledger's writes, the relay count) started;
// stop ends them and gives the unused budget chunks back.
func openQuotas(ctx context.Context, js jetstream.JetStream, decl *assets.Declarer, reg prometheus.Registerer, log *slog.Logger) (*gateway.Quotas, func(), error) {
	kv, err := decl.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: budgets.Bucket, History: 1,
		Storage: jetstream.FileStorage, Description: "relay: keys' budgets (spent, and the chunks relays hold) per period"}, false)
	if err != nil {
		return nil, nil, fmt.Errorf("budgets bucket: %w", err)
	}
	ledger := budgets.New(budgets.Options{Store: budgets.KVStore{KV: kv}, Registry: reg, Logger: log})
	var relays atomic.Int64
	relays.Store(1)
	q := &gateway.Quotas{
		Limits:  keylimits.New(keylimits.Options{Relays: func() int { return int(relays.Load()) }}),
		Budgets: ledger,
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		ledger.Run(rctx)
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		countRelays(rctx, js, &relays)
	}()
	return q, func() { cancel(); <-done; <-done }, nil
}

// countRelays keeps n at the number of live relays (the job executors'
// heartbeats in RELAY_EXECUTORS, one per relay), at least 1, until ctx
// ends. On an error n keeps its last value.
func countRelays(ctx context.Context, js jetstream.JetStream, n *atomic.Int64) {
	t := time.NewTicker(relayCountEvery)
	defer t.Stop()
	for {
		if c, err := liveRelays(ctx, js); err == nil {
			n.Store(int64(max(c, 1)))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func liveRelays(ctx context.Context, js jetstream.JetStream) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, relayCountEvery)
	defer cancel()
	kv, err := js.KeyValue(cctx, jobs.ExecutorsBucket)
	if err != nil {
		return 0, fmt.Errorf("executors bucket: %w", err)
	}
	lister, err := kv.ListKeys(cctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("list executors: %w", err)
	}
	c := 0
	for range lister.Keys() {
		c++
	}
	return c, nil
}
