package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/workerstest"
)

// policyState is a state serving route "claude" on a real router (no
// upstream is called), with lanes interactive (30s) and batch (1h), and
// keys: "all" may use both lanes and every route, defaulting to
// interactive; "narrow" may use interactive and route claude only;
// "none" may use no route.
func policyState(t *testing.T) *state {
	t.Helper()
	p, err := workerstest.Provider(workers.ProviderOptions{Name: "p", Format: workers.FormatAnthropic,
		BaseURL: "http://127.0.0.1:1", APIKey: "sk-none", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	router, err := workerstest.Router(workers.RouterOptions{Routes: []workers.RouteSpec{{Model: "claude",
		Targets: []workers.Target{{Provider: p, ProviderName: "p", Format: workers.FormatAnthropic, Model: "m",
			Weight: 1, Timeout: time.Second, Actor: workerstest.Actor(actor.Options{Name: "p"})}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return newState(Config{
		Dispatcher: router,
		Lanes:      []Lane{{Name: "interactive", MaxWait: 30 * time.Second}, {Name: "batch", MaxWait: time.Hour}},
		Keys: []Key{
			{Name: "all", SHA256: [32]byte{1}, DefaultLane: "interactive", Lanes: []string{"interactive", "batch"}, Routes: []string{"*"}},
			{Name: "narrow", SHA256: [32]byte{2}, DefaultLane: "interactive", Lanes: []string{"interactive"}, Routes: []string{"claude"}},
			{Name: "none", SHA256: [32]byte{3}, DefaultLane: "interactive", Lanes: []string{"interactive"}},
		},
	}, nil)
}

// TestAdmit decides requests of each kind: lane defaults, lane and model
// permissions, the wait's clamp, and the errors' wording per kind.
func TestAdmit(t *testing.T) {
	st := policyState(t)
	keys := map[string]*key{}
	for _, k := range st.keys {
		keys[k.Name] = k
	}
	const claude = `{"model":"claude","max_tokens":8,"messages":[]}`
	cases := []struct {
		name      string
		p         *policy
		key       string
		body      string
		lane      string
		maxWait   string
		wantLane  string
		wantWait  time.Duration
		wantRoute string
		status    int    // 0: admitted
		msg       string // the refusal's message
	}{
		{name: "sync default lane", p: &syncPolicy, key: "all", body: claude, wantLane: "interactive", wantWait: 30 * time.Second, wantRoute: "claude"},
		{name: "sync named lane", p: &syncPolicy, key: "all", body: claude, lane: "batch", wantLane: "batch", wantWait: time.Hour, wantRoute: "claude"},
		{name: "sync wait shortened", p: &syncPolicy, key: "all", body: claude, maxWait: "1.5", wantLane: "interactive", wantWait: 1500 * time.Millisecond, wantRoute: "claude"},
		{name: "sync wait never lengthened", p: &syncPolicy, key: "all", body: claude, maxWait: "1m", wantLane: "interactive", wantWait: 30 * time.Second, wantRoute: "claude"},
		{name: "sync bad wait", p: &syncPolicy, key: "all", body: claude, maxWait: "-1s", wantRoute: "claude", status: 400, msg: "x-relay-max-wait: must not be negative"},
		{name: "sync unknown lane", p: &syncPolicy, key: "all", body: claude, lane: "gold", wantRoute: "claude", status: 400, msg: `x-relay-lane: unknown lane "gold"`},
		{name: "sync lane not allowed", p: &syncPolicy, key: "narrow", body: claude, lane: "batch", wantRoute: "claude", status: 403, msg: `this key may not use lane "batch"`},
		{name: "sync model not allowed", p: &syncPolicy, key: "none", body: claude, wantRoute: "claude", status: 403, msg: `this key may not use model "claude"`},
		{name: "job lane defaults to the key's", p: &jobPolicy, key: "narrow", body: claude, wantLane: "interactive", wantWait: 30 * time.Second, wantRoute: "claude"},
		{name: "sync unknown model", p: &syncPolicy, key: "all", body: `{"model":"gpt-9"}`, status: 404, msg: `model "gpt-9" is not served by this relay`},
		{name: "sync no model", p: &syncPolicy, key: "all", body: `{"max_tokens":8}`, status: 400},
		{name: "sync not JSON", p: &syncPolicy, key: "all", body: `{`, status: 400},
		{name: "job default is batch", p: &jobPolicy, key: "all", body: claude, wantLane: "batch", wantWait: time.Hour, wantRoute: "claude"},
		{name: "job unknown lane", p: &jobPolicy, key: "all", body: claude, lane: "gold", wantRoute: "claude", status: 400, msg: `lane: unknown lane "gold"`},
		{name: "job stream refused", p: &jobPolicy, key: "all", body: `{"model":"claude","stream":true}`, status: 400, msg: "body: stream: true is not supported for jobs"},
		{name: "job body not JSON", p: &jobPolicy, key: "all", body: `[1]`, status: 400, msg: "body: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, aerr := st.admit(tc.p, keys[tc.key], []byte(tc.body), tc.lane, tc.maxWait)
			if d.route != tc.wantRoute {
				t.Errorf("route %q; want %q", d.route, tc.wantRoute)
			}
			if tc.status != 0 {
				if aerr == nil || aerr.status != tc.status || len(aerr.msg) < len(tc.msg) || aerr.msg[:len(tc.msg)] != tc.msg {
					t.Fatalf("answer %v; want %d %q", aerr, tc.status, tc.msg)
				}
				return
			}
			if aerr != nil {
				t.Fatalf("refused: %d %s", aerr.status, aerr.msg)
			}
			if d.lane.Name != tc.wantLane || d.lane.MaxWait != tc.wantWait || d.fields.Model != "claude" {
				t.Errorf("decision %+v; want lane %s waiting %v", d, tc.wantLane, tc.wantWait)
			}
		})
	}
}

// TestChooseLaneBatch: a batch goes to the batch lane when its key may
// use it, else to the key's default.
func TestChooseLaneBatch(t *testing.T) {
	st := policyState(t)
	for _, tc := range []struct{ key, want string }{{"all", "batch"}, {"narrow", "interactive"}} {
		t.Run(tc.key, func(t *testing.T) {
			var k *key
			for _, kk := range st.keys {
				if kk.Name == tc.key {
					k = kk
				}
			}
			lane, aerr := st.chooseLane(&batchPolicy, k, "", "")
			if aerr != nil || lane.Name != tc.want {
				t.Errorf("lane %q (%v); want %q", lane.Name, aerr, tc.want)
			}
		})
	}
}

// TestBatchLimits: a message batch is bounded by the configured
// MaxBatchRequests and MaxBatchBytes, and by Anthropic's limits when
// they are unset.
func TestBatchLimits(t *testing.T) {
	item := `{"custom_id":"a","params":{"model":"claude","max_tokens":8,"messages":[]}}`
	three := `{"requests":[` + item + `,` + item + `,` + item + `]}`
	for _, tc := range []struct {
		name      string
		cfg       Config
		wantReqs  int
		wantBytes int64
		wantErr   string
	}{
		{name: "defaults", wantReqs: jobs.DefaultMaxBatchRequests, wantBytes: MaxBatchBytes},
		{name: "configured", cfg: Config{MaxBatchRequests: 2, MaxBatchBytes: 1 << 20}, wantReqs: 2, wantBytes: 1 << 20,
			wantErr: "requests: at most 2 requests are allowed in a message batch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newState(tc.cfg, nil)
			if st.maxBatchRequests != tc.wantReqs || st.maxBatchBytes != tc.wantBytes {
				t.Fatalf("limits %d requests, %d bytes; want %d, %d", st.maxBatchRequests, st.maxBatchBytes, tc.wantReqs, tc.wantBytes)
			}
			items, _, aerr := decodeBatch(strings.NewReader(three), st)
			switch {
			case tc.wantErr == "" && (aerr != nil || len(items) != 3 || items[2].Model != "claude"):
				t.Errorf("items %+v (%v); want 3, their model peeked", items, aerr)
			case tc.wantErr != "" && (aerr == nil || aerr.status != 400 || aerr.msg != tc.wantErr):
				t.Errorf("answer %v; want 400 %q", aerr, tc.wantErr)
			}
		})
	}
}
