package gateway

// This file owns the relay's own APIs' frame (ownHandler: authentication,
// JSON answers, errors in Anthropic's format, the log line) and the
// /v1/jobs endpoints.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/wire"
)

// JobService stores and runs asynchronous jobs. *jobs.Service implements
// it. With a JobService in Deps the gateway serves POST /v1/jobs,
// GET /v1/jobs/{id} and DELETE /v1/jobs/{id}; without one those paths are
// unknown (404).
type JobService interface {
	// CheckCallbackURL refuses callback URLs the relay may not call; its
	// errors are safe to show clients.
	CheckCallbackURL(ctx context.Context, raw string) error
	// Submit stores a job; created is false when an Idempotency-Key
	// named an earlier job, which is returned.
	Submit(ctx context.Context, sub jobs.Submission) (j jobs.Job, created bool, err error)
	// Get returns key's job id, or jobs.ErrNotFound / jobs.ErrExpired.
	Get(ctx context.Context, key, id string) (jobs.Job, error)
	// Cancel cancels key's queued job, or returns jobs.ErrNotCancelable.
	Cancel(ctx context.Context, key, id string) (jobs.Job, error)
}

var _ JobService = (*jobs.Service)(nil)

// jobRequest is the body of POST /v1/jobs.
type jobRequest struct {
	Endpoint    string          `json:"endpoint"`
	Body        json.RawMessage `json:"body"`
	Lane        string          `json:"lane"`
	CallbackURL string          `json:"callback_url"`
	Metadata    json.RawMessage `json:"metadata"`
}

// written is the value an own API's handler returns after writing the
// answer itself.
type written struct{}

// ownHandler wraps a handler of the relay's own APIs (/v1/jobs and the
// Message Batches API, api names which in the log): it authenticates,
// answers errors in Anthropic's format (the /v1/jobs API extends the
// Anthropic API, and the batches API is Anthropic's) and logs one line. The
// handler returns the status and the value to answer as JSON, or written{}
// when it has answered itself.
func (s *Server) ownHandler(api string, h func(c echo.Context, st *state, k *key) (int, any, *apiError)) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		requestID := requestIDOf(c)
		hd := c.Response().Header()
		hd["X-Request-Id"] = []string{requestID}
		hd["Request-Id"] = []string{requestID}
		st := s.state.Load()
		var status int
		var keyName string
		k, aerr := st.authenticate(c.Request())
		if aerr == nil {
			keyName = k.Name
			var v any
			status, v, aerr = h(c, st, k)
			if _, done := v.(written); aerr == nil && !done {
				b, err := json.Marshal(v)
				if err != nil {
					aerr = errInternal("internal error")
					aerr.cause = err
				} else {
					hd["Content-Type"] = []string{"application/json"}
					c.Response().WriteHeader(status)
					_, _ = c.Response().Write(b)
				}
			}
		}
		line := requestLine{requestID: requestID, api: api, method: c.Request().Method, path: c.Path(), key: keyName,
			status: status}
		if aerr != nil {
			line.status, line.err = aerr.status, aerr
			if aerr.cause != nil {
				line.err = aerr.cause
			}
			if !c.Response().Committed {
				s.writeError(c, workers.FormatAnthropic, requestID, aerr)
			}
		}
		line.duration = time.Since(start)
		s.logRequest(c.Request().Context(), &line)
		return nil
	}
}

// jobsHandler wraps a /v1/jobs handler (ownHandler).
func (s *Server) jobsHandler(h func(c echo.Context, st *state, k *key) (int, any, *apiError)) echo.HandlerFunc {
	return s.ownHandler("jobs", h)
}

