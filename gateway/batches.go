package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"iter"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/relaygw/relay/lanes/jobs"
	"github.com/relaygw/relay/workers/logctx"
	"github.com/relaygw/relay/workers/wire"
)

// This file owns Anthropic's Message Batches API, served on the jobs
// service: each request of a batch runs as a /v1/messages job on the
// lanes, whatever the route's provider (the router translates), and its
// result is also published on NATS like any job's, with batch_id and
// custom_id set.

// BatchService stores and runs message batches. *jobs.Service implements
// it. When Deps.Jobs also implements BatchService, the gateway serves
// /v1/messages/batches and the rest of Anthropic's Message Batches API.
type BatchService interface {
	// ValidateBatch checks the items' count, custom_ids and params.
	ValidateBatch(items []jobs.BatchItem) error
	// SubmitBatch stores a batch, one job per item.
	SubmitBatch(ctx context.Context, key string, items []jobs.BatchItem, lane, callbackURL string) (jobs.Batch, error)
	// GetBatch returns key's batch, or jobs.ErrNotFound.
	GetBatch(ctx context.Context, key, id string) (jobs.Batch, error)
	// ListBatches returns a page of key's batches, newest first.
	ListBatches(ctx context.Context, key string, limit int, beforeID, afterID string) (jobs.BatchPage, error)
	// CancelBatch cancels key's batch, or returns jobs.ErrBatchEnded.
	CancelBatch(ctx context.Context, key, id string) (jobs.Batch, error)
	// DeleteBatch deletes key's ended batch, or returns
	// jobs.ErrBatchNotEnded.
	DeleteBatch(ctx context.Context, key, id string) error
	// BatchResults returns key's ended batch's JSONL result lines, or
	// jobs.ErrBatchNotEnded.
	BatchResults(ctx context.Context, key, id string) (jobs.Batch, iter.Seq2[[]byte, error], error)
}

var _ BatchService = (*jobs.Service)(nil)

// MaxBatchBytes is the default bound of a batch creation body
// (Config.MaxBatchBytes), as Anthropic's 256 MB.
const MaxBatchBytes = 256 << 20

// resultsFlushLines is how many result lines go out between flushes.
const resultsFlushLines = 64

// registerBatches adds the Message Batches routes when the job service
// serves batches.
func (s *Server) registerBatches(e *echo.Echo) {
	bs, ok := s.jobs.(BatchService)
	if !ok {
		return
	}
	e.POST("/v1/messages/batches", s.batchHandler(bs, s.handleBatchCreate))
	e.GET("/v1/messages/batches", s.batchHandler(bs, s.handleBatchList))
	e.GET("/v1/messages/batches/:id", s.batchHandler(bs, s.handleBatchGet))
	e.DELETE("/v1/messages/batches/:id", s.batchHandler(bs, s.handleBatchDelete))
	e.POST("/v1/messages/batches/:id/cancel", s.batchHandler(bs, s.handleBatchCancel))
	e.GET("/v1/messages/batches/:id/results", s.batchHandler(bs, s.handleBatchResults))
}

// batchHandler wraps a batch handler (ownHandler). A handler that returns
// written{} has answered already.
func (s *Server) batchHandler(bs BatchService, h func(c echo.Context, bs BatchService, st *state, k *key) (int, any, *apiError)) echo.HandlerFunc {
	return s.ownHandler("batches", func(c echo.Context, st *state, k *key) (int, any, *apiError) {
		return h(c, bs, st, k)
	})
}

// batchItemJSON is one element of "requests".
type batchItemJSON struct {
	CustomID string          `json:"custom_id"`
	Params   json.RawMessage `json:"params"`
}

// handleBatchCreate serves POST /v1/messages/batches: body
// {"requests":[{"custom_id","params"}...], "callback_url"?}. The body is
// decoded as a stream (up to MaxBatchBytes, charged to the body memory
// budget as it arrives), so only the items are held.
// Lane: x-relay-lane, else "batch" when the key may use it, else the key's
// default. 200 with the batch, as Anthropic answers.
func (s *Server) handleBatchCreate(c echo.Context, bs BatchService, st *state, k *key) (int, any, *apiError) {
	r := c.Request()
	if r.ContentLength > st.maxBatchBytes {
		return 0, nil, errTooLarge(st.maxBatchBytes)
	}
	lane, aerr := st.chooseLane(&batchPolicy, k, r.Header.Get("X-Relay-Lane"), "")
	if aerr != nil {
		return 0, nil, aerr
	}
	if aerr := s.budgetSpent(r.Context(), st, k, nil, wire.Fields{}); aerr != nil {
		return 0, nil, aerr
	}

	// The bytes read stay charged to the body memory budget until the
	// batch is stored: its items hold about as much.
	br := s.newBodyReader(c, st.maxBatchBytes)
	defer br.done()
	// Each item's params sit three levels down: {"requests":[{"params":
	deep := &depthReader{r: &br, s: wire.DepthScanner{Max: st.maxJSONDepth + 3}}
	items, callbackURL, aerr := decodeBatch(bufio.NewReaderSize(deep, 64<<10), st)
	if aerr != nil {
		return 0, nil, aerr
	}
	if err := bs.ValidateBatch(items); err != nil {
		return 0, nil, batchError(err, "")
	}
	for i := range items {
		if _, aerr := st.route(k, items[i].Model); aerr != nil {
			return 0, nil, within(itemParams(i)+".model", aerr)
		}
	}
	if aerr := s.checkCallbackURL(r.Context(), callbackURL); aerr != nil {
		return 0, nil, aerr
	}
	b, err := bs.SubmitBatch(r.Context(), k.Name, items, lane.Name, callbackURL)
	if err != nil {
		return 0, nil, batchError(err, "")
	}
	c.Response().Header()["X-Relay-Lane"] = []string{lane.Name}
	return http.StatusOK, withResultsURL(r, b), nil
}

