package jobs

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Crash points for SimulateCrash: the executor's steps done before the
// simulated crash.
const (
	CrashWhileRunning = iota // claimed running, upstream call in flight
	CrashAfterRecord         // terminal record written
	CrashAfterResult         // result published to RELAY_RESULTS
	CrashBeforeAck           // callback enqueued too; message not acked
)

// SimulateCrash takes the next job message and does the executor's steps
// for outcome out up to point, then abandons the message as a killed
// process would. It returns the job id.
func (s *Service) SimulateCrash(ctx context.Context, point int, out Outcome) (string, error) {
	c, err := s.js.Consumer(ctx, JobsStream, ExecutorConsumer)
	if err != nil {
		return "", err
	}
	msg, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		return "", err
	}
	var m message
	if err := json.Unmarshal(msg.Data(), &m); err != nil {
		return "", err
	}
	if _, _, err := s.ensure(ctx, &m); err != nil {
		return "", err
	}
	if _, _, err := s.prepare(ctx, m.ID); err != nil {
		return "", err
	}
	if _, _, err := s.start(ctx, m.ID); err != nil {
		return "", err
	}
	if point == CrashWhileRunning {
		return m.ID, nil
	}
	now := s.now().UTC()
	j, _, err := s.update(ctx, m.ID, func(j *Job) bool {
		j.Status = StatusSucceeded
		s.finishFields(j, now)
		j.Result = result(out)
		return true
	})
	if err != nil || point == CrashAfterRecord {
		return m.ID, err
	}
	data, err := s.publishResult(ctx, &j)
	if err != nil || point == CrashAfterResult {
		return m.ID, err
	}
	return m.ID, s.enqueueCallback(ctx, &j, data)
}

// PublishOnly does Submit's first steps (idempotency claim and job
// message) but crashes before the record is written.
func (s *Service) PublishOnly(ctx context.Context, sub Submission) (string, error) {
	id := NewID(s.now())
	if sub.IdempotencyKey != "" {
		if _, err := s.idem.Create(ctx, idemKey(sub.Key, sub.IdempotencyKey), []byte(id)); err != nil {
			return "", err
		}
	}
	_, err := s.publishJob(ctx, id, s.now().UTC(), &sub)
	return id, err
}

// SetPublish replaces how s stores job messages: hook gets each publish
// with the real one (JetStream's PublishMsg) to call or not, so a test
// can lose an acknowledgement as a broken connection does. nil restores
// the real one.
func (s *Service) SetPublish(hook func(ctx context.Context, msg *nats.Msg, publish func(context.Context, *nats.Msg) (*jetstream.PubAck, error)) (*jetstream.PubAck, error)) {
	real := func(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error) { return s.js.PublishMsg(ctx, m) }
	if hook == nil {
		s.publish = s.js.PublishMsg
		return
	}
	s.publish = func(ctx context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
		return hook(ctx, m, real)
	}
}

// SetInstance names s's executor instance (as in job records' Owner and
// RELAY_EXECUTORS keys), for a test that plays another relay.
func (s *Service) SetInstance(id string) { s.instance = id }
