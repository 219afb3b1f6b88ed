package gateway

// This file owns GET /v1/jobs (a key's jobs, newest first, paginated like
// the Message Batches list) and POST /v1/jobs/{id}/callback (re-sending a
// callback that was given up).

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/relaygw/relay/lanes/jobs"
)

// JobLister lists a key's jobs and re-sends their callbacks. *jobs.Service
// implements it. When Deps.Jobs also implements JobLister, the gateway
// serves GET /v1/jobs and POST /v1/jobs/{id}/callback.
type JobLister interface {
	// ListJobs returns a page of key's jobs, newest first.
	ListJobs(ctx context.Context, key string, q jobs.JobQuery) (jobs.JobPage, error)
	// ResendCallback starts key's job's callback again, or returns
	// jobs.ErrNoCallback / jobs.ErrCallbackBusy.
	ResendCallback(ctx context.Context, key, id string) (jobs.Job, error)
}

var _ JobLister = (*jobs.Service)(nil)

// registerJobList adds the list and re-send routes when the job service
// serves them.
func (s *Server) registerJobList(e *echo.Echo) {
	jl, ok := s.jobs.(JobLister)
	if !ok {
		return
	}
	e.GET("/v1/jobs", s.jobsHandler(func(c echo.Context, st *state, k *key) (int, any, *apiError) {
		return s.handleJobList(c, st, jl, k)
	}))
	e.POST("/v1/jobs/:id/callback", s.jobsHandler(func(c echo.Context, _ *state, k *key) (int, any, *apiError) {
		return s.handleJobResend(c, jl, k)
	}))
}

// jobStatuses are the values of GET /v1/jobs?status=.
var jobStatuses = map[string]bool{jobs.StatusQueued: true, jobs.StatusRunning: true, jobs.StatusSucceeded: true,
	jobs.StatusFailed: true, jobs.StatusCanceled: true}

// handleJobList serves GET /v1/jobs?limit=&after_id=&before_id=&status=&lane=&created_after=.
func (s *Server) handleJobList(c echo.Context, st *state, jl JobLister, k *key) (int, any, *apiError) {
	q, aerr := jobQuery(c.Request(), st.lanes)
	if aerr != nil {
		return 0, nil, aerr
	}
	page, err := jl.ListJobs(c.Request().Context(), k.Name, q)
	if err != nil {
		return 0, nil, jobError(err, "")
	}
	return http.StatusOK, page, nil
}

// jobQuery reads the list parameters: limit is an integer of at least 1
// (above jobs.MaxListLimit it is cut to it), the cursors job ids (one at
// most), status a job status, lane one of lanes (the configured lanes: a
// lane the key may not use lists nothing, one that does not exist is an
// error, like a status that does not), created_after an RFC 3339 time.
func jobQuery(r *http.Request, lanes map[string]Lane) (jobs.JobQuery, *apiError) {
	v := r.URL.Query()
	q := jobs.JobQuery{Limit: jobs.DefaultListLimit, AfterID: v.Get("after_id"), BeforeID: v.Get("before_id"),
		Status: v.Get("status"), Lane: v.Get("lane")}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil && len(l) < 25 && allDigits(l) { // a huge number: as many as allowed
			n, err = jobs.MaxListLimit, nil
		}
		if err != nil || n < 1 {
			return q, errBadRequest("limit: must be a positive integer (at most " + strconv.Itoa(jobs.MaxListLimit) + " are returned)")
		}
		q.Limit = min(n, jobs.MaxListLimit)
	}
	switch {
	case q.AfterID != "" && q.BeforeID != "":
		return q, errBadRequest("before_id and after_id cannot be used together")
	case q.AfterID != "" && !jobs.ValidID(q.AfterID):
		return q, errBadRequest("after_id: not a job id")
	case q.BeforeID != "" && !jobs.ValidID(q.BeforeID):
		return q, errBadRequest("before_id: not a job id")
	case q.Status != "" && !jobStatuses[q.Status]:
		return q, errBadRequest("status: must be queued, running, succeeded, failed or canceled")
	case v.Has("lane") && q.Lane == "":
		return q, errBadRequest("lane: must not be empty")
	}
	if _, ok := lanes[q.Lane]; q.Lane != "" && !ok {
		return q, errBadRequest("lane: unknown lane " + strconv.Quote(q.Lane))
	}
	if t := v.Get("created_after"); t != "" {
		at, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return q, errBadRequest("created_after: must be an RFC 3339 time, e.g. 2025-01-02T15:04:05Z")
		}
		q.CreatedAfter = at
	}
	return q, nil
}

// allDigits reports whether s is a non-empty run of ASCII digits.
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// handleJobResend serves POST /v1/jobs/{id}/callback: 202 with the job
// whose callback starts a fresh retry schedule (same webhook-id); 404 for
// another key's job, 409 when the job has no callback, has not finished
// or its callback is still being delivered.
func (s *Server) handleJobResend(c echo.Context, jl JobLister, k *key) (int, any, *apiError) {
	id := c.Param("id")
	j, err := jl.ResendCallback(c.Request().Context(), k.Name, id)
	if err != nil {
		return 0, nil, jobError(err, id)
	}
	return http.StatusAccepted, j, nil
}
