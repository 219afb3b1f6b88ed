package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchSigningSecret is the callbacks.signing_secret of the jobs scenario
// ("whsec_" and the standard base64 of 32 fixed bytes: it signs loopback
// traffic of a benchmark only).
var benchSigningSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("relay-bench-signing-secret-32byt"))

// verifyWebhook checks a Standard Webhooks signature the way a receiver
// does, independently of the relay's own code: one of the space-separated
// "v1,<base64>" entries of sigHeader must equal the base64 HMAC-SHA256 of
// "id.timestamp.body" under the secret's key, and the timestamp must lie
// within tolerance of now.
func verifyWebhook(secret, id, timestamp, sigHeader string, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || !strings.HasPrefix(secret, "whsec_") || len(key) == 0 {
		return errors.New("bad secret")
	}
	if id == "" || timestamp == "" || sigHeader == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not unix seconds", timestamp)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || -d > tolerance {
		return fmt.Errorf("webhook-timestamp %s off by %v", timestamp, d)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	want := m.Sum(nil)
	for entry := range strings.FieldsSeq(sigHeader) {
		v, sig, ok := strings.Cut(entry, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no matching v1 signature")
}

// arrivals records the first arrival of each id (a webhook-id or a
// Nats-Msg-Id) since an epoch. It is safe for concurrent use.
type arrivals struct {
	epoch time.Time
	mu    sync.Mutex
	first map[string]time.Duration
	total int // deliveries, duplicates included
	last  time.Duration
	// status counts the distinct ids by the job status they reported.
	status map[string]int
}

func newArrivals(epoch time.Time) *arrivals {
	return &arrivals{epoch: epoch, first: map[string]time.Duration{}, status: map[string]int{}}
}

// add records one delivery of id with the job status it carried.
func (a *arrivals) add(id, status string) {
	at := time.Since(a.epoch)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total++
	if _, ok := a.first[id]; ok {
		return
	}
	a.first[id] = at
	a.last = max(a.last, at)
	a.status[status]++
}

// distinct returns the number of distinct ids seen so far.
func (a *arrivals) distinct() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.first)
}

// arrivalSummary is what a receiver saw.
type arrivalSummary struct {
	Distinct   int            `json:"distinct_ids"`
	Deliveries int            `json:"deliveries"`
	Duplicates int            `json:"duplicates"`
	First      time.Duration  `json:"first_at_ns"` // since the epoch
	Last       time.Duration  `json:"last_at_ns"`
	Statuses   map[string]int `json:"statuses"`
	// Rate is distinct ids per second between the first and last arrival.
	Rate float64 `json:"rate_per_second"`
	// Missing counts ids that were expected (accepted jobs) and not seen;
	// Unexpected ids seen that were not expected.
	Missing    int `json:"missing"`
	Unexpected int `json:"unexpected"`
}

// summary compares the arrivals with the expected ids.
func (a *arrivals) summary(expected map[string]bool) arrivalSummary {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := arrivalSummary{Distinct: len(a.first), Deliveries: a.total, Duplicates: a.total - len(a.first),
		Last: a.last, First: -1, Statuses: map[string]int{}}
	for k, v := range a.status {
		s.Statuses[k] = v
	}
	for id, at := range a.first {
		if s.First < 0 || at < s.First {
			s.First = at
		}
		if !expected[id] {
			s.Unexpected++
		}
	}
	for id := range expected {
		if _, ok := a.first[id]; !ok {
			s.Missing++
		}
	}
	if s.First < 0 {
		s.First = 0
	}
	if span := s.Last - s.First; span > 0 && s.Distinct > 1 {
		s.Rate = float64(s.Distinct-1) / span.Seconds()
	}
	return s
}

// callbackSink is the loopback receiver of job callbacks: it answers 204,
// records each webhook-id and checks every signature.
type callbackSink struct {
	secret string
	seen   *arrivals
	mu     sync.Mutex
	valid  int
	bad    int
	errs   []string // up to maxErrors distinct reasons
}

// ServeHTTP implements http.Handler.
func (s *callbackSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := r.Header.Get("Webhook-Id")
	verr := verifyWebhook(s.secret, id, r.Header.Get("Webhook-Timestamp"), r.Header.Get("Webhook-Signature"), body, time.Now(), 5*time.Minute)
	var job struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if verr == nil {
		if err := json.Unmarshal(body, &job); err != nil {
			verr = fmt.Errorf("body: %w", err)
		} else if job.ID != id {
			verr = fmt.Errorf("body id %q differs from webhook-id %q", job.ID, id)
		}
	}
	s.mu.Lock()
	if verr != nil {
		s.bad++
		if len(s.errs) < maxErrors {
			s.errs = append(s.errs, verr.Error())
		}
	} else {
		s.valid++
	}
	s.mu.Unlock()
	s.seen.add(id, job.Status)
	w.WriteHeader(http.StatusNoContent)
}

// startCallbackSink serves sink on a free loopback port until ctx ends and
// returns its URL; stop waits for the server to close.
func startCallbackSink(ctx context.Context, sink *callbackSink) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("callback receiver: %w", err)
	}
	srv := &http.Server{Handler: sink, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return "http://" + ln.Addr().String() + "/callback", func() { cancel(); <-done }, nil
}

// resultsStream and resultsSubjects are where the relay publishes finished
// jobs.
const (
	resultsStream   = "RELAY_RESULTS"
	resultsSubjects = "relay.results.>"
)

// subscribeResults consumes RELAY_RESULTS with an ordered consumer from
// the start of the stream and records each message's Nats-Msg-Id. It waits
// up to 10 s for the relay to create the stream. stop ends the
// subscription and closes the connection.
func subscribeResults(ctx context.Context, natsURL string, seen *arrivals) (stop func(), err error) {
	nc, err := nats.Connect(natsURL, nats.Name("relay-bench"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var cons jetstream.Consumer
	for {
		cons, err = js.OrderedConsumer(ctx, resultsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{resultsSubjects}})
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		_ = sleepCtx(ctx, 100*time.Millisecond)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("ordered consumer on %s: %w", resultsStream, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		seen.add(m.Headers().Get("Nats-Msg-Id"), m.Headers().Get("Relay-Status"))
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("consume %s: %w", resultsStream, err)
	}
	return func() { cc.Stop(); nc.Close() }, nil
}
