package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/relaygw/relay/lanes/recent"
)

// A queued job's place in its lane's work queue (GET /v1/jobs/{id}:
// queue_position, estimated_start_at), from JetStream's own counts: no
// scan of the queue.
//
// RELAY_JOBS keeps every job of lane L on relay.jobs.L, in the order they
// were accepted, until the job ends (its message is acknowledged then).
// The position is the number of the lane's messages stored before the
// job's: L's message count (stream info filtered to relay.jobs.L) minus
// those from the job's own message on (the Nats-Num-Pending of a batched
// direct get that starts at the job's creation time and walks to its
// message past those accepted in the same millisecond). It is exact for
// the stream's order, which is acceptance order; it counts the lane's
// jobs that are running too (their messages stay until they end), and a
// job retried later keeps its place, as JetStream redelivers in place.
// When the message cannot be found near its creation time (clocks of a
// cluster's servers apart), the position is left out.

// positionTimeout bounds the two JetStream requests of a position.
const positionTimeout = 2 * time.Second

// jsAPI is the JetStream API prefix the relay uses (no domain).
const jsAPI = "$JS.API."

// queueView sets j's QueuePosition and, when the lane's recent starts
// allow an estimate, EstimatedStartAt. Best effort: on any error the
// fields stay unset.
func (s *Service) queueView(ctx context.Context, j *Job) {
	if j.Status != StatusQueued {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, positionTimeout)
	defer cancel()
	ahead, err := s.ahead(ctx, j)
	if err != nil {
		s.log.Debug("job queue position", j.ref().attrs("error", err)...)
		return
	}
	j.QueuePosition = &ahead
	now := s.now()
	if d, ok := s.starts.wait(j.Lane, ahead, now); ok {
		at := now.Add(d).UTC().Truncate(time.Millisecond)
		j.EstimatedStartAt = &at
	}
}

// ahead counts the lane's jobs stored before j's message.
func (s *Service) ahead(ctx context.Context, j *Job) (int, error) {
	subj := jobsSubjectPrefix + token(j.Lane)
	total, err := s.laneCount(ctx, subj)
	if err != nil {
		return 0, err
	}
	after, err := s.after(ctx, subj, j)
	if err != nil {
		return 0, err
	}
	return max(total-after-1, 0), nil
}

// laneCount returns the number of messages on subj in RELAY_JOBS.
func (s *Service) laneCount(ctx context.Context, subj string) (int, error) {
	req, _ := json.Marshal(map[string]string{"subjects_filter": subj})
	msg, err := s.js.Conn().RequestWithContext(ctx, jsAPI+"STREAM.INFO."+JobsStream, req)
	if err != nil {
		return 0, fmt.Errorf("jobs: stream info: %w", err)
	}
	var info struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
		State struct {
			Subjects map[string]int `json:"subjects"`
		} `json:"state"`
	}
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		return 0, fmt.Errorf("jobs: stream info: %w", err)
	}
	if info.Error != nil {
		return 0, fmt.Errorf("jobs: stream info: %s", info.Error.Description)
	}
	return info.State.Subjects[subj], nil
}

// Bounds of the walk from a job's creation time to its message: jobs
// accepted in the same millisecond come first.
const (
	findBatch  = 16      // messages per direct get
	findRounds = 4       // direct gets at most
	findBytes  = 1 << 20 // bytes per direct get (the server sends at least one message)
)

// after returns how many messages on subj follow j's: batched direct gets
// (RELAY_JOBS allows them) from j's creation time on, until the message
// whose Relay-Job-Id is j's, whose Nats-Num-Pending is the answer.
func (s *Service) after(ctx context.Context, subj string, j *Job) (int, error) {
	req := map[string]any{"start_time": j.CreatedAt.UTC(), "next_by_subj": subj, "batch": findBatch, "max_bytes": findBytes}
	for range findRounds {
		after, next, found, err := s.directGet(ctx, req, j.ID)
		if err != nil || found {
			return after, err
		}
		if next == 0 {
			break
		}
		req = map[string]any{"seq": next, "next_by_subj": subj, "batch": findBatch, "max_bytes": findBytes}
	}
	return 0, errors.New("jobs: job message not found near its creation time")
}

// directGet runs one batched direct get of RELAY_JOBS and looks for the
// message of job id: its Nats-Num-Pending when found, else the sequence
// to go on from (0: no more messages).
func (s *Service) directGet(ctx context.Context, req map[string]any, id string) (after int, next uint64, found bool, err error) {
	nc := s.js.Conn()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, 0, false, fmt.Errorf("jobs: direct get: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	data, _ := json.Marshal(req)
	if err := nc.PublishRequest(jsAPI+"DIRECT.GET."+JobsStream, inbox, data); err != nil {
		return 0, 0, false, fmt.Errorf("jobs: direct get: %w", err)
	}
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return 0, 0, false, fmt.Errorf("jobs: direct get: %w", err)
		}
		switch st := msg.Header.Get("Status"); st {
		case "":
		case "204": // end of the batch
			return 0, next, false, nil
		case "404":
			return 0, 0, false, nil
		default:
			return 0, 0, false, fmt.Errorf("jobs: direct get: status %s %s", st, msg.Header.Get("Description"))
		}
		seq, _ := strconv.ParseUint(msg.Header.Get("Nats-Sequence"), 10, 64)
		next = seq + 1
		if msg.Header.Get("Relay-Job-Id") != id {
			continue
		}
		after, err = strconv.Atoi(msg.Header.Get("Nats-Num-Pending"))
		if err != nil {
			return 0, 0, false, errors.New("jobs: direct get: no Nats-Num-Pending")
		}
		return after, 0, true, nil
	}
}

// The estimated start: how fast this relay starts a lane's jobs.
const (
	// startWindow is how far back a start counts.
	startWindow = 5 * time.Minute
	// startMinSamples is how many starts within startWindow make an
	// estimate; with fewer there is none (estimated_start_at is omitted).
	startMinSamples = 4
)

// laneStarts remembers the recent job starts of each lane on this relay.
// The zero value is ready.
type laneStarts struct {
	mu    sync.Mutex
	lanes map[string]*recent.Ring
}

// observe records a start of a job of lane at now.
func (ls *laneStarts) observe(lane string, now time.Time) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.lanes == nil {
		ls.lanes = map[string]*recent.Ring{}
	}
	r := ls.lanes[lane]
	if r == nil {
		r = &recent.Ring{}
		ls.lanes[lane] = r
	}
	r.Observe(now)
}

// wait estimates when a job with ahead jobs before it starts: ahead+1
// starts at the lane's recent start rate ((k-1) intervals over the time
// from the oldest of the k starts within startWindow to now). ok is false
// with fewer than startMinSamples starts.
func (ls *laneStarts) wait(lane string, ahead int, now time.Time) (time.Duration, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	r := ls.lanes[lane]
	if r == nil {
		return 0, false
	}
	rate, ok := r.Rate(now, startWindow, startMinSamples)
	if !ok {
		return 0, false
	}
	return time.Duration(float64(ahead+1) / rate * float64(time.Second)), true
}
