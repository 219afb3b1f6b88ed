package main

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/workers/callbacks"
	"gopkg.in/yaml.v3"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", durations(7), 0.99, 7 * time.Millisecond},
		{"p50 of 4 is the 2nd", durations(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p90 of 10 is the 9th", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.9, 9 * time.Millisecond},
		{"p99 of 10 is the max", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{"p100", durations(1, 2, 3), 1, 3 * time.Millisecond},
		{"tiny q is the min", durations(1, 2, 3), 0.0001, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.q); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v; want %v", tt.sorted, tt.q, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	samples := []sample{
		{Latency: 4 * time.Millisecond, Code: 200, OK: true},
		{Latency: 1 * time.Millisecond, Code: 200, OK: true},
		{Latency: 3 * time.Millisecond, Code: 500, Err: "500 Internal Server Error"},
		{Latency: 2 * time.Millisecond, Code: 0, Err: "EOF"},
		{Latency: 2 * time.Millisecond, Code: 0, Err: "EOF"},
	}
	s := summarize(samples)
	if s.Requests != 5 || s.OK != 2 {
		t.Errorf("summarize: requests, ok = %d, %d; want 5, 2", s.Requests, s.OK)
	}
	if math.Abs(s.SuccessRatio-0.4) > 1e-9 || math.Abs(s.ErrorRatio-0.6) > 1e-9 {
		t.Errorf("summarize: success, error = %v, %v; want 0.4, 0.6", s.SuccessRatio, s.ErrorRatio)
	}
	if s.P50 != 2*time.Millisecond || s.Max != 4*time.Millisecond || s.Mean != 2400*time.Microsecond {
		t.Errorf("summarize: p50, max, mean = %v, %v, %v; want 2ms, 4ms, 2.4ms", s.P50, s.Max, s.Mean)
	}
	if got, want := codes(s.Codes), "200:2 500:1 error:2"; got != want {
		t.Errorf("codes(summarize().Codes) = %q; want %q", got, want)
	}
	if want := []string{"500 Internal Server Error", "EOF"}; !slices.Equal(s.Errors, want) {
		t.Errorf("summarize: errors = %q; want %q", s.Errors, want)
	}
	if e := summarize(nil); e.Requests != 0 || e.SuccessRatio != 0 {
		t.Errorf("summarize(nil) = %+v; want zero", e)
	}
}

func TestSlope(t *testing.T) {
	tests := []struct {
		name string
		x, y []float64
		want float64
	}{
		{"line", []float64{0, 1, 2, 3}, []float64{10, 12, 14, 16}, 2},
		{"flat", []float64{0, 1, 2}, []float64{5, 5, 5}, 0},
		{"noisy", []float64{0, 1, 2, 3}, []float64{0, 2, 1, 3}, 0.8},
		{"one point", []float64{1}, []float64{1}, 0},
		{"same x", []float64{1, 1}, []float64{1, 2}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := slope(tt.x, tt.y); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("slope(%v, %v) = %v; want %v", tt.x, tt.y, got, tt.want)
			}
		})
	}
}

