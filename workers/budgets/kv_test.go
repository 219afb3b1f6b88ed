package budgets_test

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/workers/budgets"
)

func jetstreamConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: budgets.Bucket, History: 1}
}
