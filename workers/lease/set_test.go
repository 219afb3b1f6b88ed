package lease_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaygw/relay/workers/lease"
)

// recorder is a Holder that records the grants applied.
type recorder struct {
	mu     sync.Mutex
	grants []lease.Grant
}

func (r *recorder) Demand() lease.Demand { return lease.Demand{} }
func (r *recorder) Apply(g lease.Grant) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.grants = append(r.grants, g)
}

// TestManagerSet: a resource added waits for its first round with no
// share, and has its series at zero; a resource removed gets its whole
// limits back and loses its series.
func TestManagerSet(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := lease.New(lease.Options{Metrics: lease.NewMetrics(reg)})
	h := &recorder{}
	m.Set([]lease.Resource{{Kind: "provider", Name: "p", Limits: lease.Limits{RPM: 60}, Holder: h}})
	if len(h.grants) != 1 || h.grants[0].Whole || h.grants[0].Share != (lease.Vector{}) {
		t.Fatalf("grants after Set: %+v; want one zero share", h.grants)
	}
	if n := testutil.CollectAndCount(reg, "relay_lease_share"); n != int(lease.NumKinds) {
		t.Fatalf("relay_lease_share series: %d; want %d", n, lease.NumKinds)
	}
	limits := `
# HELP relay_lease_limit A provider's configured limit that its relays' leases divide, in the limit's units; 0 for a kind with no limit (compare relay_lease_share with it).
# TYPE relay_lease_limit gauge
relay_lease_limit{limit="input_tpm",provider="p"} 0
relay_lease_limit{limit="max_concurrency",provider="p"} 0
relay_lease_limit{limit="output_tpm",provider="p"} 0
relay_lease_limit{limit="rpm",provider="p"} 60
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(limits), "relay_lease_limit"); err != nil {
		t.Fatal(err)
	}
	m.Set([]lease.Resource{{Kind: "provider", Name: "p", Limits: lease.Limits{RPM: 120}, Holder: h}})
	if len(h.grants) != 1 {
		t.Fatalf("a kept resource was applied again: %+v", h.grants)
	}
	m.Set(nil)
	if len(h.grants) != 2 || !h.grants[1].Whole {
		t.Fatalf("grants after removal: %+v; want Whole", h.grants)
	}
	for _, name := range []string{"relay_lease_share", "relay_lease_limit"} {
		if n := testutil.CollectAndCount(reg, name); n != 0 {
			t.Fatalf("%s series after removal: %d", name, n)
		}
	}
}
