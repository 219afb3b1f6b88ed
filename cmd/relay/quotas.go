package main

// This file wires the keys' limits and budgets (gateway.Quotas): the
// budgets' shared state in the KV bucket RELAY_BUDGETS. The keys' limits
// are leased for the cluster with the providers' (leases.go).

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/workers/budgets"
)

// openBudgets declares RELAY_BUDGETS (within ctx) and returns the keys'
// budgets, with the ledger's writes started; stop ends them and gives the
// unused budget chunks back.
func openBudgets(ctx context.Context, decl *assets.Declarer, reg prometheus.Registerer, log *slog.Logger) (*budgets.Ledger, func(), error) {
	kv, err := decl.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: budgets.Bucket, History: 1,
		Storage: jetstream.FileStorage, Description: "relay: keys' budgets (spent, and the chunks relays hold) per period"}, false)
	if err != nil {
		return nil, nil, fmt.Errorf("budgets bucket: %w", err)
	}
	ledger := budgets.New(budgets.Options{Store: budgets.KVStore{KV: kv}, Registry: reg, Logger: log})
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ledger.Run(rctx)
	}()
	return ledger, func() { cancel(); <-done }, nil
}