func TestRatio(t *testing.T) {
	tests := []struct {
		a, b float64
		want string
	}{
		{3, 2, "1.50x"},
		{1, 0, "n/a"},
		{1, -1, "n/a"},
		{-1, 2, "-0.50x"},
	}
	for _, tt := range tests {
		if got := times(ratio(tt.a, tt.b)); got != tt.want {
			t.Errorf("times(ratio(%v, %v)) = %q; want %q", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    procStat
		wantErr bool
	}{
		{
			name: "plain",
			data: "1234 (relay) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 100 1000 50 18446744073709551615",
			want: procStat{PPID: 1, UTime: 250, STime: 75},
		},
		{
			name: "command with spaces and parentheses",
			data: "99 (nginx: (worker) x) S 42 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 1 1",
			want: procStat{PPID: 42, UTime: 7, STime: 3},
		},
		{name: "no command", data: "1 relay S 1", wantErr: true},
		{name: "truncated", data: "1 (relay) S 1 2 3", wantErr: true},
		{name: "bad number", data: "1 (relay) S 1 1 1 0 -1 0 0 0 0 0 x 3 0 0 20 0 1 0 1 1 1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.data))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStat(%q) error = %v; want error %v", tt.data, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseStat(%q) = %+v; want %+v", tt.data, got, tt.want)
			}
		})
	}
	if got, want := (procStat{UTime: 250, STime: 75}).CPU(), 3250*time.Millisecond; got != want {
		t.Errorf("procStat{250, 75}.CPU() = %v; want %v", got, want)
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    int64
		wantErr bool
	}{
		{"present", "Name:\trelay\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t8\n", 12345 * 1024, false},
		{"absent", "Name:\tkthreadd\nThreads:\t1\n", 0, true},
		{"bad unit", "VmRSS:\t12 MB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmRSS([]byte(tt.data))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseVmRSS(%q) = %d, %v; want %d, error %v", tt.data, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestTreeUsageOfSelf(t *testing.T) {
	u, err := treeUsage(os.Getpid())
	if err != nil {
		t.Fatalf("treeUsage(self): %v", err)
	}
	if u.RSS <= 0 || u.CPU < 0 {
		t.Errorf("treeUsage(self) = %+v; want RSS > 0 and CPU >= 0", u)
	}
	if _, err := readStat(-1); err == nil {
		t.Error("readStat(-1) = nil error; want one")
	}
}

func TestRelayConfig(t *testing.T) {
	cfg := newRelayConfig("127.0.0.1:18080", "/tmp/nats", []string{"http://127.0.0.1:1", "http://127.0.0.1:2"},
		&relayBreaker{FailureRatio: 0.5, MinRequests: 10, Window: "10s", OpenFor: "45s"})
	data, err := cfg.YAML()
	if err != nil {
		t.Fatalf("YAML: %v", err)
	}
	var doc struct {
		Listen string `yaml:"listen"`
		NATS   struct {
			Listen *string `yaml:"listen"`
		} `yaml:"nats"`
		Providers []map[string]any `yaml:"providers"`
		Routes    []struct {
			Model   string           `yaml:"model"`
			Targets []map[string]any `yaml:"targets"`
		} `yaml:"routes"`
		Log map[string]string `yaml:"log"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("decode generated YAML: %v\n%s", err, data)
	}
	if doc.Listen != "127.0.0.1:18080" || doc.NATS.Listen == nil || *doc.NATS.Listen != "" || doc.Log["level"] != "warn" {
		t.Errorf("generated YAML listen/nats/log wrong:\n%s", data)
	}
	if len(doc.Providers) != 2 || doc.Providers[1]["name"] != "sim-b" || doc.Providers[1]["base_url"] != "http://127.0.0.1:2" ||
		doc.Providers[0]["type"] != "anthropic" || doc.Providers[0]["breaker"] == nil {
		t.Errorf("generated providers = %v; want sim-a and sim-b, anthropic, with breaker", doc.Providers)
	}
	if len(doc.Routes) != 1 || doc.Routes[0].Model != benchModel || len(doc.Routes[0].Targets) != 2 {
		t.Errorf("generated routes = %+v; want bench-model with 2 targets", doc.Routes)
	}
	// The relay's own parser must accept it (strict fields, validation).
	if _, err := configs.ParseWithEnv(data, nil); err != nil {
		t.Errorf("configs.ParseWithEnv(generated) = %v\n%s", err, data)
	}
	plain, err := newRelayConfig("127.0.0.1:18080", "/tmp/nats", []string{"http://127.0.0.1:1"}, nil).YAML()
	if err != nil {
		t.Fatalf("YAML: %v", err)
	}
	if strings.Contains(string(plain), "breaker") {
		t.Errorf("config without breaker mentions one:\n%s", plain)
	}
}

func TestRenderNginx(t *testing.T) {
	conf, err := renderNginx(nginxParams{Prefix: "/tmp/p", Listen: "127.0.0.1:8081", Upstream: "127.0.0.1:9000"})
	if err != nil {
		t.Fatalf("renderNginx: %v", err)
	}
	for _, want := range []string{"daemon off;", "listen 127.0.0.1:8081;", "server 127.0.0.1:9000;", "pid /tmp/p/nginx.pid;", "proxy_buffering off;"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("renderNginx: config lacks %q", want)
		}
	}
	if _, err := renderNginx(nginxParams{Prefix: "/tmp/p", Listen: "0.0.0.0:8081", Upstream: "127.0.0.1:9000"}); err == nil {
		t.Error("renderNginx(listen 0.0.0.0) = nil error; want one")
	}
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:80", true},
		{"127.3.2.1:80", true},
		{"[::1]:80", true},
		{"localhost:80", true},
		{"0.0.0.0:80", false},
		{"10.0.0.1:80", false},
		{":80", false},
		{"nonsense", false},
	}
	for _, tt := range tests {
		if err := checkLoopback(tt.addr); (err == nil) != tt.ok {
			t.Errorf("checkLoopback(%q) = %v; want ok %v", tt.addr, err, tt.ok)
		}
	}
}

func TestQuietFrom(t *testing.T) {
	ms := time.Millisecond
	counts := func(failing ...int64) []countSample {
		out := make([]countSample, len(failing))
		for i, f := range failing {
			out[i] = countSample{At: time.Duration(i) * 100 * ms, Failing: f}
		}
		return out
	}
	tests := []struct {
		name   string
		counts []countSample
		from   time.Duration
		quiet  time.Duration
		want   int
		wantOK bool
	}{
		{"stops after two samples", counts(5, 10, 15, 18, 18, 18, 18), 100 * ms, 300 * ms, 3, true},
		{"never stops", counts(1, 2, 3, 4, 5, 6), 0, 200 * ms, 0, false},
		{"quiet too short at the end", counts(1, 2, 3, 3), 0, 200 * ms, 0, false},
		{"quiet from the start", counts(7, 7, 7, 7), 100 * ms, 200 * ms, 1, true},
		{"quiet before from does not count", counts(1, 1, 1, 2, 3, 3, 3), 300 * ms, 200 * ms, 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := quietFrom(tt.counts, tt.from, tt.quiet)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("quietFrom(%v, %v, %v) = %d, %v; want %d, %v", tt.counts, tt.from, tt.quiet, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestFillFailover(t *testing.T) {
	ms := time.Millisecond
	samples := []sample{
		{At: 0, Latency: 10 * ms, OK: true, Code: 200},
		{At: 50 * ms, Latency: 10 * ms, OK: true, Code: 200},
		{At: 250 * ms, Latency: 20 * ms, OK: true, Code: 200},
		{At: 300 * ms, Latency: 20 * ms, Code: 500},
	}
	counts := []countSample{
		{At: 0, Healthy: 0, Failing: 0},
		{At: 100 * ms, Healthy: 3, Failing: 3},
		{At: 200 * ms, Healthy: 5, Failing: 6},
		{At: 300 * ms, Healthy: 8, Failing: 7},
		{At: 400 * ms, Healthy: 10, Failing: 7},
		{At: 500 * ms, Healthy: 12, Failing: 7},
	}
	var rep failoverReport
	fillFailover(&rep, samples, counts, 150*ms, 3, 200*ms)
	if rep.Before.Requests != 2 || rep.After.Requests != 2 || rep.After.ErrorRatio != 0.5 {
		t.Errorf("before/after = %d/%d requests, after errors %v; want 2/2, 0.5", rep.Before.Requests, rep.After.Requests, rep.After.ErrorRatio)
	}
	if rep.FailingShareBefore != 0.5 || rep.FailingAfterFault != 4 {
		t.Errorf("share before, after fault = %v, %d; want 0.5, 4", rep.FailingShareBefore, rep.FailingAfterFault)
	}
	if !rep.BreakerOpen || rep.TimeToOpen != 150*ms || rep.FailingUntilOpen != 4 {
		t.Errorf("open, time to open, until open = %v, %v, %d; want true, 150ms, 4", rep.BreakerOpen, rep.TimeToOpen, rep.FailingUntilOpen)
	}
	if got := times(rep.P50VsBefore); got != "2.00x" {
		t.Errorf("p50 after/before = %s; want 2.00x", got)
	}
}

func TestMaxConcurrentAndThroughput(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name    string
		samples []sample
		conc    int
		rps     float64
	}{
		{"none", nil, 0, 0},
		{"serial, touching", []sample{{At: 0, Latency: 100 * ms, OK: true}, {At: 100 * ms, Latency: 100 * ms, OK: true}}, 1, 10},
		{"overlap", []sample{{At: 0, Latency: 500 * ms, OK: true}, {At: 100 * ms, Latency: 100 * ms, OK: true},
			{At: 150 * ms, Latency: 100 * ms}, {At: 400 * ms, Latency: 100 * ms, OK: true}}, 3, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := maxConcurrent(tt.samples); got != tt.conc {
				t.Errorf("maxConcurrent = %d; want %d", got, tt.conc)
			}
			if got := throughput(tt.samples); math.Abs(got-tt.rps) > 1e-9 {
				t.Errorf("throughput = %v; want %v", got, tt.rps)
			}
		})
	}
}

func TestCompareRound(t *testing.T) {
	ms := time.Millisecond
	runs := []overheadRun{
		{Target: targetDirect, Latency: latencySummary{P50: 1 * ms}},
		{Target: targetBare, Latency: latencySummary{P50: 3 * ms}, CPUPerRequest: 100 * time.Microsecond},
		{Target: targetRelay, Latency: latencySummary{P50: 4 * ms}, CPUPerRequest: 150 * time.Microsecond},
	}
	compareRound(runs)
	if runs[2].AddedP50 != 3*ms || times(runs[2].AddedVsBare) != "1.50x" || times(runs[2].CPUVsBare) != "1.50x" {
		t.Errorf("compareRound: relay added %v (%s of bare), CPU %s of bare; want 3ms, 1.50x, 1.50x",
			runs[2].AddedP50, times(runs[2].AddedVsBare), times(runs[2].CPUVsBare))
	}
	if runs[0].AddedVsBare != nil {
		t.Errorf("compareRound: direct has a ratio to bare")
	}
}

func TestHoldUsage(t *testing.T) {
	mib := int64(1 << 20)
	points := []rampPoint{
		{At: 0, CPU: 0, RSS: 10 * mib}, // ramp, ignored
		{At: 60 * time.Second, CPU: 0, RSS: 20 * mib},
		{At: 90 * time.Second, CPU: 15 * time.Second, RSS: 25 * mib},
		{At: 120 * time.Second, CPU: 30 * time.Second, RSS: 30 * mib},
	}
	cpu, growth := holdUsage(points, 60*time.Second, 2)
	if math.Abs(cpu-25) > 1e-9 || math.Abs(growth-10) > 1e-9 {
		t.Errorf("holdUsage = %v%%, %v MiB/min; want 25%%, 10 MiB/min", cpu, growth)
	}
}

func TestScaledRamp(t *testing.T) {
	tests := []struct {
		f                  float64
		start, users       int
		hold, rampDuration time.Duration
	}{
		{1, 100, 3000, 5 * time.Minute, 58 * time.Second},
		{0.1, 10, 300, 30 * time.Second, 5800 * time.Millisecond},
		{0.0001, 1, 1, 30 * time.Millisecond, 0},
	}
	for _, tt := range tests {
		o := scaledRamp(tt.f)
		if o.StartUsers != tt.start || o.MaxUsers != tt.users || o.Hold != tt.hold || o.rampDuration() != tt.rampDuration {
			t.Errorf("scaledRamp(%v) = %d→%d users, hold %v, ramp %v; want %d→%d, %v, %v", tt.f,
				o.StartUsers, o.MaxUsers, o.Hold, o.rampDuration(), tt.start, tt.users, tt.hold, tt.rampDuration)
		}
	}
}

func TestParseInts(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"500,1000, 2000", []int{500, 1000, 2000}, false},
		{"200", []int{200}, false},
		{"0", nil, true},
		{"a,1", nil, true},
		{"", nil, true},
	}
	for _, tt := range tests {
		got, err := parseInts(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseInts(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n"
	if got, want := cpuModel([]byte(info)), "Intel(R) Xeon(R) Processor"; got != want {
		t.Errorf("cpuModel = %q; want %q", got, want)
	}
	if got := cpuModel(nil); got != "unknown" {
		t.Errorf("cpuModel(nil) = %q; want unknown", got)
	}
}

func TestTable(t *testing.T) {
	tb := newTable("a", "long header")
	tb.add("wide cell", "x")
	tb.add("y")
	var b strings.Builder
	if err := tb.write(&b); err != nil {
		t.Fatalf("write: %v", err)
	}
	want := "| a         | long header |\n| --------- | ----------- |\n| wide cell | x           |\n| y         |             |\n"
	if b.String() != want {
		t.Errorf("table =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestFindUp(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := findUp(deep, "go.mod"); err != nil || got != root {
		t.Errorf("findUp(%q) = %q, %v; want %q", deep, got, err, root)
	}
	if _, err := findUp(deep, "no-such-file-here.mod"); err == nil {
		t.Error("findUp(missing) = nil error; want one")
	}
}

// TestAttack runs a short open-loop and a closed-loop attack against an
// httptest server, checking counts and the stream completeness rule.
func TestAttack(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("x-api-key") != benchKey {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if strings.Contains(r.URL.RawQuery, "cut") {
			_, _ = io.WriteString(w, "event: message_start\n\n")
			return
		}
		_, _ = io.WriteString(w, "event: message_stop\ndata: {}\n\n")
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name   string
		query  string
		shape  shape
		n, ok  int
		exactN bool
	}{
		{"open loop, bounded by count", "", shape{Rate: 200, Duration: 5 * time.Second, MaxRequests: 20}, 20, 20, true},
		{"open loop, bounded by time", "", shape{Rate: 100, Duration: 200 * time.Millisecond}, 20, 20, false},
		{"closed loop", "", shape{Workers: 4, Duration: 5 * time.Second, MaxRequests: 50}, 50, 50, true},
		{"cut streams fail", "?cut", shape{Rate: 100, Duration: time.Second, MaxRequests: 10}, 10, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := messagesRequest(srv.URL, true)
			r.URL += tt.query
			samples, err := attack(context.Background(), tt.name, r, tt.shape)
			if err != nil {
				t.Fatalf("attack: %v", err)
			}
			s := summarize(samples)
			if tt.exactN && (s.Requests != tt.n || s.OK != tt.ok) {
				t.Errorf("attack(%+v) = %d requests, %d ok; want %d, %d", tt.shape, s.Requests, s.OK, tt.n, tt.ok)
			}
			if !tt.exactN && (s.Requests < tt.n-3 || s.Requests > tt.n+1 || s.OK != s.Requests) {
				t.Errorf("attack(%+v) = %d requests, %d ok; want about %d, all ok", tt.shape, s.Requests, s.OK, tt.n)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := attack(ctx, "canceled", messagesRequest(srv.URL, false), shape{Rate: 10, Duration: time.Second}); err == nil {
		t.Error("attack(canceled ctx) = nil error; want one")
	}
}

func TestPromValues(t *testing.T) {
	text := []byte(`# HELP relay_lane_depth Requests parked on a lane now.
# TYPE relay_lane_depth gauge
relay_lane_depth{lane="batch"} 12
relay_lane_depth{lane="interactive"} 3
relay_lane_depth_other{lane="batch"} 99
relay_lane_dispatched_total{lane="batch"} 1.5e+03
relay_lane_rejected_total{lane="batch",reason="full"} 2
relay_lane_rejected_total{reason="expired",lane="batch"} 1
relay_inflight_requests 7
`)
	tests := []struct {
		metric, label string
		want          map[string]float64
	}{
		{"relay_lane_depth", "lane", map[string]float64{"batch": 12, "interactive": 3}},
		{"relay_lane_dispatched_total", "lane", map[string]float64{"batch": 1500}},
		{"relay_lane_rejected_total", "lane", map[string]float64{"batch": 3}},
		{"relay_lane_rejected_total", "reason", map[string]float64{"full": 2, "expired": 1}},
		{"relay_inflight_requests", "lane", map[string]float64{"": 7}},
		{"relay_missing", "lane", map[string]float64{}},
	}
	for _, tt := range tests {
		got := promValues(text, tt.metric, tt.label)
		if len(got) != len(tt.want) {
			t.Errorf("promValues(%s, %s) = %v; want %v", tt.metric, tt.label, got, tt.want)
			continue
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("promValues(%s, %s) = %v; want %v", tt.metric, tt.label, got, tt.want)
			}
		}
	}
	if got := labelValue(`a="x\"y",lane="b"`, "lane"); got != "b" {
		t.Errorf("labelValue(escaped) = %q; want b", got)
	}
}

func TestSummarizeWait(t *testing.T) {
	var samples []sample
	for i := range 100 {
		samples = append(samples, sample{Queue: time.Duration(i) * time.Millisecond, HasQueue: true})
	}
	samples = append(samples, sample{Code: 529}) // no header: not counted
	w := summarizeWait(samples)
	if w.Count != 100 || w.Queued != 99 || w.P50 != 49*time.Millisecond || w.P99 != 98*time.Millisecond || w.Max != 99*time.Millisecond {
		t.Errorf("summarizeWait = %+v; want count 100, queued 99, p50 49ms, p99 98ms, max 99ms", w)
	}
	if e := summarizeWait(nil); e.Count != 0 || e.P50 != 0 {
		t.Errorf("summarizeWait(nil) = %+v; want zero", e)
	}
}

func TestLanePoints(t *testing.T) {
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	points := []lanePoint{
		{At: 0, Depth: map[string]float64{"batch": 0}, Dispatched: map[string]float64{}},
		{At: sec(1), Depth: map[string]float64{"batch": 5}, Dispatched: map[string]float64{"batch": 10}},
		{At: sec(2), Depth: map[string]float64{"batch": 9}, Dispatched: map[string]float64{"batch": 30, "interactive": 4}},
		{At: sec(3), Depth: map[string]float64{"batch": 2}, Dispatched: map[string]float64{"batch": 40, "interactive": 4}},
	}
	if got := dispatchedAt(points, sec(1.5)); got["batch"] != 20 || got["interactive"] != 2 {
		t.Errorf("dispatchedAt(1.5s) = %v; want batch 20, interactive 2 (interpolated)", got)
	}
	if got := dispatchedAt(points, sec(9)); got["batch"] != 40 {
		t.Errorf("dispatchedAt(9s) = %v; want the last point", got)
	}
	if got := dispatchedAt(points, -1); len(got) != 0 {
		t.Errorf("dispatchedAt(before) = %v; want the first point", got)
	}
	if peak, at := peakDepth(points, "batch"); peak != 9 || at != sec(2) {
		t.Errorf("peakDepth = %v at %v; want 9 at 2s", peak, at)
	}
	var b strings.Builder
	if err := depthTable(points, []string{"batch"}, 2).write(&b); err != nil {
		t.Fatal(err)
	}
	want := "| t s | batch depth |\n| --- | ----------- |\n| 0.0 | 5           |\n| 2.0 | 9           |\n"
	if b.String() != want {
		t.Errorf("depthTable =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestDispatchedInAndDrain(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	samples := []sample{
		{At: ms(0), Queue: ms(50), HasQueue: true, OK: true, Latency: ms(150)},     // dispatched at 50
		{At: ms(100), Queue: ms(900), HasQueue: true, OK: true, Latency: ms(1000)}, // at 1000
		{At: ms(200), Queue: ms(100), HasQueue: true, Latency: ms(300)},            // failed
		{At: ms(300), OK: true, Latency: ms(100)},                                  // no header
	}
	if got := dispatchedIn(samples, ms(0), ms(1000)); got != 1 {
		t.Errorf("dispatchedIn([0,1s)) = %d; want 1", got)
	}
	if got := lastDone(samples); got != ms(1100) {
		t.Errorf("lastDone = %v; want 1.1s", got)
	}
	if got := idealDrain(200, 5*time.Second, 20); got != 50*time.Second {
		t.Errorf("idealDrain(200/s, 5s, 20/s) = %v; want 50s", got)
	}
}

// TestLaneRelayConfigs checks that the burst and priority configurations
// pass the relay's own parser.
func TestLaneRelayConfigs(t *testing.T) {
	burst := burstRelayConfig("127.0.0.1:18080", "/tmp/nats", "http://127.0.0.1:1",
		burstOptions{RPS: 20, RPM: 1200, MaxConcurrency: 256, MaxDepth: 10000, MaxWait: time.Minute})
	prio := priorityRelayConfig("127.0.0.1:18080", "/tmp/nats", "http://127.0.0.1:1",
		priorityOptions{MaxConcurrency: 4, Latency: 100 * time.Millisecond, BatchMinShare: 0.1})
	for name, cfg := range map[string]relayConfig{"burst": burst, "priority": prio} {
		data, err := cfg.YAML()
		if err != nil {
			t.Fatalf("%s: YAML: %v", name, err)
		}
		c, err := configs.ParseWithEnv(data, nil)
		if err != nil {
			t.Fatalf("%s: configs.ParseWithEnv = %v\n%s", name, err, data)
		}
		if len(c.Lanes) != 3 || c.Lanes[0].Name != laneInteractive || c.Lanes[2].Name != laneBatch {
			t.Errorf("%s: lanes = %+v; want interactive, standard, batch", name, c.Lanes)
		}
		if len(c.Keys) != 1 || len(c.Keys[0].Lanes) != 3 {
			t.Errorf("%s: key lanes = %+v; want all three", name, c.Keys)
		}
	}
	if !strings.Contains(mustYAML(t, burst), "rpm: 1200") || !strings.Contains(mustYAML(t, prio), "min_share: 0.1") ||
		!strings.Contains(mustYAML(t, prio), "max_concurrency: 4") {
		t.Errorf("limits missing:\n%s\n%s", mustYAML(t, burst), mustYAML(t, prio))
	}
}

func mustYAML(t *testing.T, c relayConfig) string {
	t.Helper()
	data, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestVerifyWebhook(t *testing.T) {
	signer, err := callbacks.NewSigner(benchSigningSecret)
	if err != nil {
		t.Fatalf("NewSigner(benchSigningSecret) = %v", err)
	}
	now := time.Now()
	body := []byte(`{"id":"job_1","status":"succeeded"}`)
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := signer.Sign("job_1", now, body)
	if err := verifyWebhook(benchSigningSecret, "job_1", ts, "v1,bm90IGl0 "+sig, body, now, time.Minute); err != nil {
		t.Errorf("verifyWebhook(relay's signature) = %v; want nil", err)
	}
	for name, tc := range map[string]struct {
		id, ts string
		body   []byte
		now    time.Time
	}{
		"other body":     {"job_1", ts, []byte(`{}`), now},
		"other id":       {"job_2", ts, body, now},
		"other ts":       {"job_1", strconv.FormatInt(now.Unix()+1, 10), body, now},
		"stale":          {"job_1", ts, body, now.Add(2 * time.Minute)},
		"no id":          {"", ts, body, now},
		"ts not integer": {"job_1", "x", body, now},
	} {
		if err := verifyWebhook(benchSigningSecret, tc.id, tc.ts, sig, tc.body, tc.now, time.Minute); err == nil {
			t.Errorf("%s: verifyWebhook = nil; want an error", name)
		}
	}
}

func TestCallbackSink(t *testing.T) {
	signer, err := callbacks.NewSigner(benchSigningSecret)
	if err != nil {
		t.Fatal(err)
	}
	sink := &callbackSink{secret: benchSigningSecret, seen: newArrivals(time.Now())}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	post := func(id, sigID string) {
		body := `{"id":"` + id + `","status":"succeeded"}`
		now := time.Now()
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		req.Header.Set("Webhook-Id", id)
		req.Header.Set("Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("Webhook-Signature", signer.Sign(sigID, now, []byte(body)))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("status %d; want 204", resp.StatusCode)
		}
	}
	post("job_a", "job_a")
	post("job_a", "job_a") // a redelivery
	post("job_b", "job_b")
	post("job_c", "job_x") // bad signature
	s := sink.seen.summary(map[string]bool{"job_a": true, "job_b": true, "job_d": true})
	if s.Distinct != 3 || s.Deliveries != 4 || s.Duplicates != 1 || s.Missing != 1 || s.Unexpected != 1 {
		t.Errorf("summary = %+v; want 3 distinct, 4 deliveries, 1 duplicate, 1 missing, 1 unexpected", s)
	}
	if sink.valid != 3 || sink.bad != 1 || len(sink.errs) != 1 {
		t.Errorf("signatures valid %d bad %d (%v); want 3 and 1", sink.valid, sink.bad, sink.errs)
	}
}

func TestJobsHelpers(t *testing.T) {
	pts := []memPoint{
		{At: 0, RSS: 10, Accepted: 0},
		{At: time.Second, RSS: 30, Accepted: 100, Done: 10, Scraped: true, Inflight: 4, LaneDepth: 2},
		{At: 2 * time.Second, RSS: 20, Accepted: 100, Done: 50, Scraped: true, Inflight: 2},
		{At: 3 * time.Second, RSS: 25, Accepted: 100, Done: 100},
	}
	if got := peakRSS(pts); got != 30 {
		t.Errorf("peakRSS = %d; want 30", got)
	}
	if p, b := peakBacklog(pts); b != 90 || p.At != time.Second {
		t.Errorf("peakBacklog = %v at %v; want 90 at 1s", b, p.At)
	}
	if in, d := meanGauges(pts, 500*time.Millisecond, 3*time.Second); in != 3 || d != 1 {
		t.Errorf("meanGauges = %v, %v; want 3, 1", in, d)
	}
	if tb := memTable(pts, 2, true); len(tb.rows) != 2 || tb.rows[0][3] != "90" {
		t.Errorf("memTable rows = %v; want 2 rows, the first with backlog 90", tb.rows)
	}
	if !json.Valid(jobBody("http://127.0.0.1:1/cb")) {
		t.Errorf("jobBody is not JSON: %s", jobBody("http://127.0.0.1:1/cb"))
	}
	if c := (jobsOptions{MaxConcurrency: 32, Latency: 20 * time.Millisecond}).capacity(); math.Abs(c-1600) > 1e-9 {
		t.Errorf("capacity = %v; want 1600", c)
	}
}

func TestJobsAndParkedRelayConfigs(t *testing.T) {
	jobs := jobsRelayConfig("127.0.0.1:18080", "127.0.0.1:18081", "127.0.0.1:18082", "/tmp/nats", "http://127.0.0.1:1", 32, 0)
	parked := parkedRelayConfig("127.0.0.1:18080", "127.0.0.1:18081", "/tmp/nats", "http://127.0.0.1:1", parkedOptions{Requests: 10000})
	for name, cfg := range map[string]relayConfig{"jobs": jobs, "parked": parked} {
		data, err := cfg.YAML()
		if err != nil {
			t.Fatalf("%s: YAML: %v", name, err)
		}
		if _, err := configs.ParseWithEnv(data, nil); err != nil {
			t.Errorf("%s: configs.ParseWithEnv = %v\n%s", name, err, data)
		}
	}
	c, err := configs.ParseWithEnv([]byte(mustYAML(t, jobs)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.Listen != "127.0.0.1:18082" || c.AdminListen != "127.0.0.1:18081" || !c.Callbacks.AllowPrivateNetworks ||
		c.Callbacks.SigningSecret != benchSigningSecret || c.Providers[0].MaxConcurrency != 32 || len(c.Lanes) != 3 {
		t.Errorf("jobs config = %+v", c)
	}
	if c.Jobs.Workers != 128 {
		t.Errorf("jobs config without -workers: jobs.workers = %d; want the relay's default, 128", c.Jobs.Workers)
	}
	w, err := configs.ParseWithEnv([]byte(mustYAML(t, jobsRelayConfig("127.0.0.1:18080", "", "", "/tmp/nats", "http://127.0.0.1:1", 32, 256))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.Jobs.Workers != 256 {
		t.Errorf("jobs config with -workers 256: jobs.workers = %d", w.Jobs.Workers)
	}
	p, err := configs.ParseWithEnv([]byte(mustYAML(t, parked)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Lanes[0].MaxDepth < 10000 || p.Providers[0].MaxConcurrency != 1 || p.Keys[0].DefaultLane != laneInteractive {
		t.Errorf("parked config = %+v", p)
	}
}

func TestRaiseNoFile(t *testing.T) {
	n, err := raiseNoFile()
	if err != nil || n == 0 {
		t.Errorf("raiseNoFile = %d, %v", n, err)
	}
}

// TestDemoConfig rewrites the real configs/demo.yaml as the demo scenario
// does: every address and the store move, nothing else changes, and the
// key and model the scenario sends are still the demo's.
func TestDemoConfig(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"key: " + demoKey, "model: " + demoModel + "\n"} {
		if !strings.Contains(string(src), want) {
			t.Errorf("configs/demo.yaml lacks %q, which the demo scenario relies on", want)
		}
	}
	addrs := []string{"127.0.0.1:41001", "127.0.0.1:41002", "127.0.0.1:41003", "127.0.0.1:41004"}
	out, err := demoConfig(src, addrs, "/tmp/x/nats")
	if err != nil {
		t.Fatalf("demoConfig: %v", err)
	}
	for _, old := range append(slices.Clone(demoAddrs), demoStoreDir) {
		if strings.Contains(string(out), old) {
			t.Errorf("demoConfig left %q in place", old)
		}
	}
	for _, line := range []string{"listen: 127.0.0.1:41001", "admin_listen: 127.0.0.1:41002", "listen: 127.0.0.1:41003",
		"listen: 127.0.0.1:41004", "base_url: http://127.0.0.1:41004\n", "base_url: http://127.0.0.1:41004/v1", "store_dir: /tmp/x/nats"} {
		if !strings.Contains(string(out), line) {
			t.Errorf("demoConfig's output lacks %q", line)
		}
	}
	if _, err := configs.ParseWithEnv(out, nil); err != nil {
		t.Errorf("configs.ParseWithEnv(demoConfig's output) = %v", err)
	}
	if _, err := demoConfig([]byte("listen: 127.0.0.1:8080\n"), addrs, "/tmp/x"); err == nil {
		t.Errorf("demoConfig of a file without the demo's other addresses: no error; want one")
	}
}