// depthReader fails a read whose bytes nest deeper than its scanner's
// limit, before the JSON decoder (which recurses per level) sees them.
type depthReader struct {
	r io.Reader
	s wire.DepthScanner
}

// Read reads from the underlying reader and scans what it read.
func (d *depthReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if serr := d.s.Scan(p[:n]); serr != nil {
		return 0, serr
	}
	return n, err
}

// decodeBatch reads a batch creation body item by item, within st's
// limits (r must bound the whole body's nesting). Each item's params are
// peeked once, here. Unknown top-level fields are ignored, as new SDK
// fields should not break creation.
func decodeBatch(r io.Reader, st *state) ([]jobs.BatchItem, string, *apiError) {
	dec := json.NewDecoder(r)
	bad := func(err error) *apiError { return malformedBatch(err, st) }
	if t, err := dec.Token(); err != nil {
		return nil, "", bad(err)
	} else if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, "", errBadRequest("malformed message batch: the body must be a JSON object")
	}
	var items []jobs.BatchItem
	var callbackURL string
	var sawRequests bool
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, "", bad(err)
		}
		var aerr *apiError
		switch t {
		case "requests":
			sawRequests = true
			items, aerr = decodeBatchItems(dec, st, items)
		case "callback_url":
			var u *string
			if err := dec.Decode(&u); err != nil {
				return nil, "", errBadRequest("callback_url: must be a string")
			}
			if u != nil {
				callbackURL = *u
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				aerr = bad(err)
			}
		}
		if aerr != nil {
			return nil, "", aerr
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, "", bad(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			return nil, "", errBadRequest("malformed message batch: trailing data after the JSON object")
		}
		return nil, "", bad(err)
	}
	if !sawRequests {
		return nil, "", errBadRequest("requests: Field required")
	}
	return items, callbackURL, nil
}

// decodeBatchItems reads the "requests" array onto items, up to
// st.maxBatchRequests in all, peeking each one's params.
func decodeBatchItems(dec *json.Decoder, st *state, items []jobs.BatchItem) ([]jobs.BatchItem, *apiError) {
	if t, err := dec.Token(); err != nil {
		return nil, malformedBatch(err, st)
	} else if d, ok := t.(json.Delim); !ok || d != '[' {
		return nil, errBadRequest("requests: must be an array")
	}
	for dec.More() {
		if len(items) >= st.maxBatchRequests {
			return nil, errBadRequest("requests: at most " + strconv.Itoa(st.maxBatchRequests) +
				" requests are allowed in a message batch")
		}
		var it batchItemJSON
		if err := dec.Decode(&it); err != nil {
			return nil, malformedBatch(err, st)
		}
		if len(it.Params) == 0 || string(it.Params) == "null" {
			return nil, within(itemParams(len(items)), errBadRequest("Field required"))
		}
		f, aerr := st.peek(it.Params)
		if aerr != nil {
			return nil, within(itemParams(len(items)), aerr)
		}
		items = append(items, jobs.BatchItem{CustomID: it.CustomID, Model: f.Model, Stream: f.Stream, Params: it.Params})
	}
	if _, err := dec.Token(); err != nil {
		return nil, malformedBatch(err, st)
	}
	return items, nil
}

// itemParams names the params of a batch's item i, in errors.
func itemParams(i int) string { return "requests." + strconv.Itoa(i) + ".params" }

// malformedBatch answers a batch body that could not be read: too large,
// too deep, refused by the body memory budget, or not JSON.
func malformedBatch(err error, st *state) *apiError {
	var mbe *http.MaxBytesError
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae // the body memory budget refused
	case errors.As(err, &mbe):
		return errTooLarge(st.maxBatchBytes)
	}
	if errors.Is(err, wire.ErrTooDeep) {
		e := errTooDeep("message batch", st.maxJSONDepth)
		e.cause = err
		return e
	}
	e := errBadRequest("malformed message batch: " + err.Error())
	e.cause = err
	return e
}

