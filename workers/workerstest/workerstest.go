// Package workerstest builds workers' parts for tests, taking the
// configuration's defaults (configs owns every default) for the settings
// a test leaves zero: the workers packages have no defaults of their own.
package workerstest

import (
	"cmp"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
)

// Actor is actor.New with configs.DefaultBreaker's settings where o's
// breaker sets none.
func Actor(o actor.Options) *actor.Actor {
	d := configs.DefaultBreaker()
	b := &o.Breaker
	b.FailureRatio, b.MinRequests = cmp.Or(b.FailureRatio, d.FailureRatio), cmp.Or(b.MinRequests, d.MinRequests)
	b.Window, b.OpenFor = cmp.Or(b.Window, d.Window.Std()), cmp.Or(b.OpenFor, d.OpenFor.Std())
	return actor.New(o)
}

// Router is workers.NewRouter with configs.Default's retry settings where
// o sets none.
func Router(o workers.RouterOptions) (*workers.Router, error) {
	d := configs.Default().Retry
	o.MaxAttempts = cmp.Or(o.MaxAttempts, d.MaxAttempts)
	o.RetryRatio, o.RetryFloor = cmp.Or(o.RetryRatio, d.BudgetRatio), cmp.Or(o.RetryFloor, d.BudgetFloor)
	return workers.NewRouter(o)
}

// Provider is workers.NewProvider with configs.DefaultProvider's timeouts
// where o sets none.
func Provider(o workers.ProviderOptions) (*workers.HTTPProvider, error) {
	d := configs.DefaultProvider()
	o.Timeout = cmp.Or(o.Timeout, d.Timeout.Std())
	o.FirstByteTimeout = cmp.Or(o.FirstByteTimeout, d.FirstByteTimeout.Std())
	return workers.NewProvider(o)
}
