package workers_test

import (
	"cmp"
	"testing"

	"go.uber.org/goleak"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newRouter is workers.NewRouter with the configuration's default retry
// settings where o sets none: the router has no defaults of its own.
func newRouter(o workers.RouterOptions) (*workers.Router, error) {
	d := configs.Default().Retry
	o.MaxAttempts = cmp.Or(o.MaxAttempts, d.MaxAttempts)
	o.RetryRatio, o.RetryFloor = cmp.Or(o.RetryRatio, d.BudgetRatio), cmp.Or(o.RetryFloor, d.BudgetFloor)
	return workers.NewRouter(o)
}

// newProvider is workers.NewProvider with the configuration's default
// timeouts where o sets none: the provider has no defaults of its own.
func newProvider(o workers.ProviderOptions) (*workers.HTTPProvider, error) {
	d := configs.DefaultProvider()
	o.Timeout = cmp.Or(o.Timeout, d.Timeout.Std())
	o.FirstByteTimeout = cmp.Or(o.FirstByteTimeout, d.FirstByteTimeout.Std())
	return workers.NewProvider(o)
}

// newActor is actor.New with the configuration's default breaker
// settings where o sets none: the actor has no defaults of its own.
func newActor(o actor.Options) *actor.Actor {
	d := configs.DefaultBreaker()
	b := &o.Breaker
	b.FailureRatio, b.MinRequests = cmp.Or(b.FailureRatio, d.FailureRatio), cmp.Or(b.MinRequests, d.MinRequests)
	b.Window, b.OpenFor = cmp.Or(b.Window, d.Window.Std()), cmp.Or(b.OpenFor, d.OpenFor.Std())
	return actor.New(o)
}
