package jobs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publishing finished jobs: the result on RELAY_RESULTS, then the callback
// (both de-duplicated by the job id, so repeating them is harmless).

// afterTerminal publishes the finished job to RELAY_RESULTS and enqueues
// its callback. Both are de-duplicated by the job id, so repeating them
// after a crash has no visible effect. It first refreshes the job's list
// index entry (list.go).
func (s *Service) afterTerminal(ctx context.Context, j *Job) error {
	if err := s.putIndex(ctx, j); err != nil { // lives as long as the record (list.go)
		return err
	}
	data, err := s.publishResult(ctx, j)
	if err != nil {
		return err
	}
	return s.enqueueCallback(ctx, j, data)
}

// final is j as its result message and callbacks carry it: without the
// callback state, the interruption count, the running relay and the
// queued-only view fields.
func (j *Job) final() Job {
	f := *j
	f.Callback, f.Interrupted, f.Owner = nil, 0, ""
	f.QueuePosition, f.EstimatedStartAt = nil, nil
	return f
}

// publishResult publishes j's final JSON (without the callback field) to
// RELAY_RESULTS and returns it.
func (s *Service) publishResult(ctx context.Context, j *Job) ([]byte, error) {
	payload := j.final()
	data, err := json.Marshal(&payload)
	if err != nil {
		return nil, fmt.Errorf("jobs: encode: %w", err)
	}
	msg := &nats.Msg{Subject: ResultSubject(j.KeyName, j.ID), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, j.ID)
	msg.Header.Set("Content-Type", "application/json")
	msg.Header.Set("Relay-Job-Id", j.ID)
	msg.Header.Set("Relay-Status", j.Status)
	if j.Result != nil && j.Result.Provider != "" {
		msg.Header.Set("Relay-Provider", j.Result.Provider)
	}
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return nil, fmt.Errorf("jobs: publish result: %w", err)
	}
	return data, nil
}
