package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// spendFunc is a SpendSource.
type spendFunc func(ctx context.Context, day time.Time) ([]KeySpend, error)

func (f spendFunc) KeySpend(ctx context.Context, day time.Time) ([]KeySpend, error) {
	return f(ctx, day)
}

// streamList is a StreamSource.
type streamList []Stream

func (s streamList) Streams(context.Context) ([]Stream, error) { return s, nil }

// partialStreams is a StreamSource that read some streams, then failed.
type partialStreams struct {
	read []Stream
	err  error
}

func (s partialStreams) Streams(context.Context) ([]Stream, error) { return s.read, s.err }

// TestStreamsPartial: streams read before a listing failed (one whose only
// replica was on a lost node is missing) are shown with their peers, and
// the failure is a problem; a listing that read nothing shows no section.
func TestStreamsPartial(t *testing.T) {
	missing := errors.New("list streams: stream information missing for RELAY_LANES")
	read := []Stream{{Name: "RELAY_JOBS", Replicas: 3, Leader: "n1",
		Peers: []Peer{{Name: "n2", Current: true}, {Name: "n3", Offline: true}}}}
	r, page := fetch(t, Sources{Streams: partialStreams{read: read, err: missing}})
	if r.NATS == nil || len(r.NATS.Streams) != 1 || len(r.NATS.Peers) != 3 {
		t.Fatalf("nats %+v; want the one stream read and its three peers", r.NATS)
	}
	if got := r.NATS.Peers[2]; got.Name != "n3" || got.State != PeerOffline {
		t.Errorf("peer %+v; want n3 offline", got)
	}
	if !strings.Contains(strings.Join(r.Problems, "\n"), "RELAY_LANES") || !strings.Contains(page, "RELAY_JOBS") {
		t.Errorf("problems %v, page shows RELAY_JOBS %v; want the failure as a problem and the stream shown",
			r.Problems, strings.Contains(page, "RELAY_JOBS"))
	}
	r, _ = fetch(t, Sources{Streams: partialStreams{err: missing}})
	if r.NATS != nil || len(r.Problems) == 0 {
		t.Errorf("nats %+v, problems %v; want no section and the problem", r.NATS, r.Problems)
	}
}

// fetch serves the status endpoints over src and returns /status.json
// decoded and the page's HTML.
func fetch(t *testing.T, src Sources) (Report, string) {
	t.Helper()
	var token atomic.Pointer[string]
	tok := testToken
	token.Store(&tok)
	mux := http.NewServeMux()
	NewHandler(NewCollector(src), NewAuth(func() string { return *token.Load() }), nil).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	auth := map[string]string{"Authorization": "Bearer " + testToken}
	_, body := send(t, http.MethodGet, srv.URL+"/status.json", auth, "")
	var r Report
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("decode: %v\n%s", err, body)
	}
	resp, page := send(t, http.MethodGet, srv.URL+"/status", auth, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /status: %d %s", resp.StatusCode, page)
	}
	return r, page
}

