package gateway_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/workers/budgets"
	"github.com/relaygw/relay/workers/keylimits"
	"github.com/relaygw/relay/workers/simupstream"
)

// benchmarkProxy measures one request through the relay to a simulated
// upstream, both on loopback in this process, with a keep-alive client.
func benchmarkProxy(b *testing.B, stream bool, opts ...relayOption) {
	r := newRelayB(b, opts...)
	body := `{"model":"claude-sonnet","max_tokens":8,"messages":[{"role":"user","content":"hello"}]}`
	if stream {
		body = `{"model":"claude-sonnet","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/messages", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("x-api-key", canaryKey)
			req.Header.Set("anthropic-version", "2023-06-01")
			req.Header.Set("content-type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

func BenchmarkProxy(b *testing.B)       { benchmarkProxy(b, false) }
func BenchmarkProxyStream(b *testing.B) { benchmarkProxy(b, true) }

// BenchmarkProxyMetered is BenchmarkProxyStream with metering into a
// usage store on NATS (events and counters), priced: its cost over
// BenchmarkProxyStream is metering's.
func BenchmarkProxyMetered(b *testing.B) {
	benchmarkProxy(b, true, withMeter(testPrices))
}

// BenchmarkProxyKeyQuotas is BenchmarkProxy with the key's own limits
// and a USD budget (neither ever refuses), for the cost of the key's
// admission on the whole path.
func BenchmarkProxyKeyQuotas(b *testing.B) {
	k := teamA
	k.Limits = configs.KeyLimits{RPM: 1 << 30, InputTPM: 1 << 40, OutputTPM: 1 << 40, MaxConcurrency: 1 << 20}
	k.Budget = &configs.Budget{USD: 1e9, Period: configs.BudgetMonth}
	q := &gateway.Quotas{Limits: keylimits.New(keylimits.Options{}), Budgets: budgets.New(budgets.Options{})}
	benchmarkProxy(b, false, withKeys(k), withQuotas(q, budgetPrices))
}

// BenchmarkBareProxy is the baseline for BenchmarkProxy: a bare
// httputil.ReverseProxy in front of the same simulated upstream.
func BenchmarkBareProxy(b *testing.B) {
	sim := simupstream.New(simupstream.Options{})
	up := httptest.NewServer(sim.Handler())
	defer func() { _ = sim.Close(); up.Close() }()
	target, err := url.Parse(up.URL)
	if err != nil {
		b.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	front := httptest.NewServer(rp)
	defer front.Close()
	body := `{"model":"claude-sonnet","max_tokens":8,"messages":[{"role":"user","content":"hello"}]}`
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequest(http.MethodPost, front.URL+"/v1/messages", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("content-type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
