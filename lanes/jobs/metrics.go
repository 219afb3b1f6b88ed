package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The jobs service's Prometheus metrics.

// metrics are the jobs service's Prometheus metrics.
type metrics struct {
	jobs      *prometheus.CounterVec
	callbacks *prometheus.CounterVec
	dead      prometheus.Counter
	repeated  prometheus.Counter
}

// newMetrics creates the metrics, with every terminal status and callback
// outcome at zero (so rate() and alerts see them before the first event),
// and registers them with reg (none when nil).
func newMetrics(reg prometheus.Registerer, s *Service) *metrics {
	m := &metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relay_jobs_total",
			Help: "Asynchronous jobs that reached a terminal status, by status."}, []string{"status"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relay_callbacks_total",
			Help: "Callback delivery attempts, by outcome (delivered, retry, gone, dead_letter: the last attempt, given up)."}, []string{"outcome"}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_jobs_dead_letters_total",
			Help: "Jobs given up after too many interrupted runs."}),
		repeated: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_jobs_repeated_runs_total",
			Help: "Jobs run again because the relay running them died (or hung past the ack wait): their upstream call may have been made twice."}),
	}
	for _, st := range []string{StatusSucceeded, StatusFailed, StatusCanceled} {
		m.jobs.WithLabelValues(st)
	}
	for _, o := range []string{CallbackDelivered, CallbackRetry, CallbackGone, CallbackDeadLetter} {
		m.callbacks.WithLabelValues(o)
	}
	if reg == nil {
		return m
	}
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_jobs_queued",
		Help: "Jobs in RELAY_JOBS not finished: waiting, waiting to retry, or running (consumer num_pending + num_ack_pending)."}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := s.js.Consumer(ctx, JobsStream, ExecutorConsumer)
		if err != nil {
			return 0
		}
		info := c.CachedInfo()
		if fresh, err := c.Info(ctx); err == nil {
			info = fresh
		}
		return float64(info.NumPending + uint64(info.NumAckPending))
	})
	dead := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_callbacks_dead_letters",
		Help: "Callbacks given up and not re-sent, of jobs not yet expired."}, s.countDeadLetters)
	reg.MustRegister(m.jobs, m.callbacks, m.dead, m.repeated, queued, dead)
	return m
}

// countDeadLetters is the relay_callbacks_dead_letters gauge's value: 0
// when the store cannot be read.
func (s *Service) countDeadLetters() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := s.deadLetters(ctx)
	if err != nil {
		return 0
	}
	return float64(n)
}

// deadLetters counts the dead-letter markers in the state bucket: the
// callbacks given up and not re-sent, of jobs not yet expired
// (O(dead letters)).
func (s *Service) deadLetters(ctx context.Context) (uint64, error) {
	l, err := s.state.ListKeysFiltered(ctx, deadPrefix+"*")
	if err != nil {
		return 0, fmt.Errorf("list dead letters: %w", err)
	}
	var n uint64
	for range l.Keys() {
		n++
	}
	return n, nil
}
