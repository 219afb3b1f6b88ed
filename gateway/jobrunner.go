package gateway

// JobRunner: asynchronous jobs (lanes/jobs) run through the gateway's own
// path to providers: a wait on the job's lane, then the router. The jobs
// package knows neither; cmd/relay plugs a JobRunner into it.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/relaygw/relay/gateway/metering"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/budgets"
	"github.com/relaygw/relay/workers/wire"
)

// JobDispatcher is what a JobRunner needs of a Router.
type JobDispatcher interface {
	workers.Admitter
	// Route names the route serving model, if any.
	Route(model string) (string, bool)
	Do(ctx context.Context, req *workers.Request, g *workers.Grant) (*workers.Response, error)
}

// JobRunner runs asynchronous jobs on the same lanes and provider actors as
// synchronous requests, so priorities and limits apply to both. It is safe
// for concurrent use.
type JobRunner struct {
	// Router returns the current router (it changes with reloads).
	Router func() JobDispatcher
	// Lanes parks jobs no provider can take yet.
	Lanes *lanes.Set
	// MaxJSONDepth bounds the nesting of job bodies (max_json_depth; 0
	// means wire.FallbackMaxDepth). The gateway checked them on submission;
	// this guards bodies read back from the store.
	MaxJSONDepth int
	// Meter records each run an upstream answered (mode job, or batch for
	// message batch items); nil records nothing.
	Meter *metering.Meter
	// Quotas enforces the keys' limits and budgets, as for synchronous
	// requests (the gateway's Deps.Quotas); nil enforces none.
	Quotas *Quotas
}

var _ jobs.Runner = (*JobRunner)(nil)

// Run sends one job's request upstream, waiting on the job's lane for
// capacity, and calls start once capacity is granted, just before the
// upstream call, so the job shows running only while it runs. No capacity
// within the lane's wait, a full lane and failures of every target are
// retryable; a body the relay cannot send, a route that no longer exists
// or an upstream 4xx end the job.
func (jr *JobRunner) Run(ctx context.Context, j jobs.Job, body []byte, start func() bool) jobs.Outcome {
	format := workers.FormatAnthropic
	if j.Endpoint == jobs.EndpointChatCompletions {
		format = workers.FormatOpenAI
	}
	fields, err := wire.Peek(body, jr.MaxJSONDepth)
	if err != nil {
		return jobs.Outcome{Err: fmt.Errorf("job body: %w", err)}
	}
	ctx, header := jobContext(ctx, &j)
	req := &workers.Request{Format: format, Body: body, Fields: fields, Header: header}
	router := jr.Router()
	route, ok := router.Route(fields.Model)
	if !ok {
		return jobs.Outcome{Err: fmt.Errorf("model %q is no longer served by this relay", fields.Model)}
	}
	kg, out, ok := jr.gate(ctx, &j, format, router, body, fields)
	if !ok {
		return out
	}
	if kg != nil {
		req.InputEstimate = kg.in
	}
	park := startJobPark(ctx, &j)
	g, waited, err := jr.Lanes.Acquire(ctx, lanes.Waiter{
		Lane:    j.Lane,
		Key:     j.KeyName,
		Route:   route,
		Admit:   kg.admitFunc(router, req),
		KeyHold: kg.keyHold(),
		// Jobs wait and retry (not FailFast); their Hold lets the lanes
		// end parked synchronous requests of the same route early.
		Hold: holdFunc(router, req),
	})
	endJobPark(park, waited, err)
	if err != nil {
		kg.settle(wire.Usage{}, "", false, false)
	}
	switch {
	case err == nil:
	case errors.Is(err, lanes.ErrLaneFull):
		return jobs.Outcome{Err: err, Retryable: true, RetryAfter: jr.Lanes.RetryAfter(j.Lane)}
	case errors.Is(err, lanes.ErrUnknownLane):
		return jobs.Outcome{Err: err}
	default: // expired, closed, or shutting down: the job runs later
		return jobs.Outcome{Err: err, Retryable: true}
	}
	grant := g.(*workers.Grant)
	if !start() {
		grant.Release()
		kg.settle(wire.Usage{}, "", false, false)
		return jobs.Outcome{Err: jobs.ErrNotStarted}
	}
	if kg != nil {
		kg.called = true
	}
	resp, err := router.Do(ctx, req, grant)
	if err != nil {
		kg.settle(wire.Usage{}, "", false, false)
		var we *workers.Error
		switch {
		case errors.As(err, &we):
			return jobs.Outcome{Err: err, Retryable: true, RetryAfter: we.RetryAfter()}
		case errors.Is(err, workers.ErrInvalidRequest), errors.Is(err, workers.ErrUnknownModel):
			return jobs.Outcome{Err: err}
		}
		return jobs.Outcome{Err: err, Retryable: true}
	}
	kg.settle(resp.Usage, resp.UpstreamModel, resp.StatusCode < 300, resp.Stream != nil)
	if resp.Stream != nil {
		// Jobs are refused at submit when they ask for a stream.
		resp.Stream.Close()
		return jobs.Outcome{Err: errors.New("a job cannot be streamed")}
	}
	jr.record(&j, route, resp)
	return jobs.Outcome{StatusCode: resp.StatusCode, Body: resp.Body, Provider: resp.Provider}
}

// record meters a run an upstream answered; refusals that state no usage
// are not metered.
func (jr *JobRunner) record(j *jobs.Job, route string, resp *workers.Response) {
	if jr.Meter == nil || !resp.Usage.Known && (resp.StatusCode < 200 || resp.StatusCode > 299) {
		return
	}
	mode := metering.ModeJob
	if j.BatchID != "" {
		mode = metering.ModeBatch
	}
	jr.Meter.Record(metering.Call{
		Mode: mode, RequestID: j.RequestID, JobID: j.ID, BatchID: j.BatchID, Key: j.KeyName, Route: route,
		Provider: resp.Provider, Model: resp.UpstreamModel, Usage: resp.Usage,
	})
}

// gate reserves a job's worst case from its key's budget and returns the
// gate its admission goes through (nil when its key has neither limits
// nor a budget). When the budget refuses, ok is false and out ends the
// job: exhausted, it fails with the budget's 429 answer in the job's
// format as its result (no retry helps); unreachable, it is retried.
func (jr *JobRunner) gate(ctx context.Context, j *jobs.Job, f workers.Format, d any, body []byte, fields wire.Fields) (g *gate, out jobs.Outcome, ok bool) {
	k, known := jr.Quotas.Key(j.KeyName)
	if !known {
		return nil, out, true
	}
	g = jr.Quotas.newGate(&k, body, fields)
	if g == nil {
		return nil, out, true
	}
	g.batch = j.BatchID != ""
	if err := g.reserve(ctx, k.Budget, d, fields.Model); err != nil {
		if errors.Is(err, budgets.ErrUnreachable) {
			return nil, jobs.Outcome{Err: err, Retryable: true, RetryAfter: 5 * time.Second}, false
		}
		e := budgetError(k.Name, k.Budget, err)
		return nil, jobs.Outcome{StatusCode: e.statusFor(f), Body: e.body(f, j.RequestID)}, false
	}
	return g, out, true
}
