package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/simupstream"
	"github.com/relaygw/relay/workers/workerstest"
)

func TestJobRunner(t *testing.T) {
	ok := newUpstream(t, "ok", simupstream.Options{})
	bad := newUpstream(t, "bad", simupstream.Options{})
	bad.sim.SetFault(simupstream.Fault400)
	down := newUpstream(t, "down", simupstream.Options{})
	down.sim.SetFault(simupstream.Fault503)
	fullActor := workerstest.Actor(actor.Options{Name: "full", MaxConcurrency: 1})
	hold, err := fullActor.Admit(0, 0) // the one slot stays taken
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Done(actor.Outcome{Kind: actor.Canceled})
	passThrough := ok.target(nil)
	passThrough.Model = ""
	r, err := workerstest.Router(workers.RouterOptions{Backoff: time.Millisecond, Routes: []workers.RouteSpec{
		{Model: "ok", Targets: []workers.Target{ok.target(nil)}},
		{Model: "pat-*", Targets: []workers.Target{passThrough}},
		{Model: "bad", Targets: []workers.Target{bad.target(nil)}},
		{Model: "down", Targets: []workers.Target{down.target(nil)}},
		{Model: "full", Targets: []workers.Target{newUpstream(t, "full", simupstream.Options{}).target(fullActor)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	set, err := lanes.Open(context.Background(), lanes.Options{Lanes: []lanes.Spec{
		{Name: "batch", MaxDepth: 10, MaxWait: 50 * time.Millisecond},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	jr := &gateway.JobRunner{Router: func() gateway.JobDispatcher { return r }, Lanes: set}
	cases := []struct {
		name      string
		model     string
		lane      string
		wantCode  int
		retryable bool
		wantErr   bool
	}{
		{name: "success", model: "ok", lane: "batch", wantCode: 200},
		{name: "a pattern route serves a job", model: "pat-anything", lane: "batch", wantCode: 200},
		{name: "upstream 4xx ends the job", model: "bad", lane: "batch", wantCode: 400},
		{name: "every target failing is retryable", model: "down", lane: "batch", retryable: true, wantErr: true},
		{name: "no capacity within the wait is retryable", model: "full", lane: "batch", retryable: true, wantErr: true},
		{name: "unknown lane ends the job", model: "ok", lane: "nope", wantErr: true},
		{name: "route removed ends the job", model: "gone", lane: "batch", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(`{"model":"` + tc.model + `","max_tokens":5,"messages":[]}`)
			out := jr.Run(context.Background(), jobs.Job{Endpoint: jobs.EndpointMessages, Lane: tc.lane, KeyName: "k", Model: tc.model}, body, func() bool { return true })
			if out.StatusCode != tc.wantCode || out.Retryable != tc.retryable || (out.Err != nil) != tc.wantErr {
				t.Errorf("Run = status %d retryable %v err %v; want %d %v err %v",
					out.StatusCode, out.Retryable, out.Err, tc.wantCode, tc.retryable, tc.wantErr)
			}
		})
	}
	t.Run("bad body", func(t *testing.T) {
		out := jr.Run(context.Background(), jobs.Job{Endpoint: jobs.EndpointMessages, Lane: "batch"}, []byte(`{`), func() bool { return true })
		if out.Err == nil || out.Retryable {
			t.Errorf("Run(bad body) = %+v; want a final error", out)
		}
	})
}