// handleJobSubmit serves POST /v1/jobs: 202 with the new job, or 200 with
// the earlier job when the Idempotency-Key was used before by this key.
func (s *Server) handleJobSubmit(c echo.Context, st *state, k *key) (int, any, *apiError) {
	bb := getBody()
	defer putBody(bb)
	raw, aerr := s.readBody(c, st.maxBodyBytes, bb)
	if aerr != nil {
		return 0, nil, aerr
	}
	req, aerr := decodeJob(raw, st.maxJSONDepth)
	if aerr != nil {
		return 0, nil, aerr
	}
	d, aerr := st.admit(&jobPolicy, k, req.Body, req.Lane, "")
	if aerr != nil {
		return 0, nil, aerr
	}
	if aerr := s.budgetSpent(c.Request().Context(), st, k, req.Body, d.fields); aerr != nil {
		return 0, nil, aerr
	}
	if len(req.Metadata) > 0 && string(req.Metadata) != "null" && bytes.TrimSpace(req.Metadata)[0] != '{' {
		return 0, nil, errBadRequest("metadata must be a JSON object")
	}
	if string(req.Metadata) == "null" {
		req.Metadata = nil
	}
	if aerr := s.checkCallbackURL(c.Request().Context(), req.CallbackURL); aerr != nil {
		return 0, nil, aerr
	}
	idem := c.Request().Header.Get("Idempotency-Key")
	if len(idem) > 255 {
		return 0, nil, errBadRequest("Idempotency-Key: longer than 255 characters")
	}
	j, created, err := s.jobs.Submit(c.Request().Context(), jobs.Submission{
		Key: k.Name, Endpoint: req.Endpoint, Model: d.fields.Model, Body: req.Body, Lane: d.lane.Name,
		CallbackURL: req.CallbackURL, Metadata: req.Metadata, IdempotencyKey: idem, RequestID: requestIDOf(c),
	})
	if err != nil {
		return 0, nil, jobError(err, "")
	}
	if !created {
		c.Response().Header()["Idempotent-Replayed"] = []string{"true"}
		return http.StatusOK, j, nil
	}
	return http.StatusAccepted, j, nil
}

// decodeJob reads the envelope of a job: within maxDepth for the job's
// own body, with no unknown fields, a known endpoint and a body.
func decodeJob(raw []byte, maxDepth int) (jobRequest, *apiError) {
	var req jobRequest
	// The job's own body sits one level down in the envelope.
	if wire.CheckDepth(raw, maxDepth+1) != nil {
		return req, errTooDeep("", maxDepth)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, errBadRequest("malformed job: " + err.Error())
	}
	if dec.More() {
		return req, errBadRequest("malformed job: trailing data after the JSON object")
	}
	if req.Endpoint != jobs.EndpointMessages && req.Endpoint != jobs.EndpointChatCompletions {
		return req, errBadRequest("endpoint must be " + jobs.EndpointMessages + " or " + jobs.EndpointChatCompletions)
	}
	if len(req.Body) == 0 || string(req.Body) == "null" {
		return req, errBadRequest("body: the request to run is required")
	}
	return req, nil
}

// checkCallbackURL answers 400 for a callback URL the relay may not call
// ("" is none, and fine).
func (s *Server) checkCallbackURL(ctx context.Context, raw string) *apiError {
	if raw == "" {
		return nil
	}
	if err := s.jobs.CheckCallbackURL(ctx, raw); err != nil {
		e := errBadRequest("callback_url: " + err.Error())
		e.cause = err
		return e
	}
	return nil
}

// handleJobGet serves GET /v1/jobs/{id}.
func (s *Server) handleJobGet(c echo.Context, _ *state, k *key) (int, any, *apiError) {
	id := c.Param("id")
	j, err := s.jobs.Get(c.Request().Context(), k.Name, id)
	if err != nil {
		return 0, nil, jobError(err, id)
	}
	return http.StatusOK, j, nil
}

// handleJobCancel serves DELETE /v1/jobs/{id}: 200 with the canceled job,
// 409 when it is running or finished.
func (s *Server) handleJobCancel(c echo.Context, _ *state, k *key) (int, any, *apiError) {
	id := c.Param("id")
	j, err := s.jobs.Cancel(c.Request().Context(), k.Name, id)
	if err != nil {
		return 0, nil, jobError(err, id)
	}
	return http.StatusOK, j, nil
}

// jobError maps a JobService error about job id to the client's answer.
func jobError(err error, id string) *apiError {
	return answerFor(err, &about{from: fromJobs, id: id})
}