// handleBatchList serves GET /v1/messages/batches?limit=&before_id=&after_id=.
func (s *Server) handleBatchList(c echo.Context, bs BatchService, _ *state, k *key) (int, any, *apiError) {
	q := c.Request().URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return 0, nil, errBadRequest("limit: must be an integer from 1 to 1000")
		}
		limit = n
	}
	before, after := q.Get("before_id"), q.Get("after_id")
	if before != "" && after != "" {
		return 0, nil, errBadRequest("before_id and after_id cannot be used together")
	}
	page, err := bs.ListBatches(c.Request().Context(), k.Name, limit, before, after)
	if err != nil {
		return 0, nil, batchError(err, "")
	}
	for i := range page.Data {
		page.Data[i] = withResultsURL(c.Request(), page.Data[i])
	}
	return http.StatusOK, page, nil
}

// handleBatchGet serves GET /v1/messages/batches/{id}.
func (s *Server) handleBatchGet(c echo.Context, bs BatchService, _ *state, k *key) (int, any, *apiError) {
	id := c.Param("id")
	b, err := bs.GetBatch(c.Request().Context(), k.Name, id)
	if err != nil {
		return 0, nil, batchError(err, id)
	}
	return http.StatusOK, withResultsURL(c.Request(), b), nil
}

// handleBatchCancel serves POST /v1/messages/batches/{id}/cancel: the
// batch, canceling (or already ended when nothing was left to cancel);
// 409 when it had ended before.
func (s *Server) handleBatchCancel(c echo.Context, bs BatchService, _ *state, k *key) (int, any, *apiError) {
	id := c.Param("id")
	b, err := bs.CancelBatch(c.Request().Context(), k.Name, id)
	if err != nil {
		return 0, nil, batchError(err, id)
	}
	return http.StatusOK, withResultsURL(c.Request(), b), nil
}

// handleBatchDelete serves DELETE /v1/messages/batches/{id}: only an
// ended batch may be deleted (409 otherwise).
func (s *Server) handleBatchDelete(c echo.Context, bs BatchService, _ *state, k *key) (int, any, *apiError) {
	id := c.Param("id")
	if err := bs.DeleteBatch(c.Request().Context(), k.Name, id); err != nil {
		return 0, nil, batchError(err, id)
	}
	return http.StatusOK, map[string]string{"id": id, "type": "message_batch_deleted"}, nil
}

// handleBatchResults serves GET /v1/messages/batches/{id}/results: JSONL
// (application/x-jsonl), one line per request in submission order,
// written as the item records are read and flushed every
// resultsFlushLines lines. A store failure midway aborts the connection,
// so the client sees a truncated body rather than a short, complete one.
func (s *Server) handleBatchResults(c echo.Context, bs BatchService, _ *state, k *key) (int, any, *apiError) {
	id := c.Param("id")
	_, seq, err := bs.BatchResults(c.Request().Context(), k.Name, id)
	if errors.Is(err, jobs.ErrBatchNotEnded) {
		return 0, nil, errBadRequest("message batch " + strconv.Quote(id) +
			" has not ended processing; its results are available once processing_status is \"ended\"")
	}
	if err != nil {
		return 0, nil, batchError(err, id)
	}
	w := c.Response()
	w.Header()["Content-Type"] = []string{"application/x-jsonl"}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w.Writer)
	bw := bufio.NewWriterSize(w, 64<<10)
	n := 0
	for line, err := range seq {
		if err != nil {
			s.log.WarnContext(c.Request().Context(), "batch results aborted", logctx.BatchID, id, "error", err)
			panic(http.ErrAbortHandler)
		}
		if n%resultsFlushLines == 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		}
		_, _ = bw.Write(line)
		if werr := bw.WriteByte('\n'); werr != nil {
			return http.StatusOK, written{}, nil // client gone
		}
		n++
		if n%resultsFlushLines == 0 {
			if bw.Flush() != nil {
				return http.StatusOK, written{}, nil
			}
			_ = rc.Flush()
		}
	}
	_ = bw.Flush()
	_ = rc.Flush()
	return http.StatusOK, written{}, nil
}

// withResultsURL sets b's results_url, once it has ended, to this relay's
// results path for it, built from the request's Host (and
// X-Forwarded-Proto, when a TLS proxy fronts the relay).
func withResultsURL(r *http.Request, b jobs.Batch) jobs.Batch {
	if b.ProcessingStatus != jobs.BatchEnded {
		return b
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	u := scheme + "://" + r.Host + "/v1/messages/batches/" + b.ID + "/results"
	b.ResultsURL = &u
	return b
}

// batchError maps a BatchService error about batch id to the client's
// answer.
func batchError(err error, id string) *apiError {
	return answerFor(err, &about{from: fromBatches, id: id})
}
