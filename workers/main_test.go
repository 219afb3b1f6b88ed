package workers_test

import (
	"cmp"
	"testing"

	"go.uber.org/goleak"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers"
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
