package gateway

// This file owns the endpoints that answer without an upstream call:
// /v1/models and /v1/messages/count_tokens.

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/wire"
)

// modelsEpoch is the creation time reported for exact routes, which have
// none, and for upstream models whose upstream names none.
var modelsEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// modelsWait bounds how long GET /v1/models waits for an upstream's model
// list that has never been fetched; a pattern route whose upstream has
// not answered by then lists nothing this time (its fetch goes on, for
// the next call). A known list answers at once.
const modelsWait = time.Second

// Anthropic's list pagination: limit's default and bounds.
const (
	defaultModelsLimit = 20
	maxModelsLimit     = 1000
)

// modelsQuery is the pagination of an Anthropic-shaped GET /v1/models.
type modelsQuery struct {
	limit             int
	afterID, beforeID string
}

// parseModelsQuery reads limit (1..1000, default 20) and after_id or
// before_id, as Anthropic's API takes them.
func parseModelsQuery(c echo.Context) (modelsQuery, *apiError) {
	q := modelsQuery{limit: defaultModelsLimit, afterID: c.QueryParam("after_id"), beforeID: c.QueryParam("before_id")}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxModelsLimit {
			e := errBadRequest("limit: must be an integer from 1 to 1000")
			e.param = "limit"
			return q, e
		}
		q.limit = n
	}
	if q.afterID != "" && q.beforeID != "" {
		return q, errBadRequest("after_id and before_id cannot be used together")
	}
	return q, nil
}

// page returns the models of the page q asks for among ms (sorted by id),
// and whether more follow in its direction. after_id and before_id need
// not be listed: the page starts after (ends before) where they sort.
func (q modelsQuery) page(ms []workers.ModelInfo) ([]workers.ModelInfo, bool) {
	lo, hi := 0, len(ms)
	switch {
	case q.afterID != "":
		lo = sort.Search(len(ms), func(i int) bool { return ms[i].ID > q.afterID })
	case q.beforeID != "":
		hi = sort.Search(len(ms), func(i int) bool { return ms[i].ID >= q.beforeID })
		lo = max(0, hi-q.limit)
		return ms[lo:hi], lo > 0
	}
	end := min(hi, lo+q.limit)
	return ms[lo:end], end < hi
}

// visibleModels returns the models k may use: those whose route k may use.
func (st *state) visibleModels(ctx context.Context, k *key) []workers.ModelInfo {
	if st.dispatcher == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, modelsWait)
	defer cancel()
	all := st.dispatcher.ListModels(ctx)
	out := all[:0]
	for _, m := range all {
		if k.mayUseRoute(m.Route) {
			out = append(out, m)
		}
	}
	return out
}

// handleModels lists the models the key may use: its exact routes, and
// the upstream models its pattern routes serve. In Anthropic's shape,
// paginated, when the request carries anthropic-version, else in OpenAI's
// (all at once).
func (s *Server) handleModels(c echo.Context) error {
	st := s.state.Load()
	f := formatOf(c.Request())
	rid := requestIDOf(c)
	k, aerr := st.authenticate(c.Request())
	if aerr != nil {
		s.writeError(c, f, rid, aerr)
		return nil
	}
	var q modelsQuery
	if f == workers.FormatAnthropic {
		if q, aerr = parseModelsQuery(c); aerr != nil {
			s.writeError(c, f, rid, aerr)
			return nil
		}
	}
	ms := st.visibleModels(c.Request().Context(), k)
	c.Response().Header()["X-Request-Id"] = []string{rid}
	if f == workers.FormatAnthropic {
		page, more := q.page(ms)
		return c.JSONBlob(http.StatusOK, appendAnthropicList(make([]byte, 0, 64+128*len(page)), page, more))
	}
	b := make([]byte, 0, 64+96*len(ms))
	b = append(b, `{"object":"list","data":[`...)
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOpenAIModel(b, m)
	}
	return c.JSONBlob(http.StatusOK, append(b, "]}"...))
}

