package simupstream

import (
	"strconv"
)

// templates are the byte strings prepared once per server.
type templates struct {
	text       []byte   // "tok0 tok1 ... tokN-1"
	ends       []int    // ends[i] is the length of the text of tokens 0..i
	anthDeltas [][]byte // complete content_block_delta events, one per token
	anthModels []byte   // GET /v1/models, Anthropic shape
	oaiModels  []byte   // GET /v1/models, OpenAI shape

	anthBlockStart, anthBlockStop, anthMessageStop, oaiDone []byte // fixed events
}

// simModel is a model listed by GET /v1/models.
type simModel struct {
	id, name, createdAt string
	created             int64
}

// listedModels returns the models GET /v1/models lists.
func listedModels() []simModel {
	return []simModel{
		{"claude-sonnet-4-5", "Claude Sonnet 4.5 (simulated)", "2025-09-29T00:00:00Z", 1759104000},
		{"claude-haiku-4-5", "Claude Haiku 4.5 (simulated)", "2025-10-01T00:00:00Z", 1759276800},
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
	a := []byte(`{"data":[`)
	o := []byte(`{"object":"list","data":[`)
	for i, m := range models {
		if i > 0 {
			a = append(a, ',')
			o = append(o, ',')
		}
		a = append(a, `{"type":"model","id":`...)
		a = appendJSONString(a, m.id)
		a = append(a, `,"display_name":`...)
		a = appendJSONString(a, m.name)
		a = append(a, `,"created_at":`...)
		a = appendJSONString(a, m.createdAt)
		a = append(a, '}')

		o = append(o, `{"id":`...)
		o = appendJSONString(o, m.id)
		o = append(o, `,"object":"model","created":`...)
		o = strconv.AppendInt(o, m.created, 10)
		o = append(o, `,"owned_by":"simupstream"}`...)
	}
	a = append(a, `],"has_more":false,"first_id":`...)
	a = appendJSONString(a, models[0].id)
	a = append(a, `,"last_id":`...)
	a = appendJSONString(a, models[len(models)-1].id)
	t.anthModels = append(a, '}')
	t.oaiModels = append(o, "]}"...)
	return t
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
