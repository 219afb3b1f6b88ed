// This file owns the seam between the lanes and the router: how a request
// parked on a lane (a synchronous one, or a job's) takes capacity.

package gateway

import (
	"time"

	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/workers"
)

var _ lanes.Grant = (*workers.Grant)(nil)

// admitFunc adapts a's admission of req to the lanes' AdmitFunc: the
// grant (a *workers.Grant), or the earliest time a refusing provider
// named.
func admitFunc(a workers.Admitter, req *workers.Request) lanes.AdmitFunc {
	return func() (lanes.Grant, time.Time, bool) {
		g, retryAt, ok := workers.TryAdmit(a, req)
		if !ok {
			return nil, retryAt, false
		}
		return g, retryAt, true
	}
}
