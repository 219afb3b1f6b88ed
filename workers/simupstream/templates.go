package simupstream

import (
	"net/url"
	"strconv"
)

// templates are the byte strings prepared once per server.
type templates struct {
	text       []byte   // "tok0 tok1 ... tokN-1"
	ends       []int    // ends[i] is the length of the text of tokens 0..i
	anthDeltas [][]byte // complete content_block_delta events, one per token
	anthModels []byte   // GET /v1/models, Anthropic shape, every model on one page
	oaiModels  []byte   // GET /v1/models, OpenAI shape

	anthBlockStart, anthBlockStop, anthMessageStop, oaiDone []byte // fixed events
}

// simModel is a model listed by GET /v1/models.
type simModel struct {
	id, name, createdAt string
	created             int64
}

// listedModels returns the models GET /v1/models lists, newest first
// within each family as Anthropic lists them; Claude Code's default main
// and small/fast models are among them.
func listedModels() []simModel {
	return []simModel{
		{"claude-opus-5-5", "Claude Opus 5.5 (simulated)", "2026-09-01T00:00:00Z", 1788220800},
		{"claude-haiku-5-5", "Claude Haiku 5.5 (simulated)", "2026-09-01T00:00:00Z", 1788220800},
		{"claude-opus-4-6", "Claude Opus 4.6 (simulated)", "2026-02-05T00:00:00Z", 1770249600},
		{"claude-sonnet-4-6", "Claude Sonnet 4.6 (simulated)", "2026-02-17T00:00:00Z", 1771286400},
		{"claude-sonnet-4-5", "Claude Sonnet 4.5 (simulated)", "2025-09-29T00:00:00Z", 1759104000},
		{"claude-haiku-4-5", "Claude Haiku 4.5 (simulated)", "2025-10-01T00:00:00Z", 1759276800},
		{"claude-haiku-4-5-20251001", "Claude Haiku 4.5 (simulated)", "2025-10-01T00:00:00Z", 1759276800},
		{"gpt-4o", "GPT-4o (simulated)", "2024-05-13T00:00:00Z", 1715558400},
		{"gpt-4o-mini", "GPT-4o mini (simulated)", "2024-07-18T00:00:00Z", 1721260800},
	}
}

// newTemplates prepares the templates for replies of n tokens.
func newTemplates(n int) templates {
	t := templates{
		anthBlockStart:  []byte(anthBlockStart),
		anthBlockStop:   []byte(anthBlockStop),
		anthMessageStop: []byte(anthMessageStop),
		oaiDone:         []byte(oaiDone),
	}
	t.ends = make([]int, n)
	t.anthDeltas = make([][]byte, n)
	for i := range n {
		start := len(t.text)
		if i > 0 {
			t.text = append(t.text, ' ')
		}
		t.text = append(t.text, "tok"...)
		t.text = strconv.AppendInt(t.text, int64(i), 10)
		t.ends[i] = len(t.text)

		ev := []byte(anthDeltaHead)
		ev = append(ev, t.text[start:]...)
		ev = append(ev, anthDeltaTail...)
		t.anthDeltas[i] = ev
	}

	models := listedModels()
	t.anthModels = appendAnthropicModels(nil, models, false)
	o := []byte(`{"object":"list","data":[`)
	for i, m := range models {
		if i > 0 {
			o = append(o, ',')
		}
		o = append(o, `{"id":`...)
		o = appendJSONString(o, m.id)
		o = append(o, `,"object":"model","created":`...)
		o = strconv.AppendInt(o, m.created, 10)
		o = append(o, `,"owned_by":"simupstream"}`...)
	}
	t.oaiModels = append(o, "]}"...)
	return t
}

// appendAnthropicModels appends Anthropic's list page of models.
func appendAnthropicModels(b []byte, models []simModel, hasMore bool) []byte {
	b = append(b, `{"data":[`...)
	for i, m := range models {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":"model","id":`...)
		b = appendJSONString(b, m.id)
		b = append(b, `,"display_name":`...)
		b = appendJSONString(b, m.name)
		b = append(b, `,"created_at":`...)
		b = appendJSONString(b, m.createdAt)
		b = append(b, '}')
	}
	b = append(b, `],"has_more":`...)
	b = strconv.AppendBool(b, hasMore)
	for _, f := range [2]string{`,"first_id":`, `,"last_id":`} {
		b = append(b, f...)
		switch {
		case len(models) == 0:
			b = append(b, "null"...)
		case f == `,"first_id":`:
			b = appendJSONString(b, models[0].id)
		default:
			b = appendJSONString(b, models[len(models)-1].id)
		}
	}
	return append(b, '}')
}

// anthropicModelsPage answers GET /v1/models in Anthropic's shape with
// its pagination: limit (1..1000, default 20), then after_id or
// before_id. An id not listed gives an empty page. It returns an error
// message for a bad query.
func anthropicModelsPage(q url.Values) ([]byte, string) {
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, "limit: must be an integer from 1 to 1000"
		}
		limit = n
	}
	after, before := q.Get("after_id"), q.Get("before_id")
	if after != "" && before != "" {
		return nil, "after_id and before_id cannot be used together"
	}
	models := listedModels()
	lo, hi := 0, len(models)
	if id := after + before; id != "" {
		i := 0
		for i < len(models) && models[i].id != id {
			i++
		}
		switch {
		case i == len(models):
			lo, hi = 0, 0
		case after != "":
			lo = i + 1
		default:
			hi = i
			lo = max(0, hi-limit)
		}
	}
	end := min(hi, lo+limit)
	hasMore := end < hi
	if before != "" {
		hasMore = lo > 0
	}
	return appendAnthropicModels(nil, models[lo:end], hasMore), ""
}

// token returns the text of token i, with its leading space.
func (t *templates) token(i int) []byte {
	start := 0
	if i > 0 {
		start = t.ends[i-1]
	}
	return t.text[start:t.ends[i]]
}

// content returns the text of the first n tokens.
func (t *templates) content(n int) []byte { return t.text[:t.ends[n-1]] }

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONChars(b, s)
	return append(b, '"')
}

// appendJSONChars appends s escaped for the inside of a JSON string literal.
func appendJSONChars(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}
