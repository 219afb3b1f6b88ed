package jobs

import (
	"context"
	"fmt"
)

// Stats is a read-only snapshot of the jobs' queues, for the status page.
// Batch items are jobs, so they are counted here too.
type Stats struct {
	// Queued are jobs waiting to run or to be retried.
	Queued uint64
	// Running are jobs taken by an executor and not yet acknowledged.
	Running int
	// CallbacksPending are callback deliveries waiting or in progress.
	CallbacksPending uint64
	// DeadLetters are callbacks given up and not re-sent, of jobs not yet
	// expired: the relay_callbacks_dead_letters gauge, read from the job
	// store (so every relay, and a restarted one, sees them).
	DeadLetters uint64
}

// Stats reads the executor's and the callback deliverer's consumers and
// counts the dead letters.
func (s *Service) Stats(ctx context.Context) (Stats, error) {
	jc, err := s.js.Consumer(ctx, JobsStream, ExecutorConsumer)
	if err != nil {
		return Stats{}, fmt.Errorf("jobs: stats: %w", err)
	}
	ji, err := jc.Info(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("jobs: stats: %w", err)
	}
	cc, err := s.js.Consumer(ctx, CallbacksStream, CallbackConsumer)
	if err != nil {
		return Stats{}, fmt.Errorf("jobs: stats: %w", err)
	}
	ci, err := cc.Info(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("jobs: stats: %w", err)
	}
	dead, err := s.deadLetters(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("jobs: stats: %w", err)
	}
	return Stats{
		Queued:           ji.NumPending,
		Running:          ji.NumAckPending,
		CallbacksPending: ci.NumPending + uint64(ci.NumAckPending),
		DeadLetters:      dead,
	}, nil
}
