package jobs_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/callbacks"
)

// store is an embedded NATS server on a store directory that survives
// restarts of the server.
type store struct {
	t   *testing.T
	dir string
	ns  *embeddednats.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newStore(t *testing.T) *store {
	st := &store{t: t, dir: t.TempDir()}
	st.start()
	t.Cleanup(st.stop)
	return st
}

func (st *store) start() {
	st.t.Helper()
	ns, err := embeddednats.Start(st.t.Context(), embeddednats.Options{StoreDir: st.dir})
	if err != nil {
		st.t.Fatalf("embeddednats.Start: %v", err)
	}
	nc, err := ns.Connect()
	if err != nil {
		st.t.Fatalf("connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		st.t.Fatal(err)
	}
	st.ns, st.nc, st.js = ns, nc, js
}

func (st *store) stop() {
	if st.ns == nil {
		return
	}
	st.nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.ns.Shutdown(ctx); err != nil {
		st.t.Errorf("shutdown: %v", err)
	}
	st.ns = nil
}

// restart stops and starts the NATS server on the same store directory,
// as a process restart would.
func (st *store) restart() {
	st.stop()
	st.start()
}

// svc is a running Service.
type svc struct {
	*jobs.Service
	stop func()
}

// defaultOpts fills in what o leaves zero with the explicit values of the
// tests (short backoffs, a few workers, every lane patient).
func defaultOpts(t *testing.T, o jobs.Options) jobs.Options {
	if o.ResultTTL == 0 {
		o.ResultTTL = 72 * time.Hour
	}
	if o.Lanes == nil {
		o.Lanes = map[string]time.Duration{"batch": 24 * time.Hour}
	}
	if o.RetryBase == 0 {
		o.RetryBase = 10 * time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = 50 * time.Millisecond
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.CallbackWorkers == 0 {
		o.CallbackWorkers = 2
	}
	if o.Callbacks == nil {
		o.Callbacks = sender(t, callbacks.DelivererOptions{})
	}
	if o.CallbackSchedule == nil {
		o.CallbackSchedule = slices.Repeat([]time.Duration{20 * time.Millisecond}, 9) // 10 attempts
	}
	o.CallbackTimeout = callbacks.DefaultTimeout
	o.CallbackURLs = callbacks.Checker{AllowPrivate: true}
	return o
}

// sender is a callback sender with d's settings, as cmd/relay builds it;
// zero fields take the tests' values: testSigner, short backoffs, private
// receivers allowed.
func sender(t *testing.T, d callbacks.DelivererOptions) jobs.CallbackSender {
	if d.Signer == nil {
		d.Signer = testSigner
	}
	if d.BaseBackoff == 0 {
		d.BaseBackoff = 20 * time.Millisecond
	}
	if d.MaxBackoff == 0 {
		d.MaxBackoff = 100 * time.Millisecond
	}
	d.Client = callbacks.NewClient(callbacks.ClientOptions{AllowPrivate: true})
	s := callbackSender{callbacks.NewDeliverer(d)}
	t.Cleanup(s.CloseIdleConnections)
	return s
}

// callbackSender is cmd/relay's adapter of a callbacks.Deliverer.
type callbackSender struct{ *callbacks.Deliverer }

func (c callbackSender) Attempt(ctx context.Context, a jobs.CallbackAttempt) jobs.CallbackResult {
	return jobs.CallbackResult(c.Deliverer.Attempt(ctx, callbacks.Callback(a)))
}

// open opens a Service without running it.
func open(t *testing.T, js jetstream.JetStream, r jobs.Runner, o jobs.Options) *jobs.Service {
	t.Helper()
	s, err := jobs.Open(t.Context(), js, r, defaultOpts(t, o))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// run starts s.Run; stop (also at cleanup) cancels it and waits.
func run(t *testing.T, s *jobs.Service) *svc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return &svc{Service: s, stop: stop}
}

func start(t *testing.T, js jetstream.JetStream, r jobs.Runner, o jobs.Options) *svc {
	return run(t, open(t, js, r, o))
}

// okRunner answers 200 at once.
var okRunner = jobs.RunnerFunc(func(_ context.Context, j jobs.Job, _ []byte) jobs.Outcome {
	return jobs.Outcome{StatusCode: 200, Body: []byte(`{"id":"msg_1","echo":"` + j.ID + `"}`), Provider: "sim"}
})

// gate is a runner that blocks each run until released.
type gate struct {
	started chan string
	release chan jobs.Outcome
	mu      sync.Mutex
	calls   map[string]int
}

func newGate() *gate {
	return &gate{started: make(chan string, 100), release: make(chan jobs.Outcome), calls: map[string]int{}}
}

func (g *gate) Run(ctx context.Context, j jobs.Job, _ []byte, start func() bool) jobs.Outcome {
	if !start() {
		return jobs.Outcome{Err: jobs.ErrNotStarted}
	}
	g.mu.Lock()
	g.calls[j.ID]++
	g.mu.Unlock()
	g.started <- j.ID
	select {
	case o := <-g.release:
		return o
	case <-ctx.Done():
		return jobs.Outcome{Err: ctx.Err(), Retryable: true}
	}
}

func (g *gate) count(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[id]
}

func sub(key string) jobs.Submission {
	return jobs.Submission{Key: key, Endpoint: jobs.EndpointMessages, Model: "claude-sonnet", Lane: "batch",
		Body: []byte(`{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)}
}

// submitter is a *jobs.Service or a running svc.
type submitter interface {
	Submit(ctx context.Context, sub jobs.Submission) (jobs.Job, bool, error)
}

// mustSubmit submits x, failing the test on an error.
func mustSubmit(t *testing.T, s submitter, x jobs.Submission) jobs.Job {
	t.Helper()
	j, _, err := s.Submit(t.Context(), x)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return j
}

// waitJob polls until the job satisfies ok.
func waitJob(t *testing.T, s *jobs.Service, key, id string, ok func(jobs.Job) bool) jobs.Job {
	t.Helper()
	var j jobs.Job
	var err error
	natstest.Eventually(t, 15*time.Second, "job "+id+" in the wanted state", func() bool {
		j, err = s.Get(t.Context(), key, id)
		return err == nil && ok(j)
	})
	return j
}

func status(want string) func(jobs.Job) bool {
	return func(j jobs.Job) bool { return j.Status == want }
}

func newSecret(t *testing.T) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func signer(t *testing.T, secret string) *callbacks.Signer {
	s, err := callbacks.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// receiver is a callback receiver answering the statuses of codes in turn
// (then the last one), recording every delivery.
type receiver struct {
	*httptest.Server
	mu    sync.Mutex
	codes []int
	got   []delivery
}

type delivery struct {
	id, ts, sig string
	body        []byte
}

func newReceiver(t *testing.T, codes ...int) *receiver {
	r := &receiver{codes: codes}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b := make([]byte, 0, 1024)
		buf := make([]byte, 4096)
		for {
			n, err := req.Body.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				break
			}
		}
		r.mu.Lock()
		r.got = append(r.got, delivery{req.Header.Get("Webhook-Id"), req.Header.Get("Webhook-Timestamp"), req.Header.Get("Webhook-Signature"), b})
		code := r.codes[min(len(r.got), len(r.codes))-1]
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

func isNotFound(err error) bool { return errors.Is(err, jobs.ErrNotFound) }

// verifyIndependently checks a Standard Webhooks signature with crypto/hmac
// directly, not with the callbacks package.
func verifyIndependently(secret, id, ts, sigHeader string, body []byte) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: %v", ts, err)
	}
	if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("webhook-timestamp %q is %v off", ts, d)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, s := range strings.Fields(sigHeader) {
		v, ok := strings.CutPrefix(s, "v1,")
		if !ok {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(v)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("webhook-signature %q does not verify", sigHeader)
}

// testSigner signs the callbacks of services whose test gives no Signer
// (callbacks are always signed).
var testSigner = func() *callbacks.Signer {
	s, err := callbacks.NewSigner("whsec_" + base64.StdEncoding.EncodeToString([]byte("relay-jobs-test-signing-secret")))
	if err != nil {
		panic(err)
	}
	return s
}()
