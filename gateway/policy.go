package gateway

// This file owns the request policy, for synchronous requests, jobs and
// message batches alike: what a request's body says (peeked once), whether
// its key may use the model it names, which lane it runs on and whether
// the key may use it, and how long it may wait there.

import (
	"errors"
	"strconv"
	"time"

	"github.com/relaygw/relay/workers/wire"
)

// defaultJobLane is the lane jobs and batches use when the request names
// none and the key may use it.
const defaultJobLane = "batch"

// policy is how one kind of request is admitted.
type policy struct {
	// laneField names where a lane is asked for, in errors.
	laneField string
	// jobDefault prefers defaultJobLane, when the key may use it, to the
	// key's default lane.
	jobDefault bool
	// noStream refuses bodies asking for a stream.
	noStream bool
	// bodyField names the body, in errors ("" for the whole request).
	bodyField string
}

// The policies of the relay's kinds of request.
var (
	// syncPolicy admits POST /v1/messages and /v1/chat/completions.
	syncPolicy = policy{laneField: "x-relay-lane"}
	// jobPolicy admits POST /v1/jobs: the lane and body are fields of
	// the job.
	jobPolicy = policy{laneField: "lane", jobDefault: true, noStream: true, bodyField: "body"}
	// batchPolicy chooses a message batch's lane; its items' bodies are
	// checked one by one (peek, route).
	batchPolicy = policy{laneField: "x-relay-lane", jobDefault: true}
)

// decision is what the policy decided for one request.
type decision struct {
	// fields are the body's peeked fields; zero when it could not be
	// read.
	fields wire.Fields
	// route names the route serving fields.Model (a pattern route's
	// pattern, never the client's model, so metric labels stay bounded);
	// "" when none does.
	route string
	// lane is the lane to run on; its MaxWait is the longest the request
	// may wait parked.
	lane Lane
}

// admit decides a request of kind p from key k: body's fields, its model,
// and the lane named laneName ("" for the default) with its wait
// shortened by maxWait ("" leaves it), in that order.
func (st *state) admit(p *policy, k *key, body []byte, laneName, maxWait string) (decision, *apiError) {
	var d decision
	f, aerr := st.peek(body)
	if aerr != nil {
		return d, within(p.bodyField, aerr)
	}
	d.fields = f
	if p.noStream && f.Stream {
		return d, within(p.bodyField, errBadRequest("stream: true is not supported for jobs"))
	}
	if d.route, aerr = st.route(k, f.Model); aerr != nil {
		return d, aerr
	}
	d.lane, aerr = st.chooseLane(p, k, laneName, maxWait)
	return d, aerr
}

// peek reads the fields of a request body, within max_json_depth.
func (st *state) peek(body []byte) (wire.Fields, *apiError) {
	f, err := wire.Peek(body, st.maxJSONDepth)
	if err != nil {
		e := errBadRequest(err.Error())
		if errors.Is(err, wire.ErrNoModel) {
			e.param = "model"
		}
		return f, e
	}
	return f, nil
}

// route returns the name of the route serving model for k: 404 when none
// does; 403, with the route, when k may not use it.
func (st *state) route(k *key, model string) (string, *apiError) {
	if st.dispatcher == nil {
		return "", errModelNotFound(model)
	}
	route, ok := st.dispatcher.Route(model)
	if !ok {
		return "", errModelNotFound(model)
	}
	if !k.mayUseRoute(route) {
		return route, errPermission("this key may not use model " + strconv.Quote(model))
	}
	return route, nil
}

// chooseLane returns the lane named name or, for "", the default of
// policy p for k, with its MaxWait shortened (never lengthened) by
// maxWait, when given.
func (st *state) chooseLane(p *policy, k *key, name, maxWait string) (Lane, *apiError) {
	if name == "" {
		name = k.DefaultLane
		if _, ok := st.lanes[defaultJobLane]; ok && p.jobDefault && k.lanes[defaultJobLane] {
			name = defaultJobLane
		}
	}
	lane, ok := st.lanes[name]
	if !ok {
		return Lane{}, errBadRequest(p.laneField + ": unknown lane " + strconv.Quote(name))
	}
	if !k.lanes[name] {
		return Lane{}, errPermission("this key may not use lane " + strconv.Quote(name))
	}
	if maxWait != "" {
		d, err := parseWait(maxWait)
		if err != nil {
			return Lane{}, errBadRequest("x-relay-max-wait: " + err.Error())
		}
		lane.MaxWait = min(d, lane.MaxWait)
	}
	return lane, nil
}

// parseWait reads a Go duration ("1.5s") or a number of seconds.
func parseWait(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil {
			return 0, errors.New("must be a duration such as 10s, or seconds")
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	return d, nil
}

// within names the part of the request e is about ("" leaves it).
func within(field string, e *apiError) *apiError {
	if field != "" {
		e.msg = field + ": " + e.msg
	}
	return e
}