// TestKeysSection: the keys' usage today, busiest first, is in the JSON
// and the page lists the first five; without metering the section says
// so; a read error is shown.
func TestKeysSection(t *testing.T) {
	many := func(n int) []KeySpend {
		var out []KeySpend
		for i := range n {
			out = append(out, KeySpend{Key: fmt.Sprintf("k%d", i), Requests: uint64(i), SpendUSD: float64(i) / 100})
		}
		return out
	}
	tests := []struct {
		name     string
		spend    SpendSource
		wantKeys []string // nil: no keys section in the JSON
		wantErr  bool
		page     []string // in the page
		notPage  []string // not in the page
	}{
		{name: "no source", page: []string{"metering is off"}},
		{name: "metering off", spend: spendFunc(func(context.Context, time.Time) ([]KeySpend, error) {
			return nil, fmt.Errorf("usage: %w", ErrNoMetering)
		}), page: []string{"metering is off"}},
		{name: "no usage yet", spend: spendFunc(func(context.Context, time.Time) ([]KeySpend, error) { return nil, nil }),
			wantKeys: []string{}, page: []string{"no usage yet today"}},
		{name: "busiest first", spend: spendFunc(func(context.Context, time.Time) ([]KeySpend, error) {
			return []KeySpend{
				{Key: "cheap", Requests: 40, InputTokens: 900, CacheReadTokens: 100, OutputTokens: 12_345, SpendUSD: 0.00078},
				{Key: "team-a", Requests: 3, InputTokens: 2_000_000, OutputTokens: 50, SpendUSD: 2.5},
				{Key: "idle", Requests: 1},
				{Key: "tiny", Requests: 1, SpendUSD: 0.00003},
			}, nil
		}), wantKeys: []string{"team-a", "cheap", "tiny", "idle"},
			page: []string{"&lt;$0.0001", `id="key-team-a"`, "2.00M", "$2.50", `<td class="n">1000</td>`, "12.3k", "$0.0008"}},
		{name: "more than the page lists", spend: spendFunc(func(context.Context, time.Time) ([]KeySpend, error) { return many(7), nil }),
			wantKeys: []string{"k6", "k5", "k4", "k3", "k2", "k1", "k0"},
			page:     []string{`id="key-k6"`, `id="key-k2"`, "and 2 more keys"}, notPage: []string{`id="key-k1"`}},
		{name: "unreadable", spend: spendFunc(func(context.Context, time.Time) ([]KeySpend, error) {
			return nil, errors.New("list counters: timeout")
		}), wantKeys: []string{}, wantErr: true, page: []string{"usage counters not readable: list counters: timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, page := fetch(t, Sources{Spend: tt.spend})
			switch {
			case tt.wantKeys == nil && r.Keys != nil:
				t.Errorf("keys %+v; want no keys section", r.Keys)
			case tt.wantKeys != nil && r.Keys == nil:
				t.Errorf("no keys section; want %v", tt.wantKeys)
			case r.Keys != nil:
				var got []string
				for _, k := range r.Keys.Rows {
					got = append(got, k.Key)
				}
				if got == nil {
					got = []string{}
				}
				if !reflect.DeepEqual(got, tt.wantKeys) {
					t.Errorf("keys %v; want %v", got, tt.wantKeys)
				}
				if today := time.Now().UTC().Format("2006-01-02"); r.Keys.Day != today {
					t.Errorf("keys day %q; want %q", r.Keys.Day, today)
				}
				if (r.Keys.Error != "") != tt.wantErr {
					t.Errorf("keys error %q; want error %v", r.Keys.Error, tt.wantErr)
				}
			}
			for _, s := range tt.page {
				if !strings.Contains(page, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			for _, s := range tt.notPage {
				if strings.Contains(page, s) {
					t.Errorf("page has %q", s)
				}
			}
		})
	}
}

// TestClusterPeers: the servers of a cluster, summed over the streams'
// replica sets, each with its worst state; none when not clustered.
func TestClusterPeers(t *testing.T) {
	tests := []struct {
		name    string
		streams []Stream
		want    []ClusterPeer
		page    []string
	}{
		{name: "single server", streams: []Stream{{Name: "A", Replicas: 1}}},
		{name: "all current", streams: []Stream{
			{Name: "A", Replicas: 3, Leader: "n1", Peers: []Peer{{Name: "n2", Current: true, ActiveSeconds: 0.2}, {Name: "n3", Current: true}}},
			{Name: "B", Replicas: 3, Leader: "n2", Peers: []Peer{{Name: "n1", Current: true}, {Name: "n3", Current: true, ActiveSeconds: 0.5}}},
		}, want: []ClusterPeer{
			{Name: "n1", Leads: 1, State: PeerCurrent},
			{Name: "n2", Leads: 1, State: PeerCurrent, ActiveSeconds: 0.2},
			{Name: "n3", State: PeerCurrent, ActiveSeconds: 0.5},
		}, page: []string{`<span id="peer-n3" class="">n3 current</span>`, "n1 current, leads 1"}},
		{name: "one lagging, one offline", streams: []Stream{
			{Name: "A", Replicas: 3, Leader: "n1", Peers: []Peer{{Name: "n2", Lag: 7}, {Name: "n3", Offline: true, ActiveSeconds: 40}}},
			{Name: "B", Replicas: 3, Leader: "n1", Peers: []Peer{{Name: "n2", Current: true}, {Name: "n3", Current: true}}},
		}, want: []ClusterPeer{
			{Name: "n1", Leads: 2, State: PeerCurrent},
			{Name: "n2", State: PeerLagging, Lag: 7},
			{Name: "n3", State: PeerOffline, ActiveSeconds: 40},
		}, page: []string{`class="warnText">n2 lagging (lag 7)`, `class="bad">n3 offline`, `<span class="bad" title="n2 lag 7, n3 offline">2 not current</span>`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, page := fetch(t, Sources{Streams: streamList(tt.streams)})
			if r.NATS == nil || !reflect.DeepEqual(r.NATS.Peers, tt.want) {
				t.Fatalf("peers %+v; want %+v", r.NATS, tt.want)
			}
			if tt.want == nil && strings.Contains(page, "cluster peers") {
				t.Error("page shows cluster peers of a single server")
			}
			for _, s := range tt.page {
				if !strings.Contains(page, s) {
					t.Errorf("page lacks %q", s)
				}
			}
		})
	}
}
