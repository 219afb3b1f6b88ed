package gateway

// This file owns the endpoints that answer without an upstream call:
// /v1/models and /v1/messages/count_tokens.

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/wire"
)

// modelsEpoch is the creation time reported for routes, which have none.
var modelsEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// handleModels lists the routes the key may use: in Anthropic's shape when
// the request carries anthropic-version, else in OpenAI's.
func (s *Server) handleModels(c echo.Context) error {
	st := s.state.Load()
	f := formatOf(c.Request())
	k, aerr := st.authenticate(c.Request())
	if aerr != nil {
		s.writeError(c, f, requestIDOf(c), aerr)
		return nil
	}
	var ids []string
	if st.dispatcher != nil {
		ids = k.visibleModels(st.dispatcher)
	}
	b := make([]byte, 0, 64+96*len(ids))
	if f == workers.FormatAnthropic {
		b = append(b, `{"data":[`...)
		for i, id := range ids {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendAnthropicModel(b, id)
		}
		b = append(b, `],"has_more":false,"first_id":`...)
		b = appendNullable(b, first(ids))
		b = append(b, `,"last_id":`...)
		b = appendNullable(b, last(ids))
		b = append(b, '}')
	} else {
		b = append(b, `{"object":"list","data":[`...)
		for i, id := range ids {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendOpenAIModel(b, id)
		}
		b = append(b, "]}"...)
	}
	c.Response().Header()["X-Request-Id"] = []string{requestIDOf(c)}
	return c.JSONBlob(http.StatusOK, b)
}

// handleModel answers one model, if the key may use it.
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
	if st.dispatcher == nil || !st.dispatcher.Has(id) || !k.mayUseRoute(id) {
		s.writeError(c, f, rid, errModelNotFound(id))
		return nil
	}
	c.Response().Header()["X-Request-Id"] = []string{rid}
	if f == workers.FormatAnthropic {
		return c.JSONBlob(http.StatusOK, appendAnthropicModel(nil, id))
	}
	return c.JSONBlob(http.StatusOK, appendOpenAIModel(nil, id))
}

func appendAnthropicModel(b []byte, id string) []byte {
	b = append(b, `{"type":"model","id":`...)
	b = wire.AppendString(b, id)
	b = append(b, `,"display_name":`...)
	b = wire.AppendString(b, id)
	b = append(b, `,"created_at":"`...)
	b = modelsEpoch.AppendFormat(b, time.RFC3339)
	return append(b, `"}`...)
}

func appendOpenAIModel(b []byte, id string) []byte {
	b = append(b, `{"id":`...)
	b = wire.AppendString(b, id)
	b = append(b, `,"object":"model","created":`...)
	b = strconv.AppendInt(b, modelsEpoch.Unix(), 10)
	return append(b, `,"owned_by":"relay"}`...)
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
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