// appendAnthropicList appends Anthropic's list page of ms.
func appendAnthropicList(b []byte, ms []workers.ModelInfo, more bool) []byte {
	b = append(b, `{"data":[`...)
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendAnthropicModel(b, m)
	}
	b = append(b, `],"has_more":`...)
	b = strconv.AppendBool(b, more)
	b = append(b, `,"first_id":`...)
	var firstID, lastID string
	if len(ms) > 0 {
		firstID, lastID = ms[0].ID, ms[len(ms)-1].ID
	}
	b = appendNullable(b, firstID)
	b = append(b, `,"last_id":`...)
	b = appendNullable(b, lastID)
	return append(b, '}')
}

// handleModel answers one model, if a route the key may use serves it.
// A model a pattern route serves is answered whether its upstream lists
// it or not: the relay would send it.
func (s *Server) handleModel(c echo.Context) error {
	st := s.state.Load()
	f := formatOf(c.Request())
	rid := requestIDOf(c)
	k, aerr := st.authenticate(c.Request())
	if aerr != nil {
		s.writeError(c, f, rid, aerr)
		return nil
	}
	id := c.Param("id")
	var route string
	ok := st.dispatcher != nil
	if ok {
		route, ok = st.dispatcher.Route(id)
	}
	if !ok || !k.mayUseRoute(route) {
		s.writeError(c, f, rid, errModelNotFound(id))
		return nil
	}
	m := workers.ModelInfo{ID: id, Route: route}
	c.Response().Header()["X-Request-Id"] = []string{rid}
	if f == workers.FormatAnthropic {
		return c.JSONBlob(http.StatusOK, appendAnthropicModel(nil, m))
	}
	return c.JSONBlob(http.StatusOK, appendOpenAIModel(nil, m))
}

func appendAnthropicModel(b []byte, m workers.ModelInfo) []byte {
	name := m.DisplayName
	if name == "" {
		name = m.ID
	}
	created := m.Created
	if created.IsZero() {
		created = modelsEpoch
	}
	b = append(b, `{"type":"model","id":`...)
	b = wire.AppendString(b, m.ID)
	b = append(b, `,"display_name":`...)
	b = wire.AppendString(b, name)
	b = append(b, `,"created_at":"`...)
	b = created.UTC().AppendFormat(b, time.RFC3339)
	return append(b, `"}`...)
}

func appendOpenAIModel(b []byte, m workers.ModelInfo) []byte {
	created := m.Created
	if created.IsZero() {
		created = modelsEpoch
	}
	b = append(b, `{"id":`...)
	b = wire.AppendString(b, m.ID)
	b = append(b, `,"object":"model","created":`...)
	b = strconv.AppendInt(b, created.Unix(), 10)
	return append(b, `,"owned_by":"relay"}`...)
}

// handleCountTokens serves Anthropic's POST /v1/messages/count_tokens with
// the relay's estimate: a quarter of the characters of every string in
// the body's messages, system prompt and tools. The estimate needs no
// upstream call, so it works on every route, including ones served by
// OpenAI-compatible providers.
func (s *Server) handleCountTokens(c echo.Context) error {
	st := s.state.Load()
	rid := requestIDOf(c)
	f := workers.FormatAnthropic
	k, aerr := st.authenticate(c.Request())
	if aerr != nil {
		s.writeError(c, f, rid, aerr)
		return nil
	}
	bb := getBody()
	defer putBody(bb)
	body, aerr := s.readBody(c, st.maxBodyBytes, bb)
	if aerr != nil {
		s.writeError(c, f, rid, aerr)
		return nil
	}
	fields, aerr := st.peek(body)
	if aerr == nil {
		_, aerr = st.route(k, fields.Model)
	}
	if aerr != nil {
		s.writeError(c, f, rid, aerr)
		return nil
	}
	n := wire.EstimateInputTokens(body)
	c.Response().Header()["X-Request-Id"] = []string{rid}
	return c.JSONBlob(http.StatusOK, append(strconv.AppendInt([]byte(`{"input_tokens":`), int64(n), 10), '}'))
}
