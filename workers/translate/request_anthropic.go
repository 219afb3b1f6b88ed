package translate

import (
	"fmt"

	"github.com/tidwall/gjson"
)

// AnthropicToOpenAIRequest converts an Anthropic Messages request body into an
// OpenAI Chat Completions request body for upstreamModel (the body's own model
// when upstreamModel is empty).
//
// system becomes the first system message; text and image blocks become
// content parts; assistant tool_use blocks become tool_calls; user tool_result
// blocks become tool messages that precede the rest of that user turn; tools,
// tool_choice, max_tokens, temperature, top_p, stop_sequences, stream and
// metadata.user_id are mapped. thinking, top_k, cache_control, server tools and
// other fields without an equivalent are dropped. It returns an error wrapping
// ErrInvalidBody when body is not a JSON object or messages is not an array,
// and also wrapping a *wire.DepthError when it nests deeper than maxDepth.
func AnthropicToOpenAIRequest(body []byte, upstreamModel string, maxDepth int) ([]byte, error) {
	root, err := parseObject(body, maxDepth)
	if err != nil {
		return nil, fmt.Errorf("convert anthropic request: %w", err)
	}
	msgs := root.Get("messages")
	if msgs.Exists() && !msgs.IsArray() {
		return nil, fmt.Errorf("convert anthropic request: messages is not an array: %w", ErrInvalidBody)
	}

	w := a2oRequest{b: make([]byte, 0, len(body)+len(body)/8+256)}
	w.b = append(w.b, `{"model":`...)
	w.b = appendModel(w.b, upstreamModel, root.Get("model"))
	w.b = append(w.b, `,"messages":[`...)
	w.system(root.Get("system"))
	msgs.ForEach(func(_, m gjson.Result) bool {
		role := m.Get("role")
		if role.Str == "assistant" {
			w.assistant(m.Get("content"))
		} else {
			w.user(role, m.Get("content"))
		}
		return true
	})
	w.b = append(w.b, ']')
	w.tools(root.Get("tools"), root.Get("tool_choice"))

	b := w.b
	b = appendNumber(b, "max_tokens", root.Get("max_tokens"))
	b = appendNumber(b, "temperature", root.Get("temperature"))
	b = appendNumber(b, "top_p", root.Get("top_p"))
	if stops := root.Get("stop_sequences"); stops.IsArray() {
		mark := len(b)
		b = append(b, `,"stop":[`...)
		n := 0
		stops.ForEach(func(_, s gjson.Result) bool {
			if s.Type == gjson.String && s.Str != "" {
				if n > 0 {
					b = append(b, ',')
				}
				b = append(b, s.Raw...)
				n++
			}
			return true
		})
		if n == 0 {
			b = b[:mark]
		} else {
			b = append(b, ']')
		}
	}
	if root.Get("stream").Type == gjson.True {
		b = append(b, `,"stream":true,"stream_options":{"include_usage":true}`...)
	}
	if user := root.Get("metadata.user_id"); user.Type == gjson.String && user.Str != "" {
		b = append(b, `,"user":`...)
		b = append(b, user.Raw...)
	}
	return append(b, '}'), nil
}

// a2oRequest accumulates the OpenAI request; n counts messages written and
// parts and calls are scratch buffers reused across messages.
type a2oRequest struct {
	b     []byte
	n     int
	parts []byte
	calls []byte
}

// next writes the separator before a new message.
func (w *a2oRequest) next() {
	if w.n > 0 {
		w.b = append(w.b, ',')
	}
	w.n++
}

func (w *a2oRequest) system(sys gjson.Result) {
	if !sys.Exists() {
		return
	}
	mark := len(w.b)
	if w.n > 0 {
		w.b = append(w.b, ',')
	}
	w.b = append(w.b, `{"role":"system","content":"`...)
	start := len(w.b)
	w.b = appendJoinedText(w.b, sys, "\n")
	if len(w.b) == start {
		w.b = w.b[:mark]
		return
	}
	w.b = append(w.b, `"}`...)
	w.n++
}

// user writes a user turn: tool_result blocks become tool messages first, then
// the remaining text, image and document blocks form one user message.
func (w *a2oRequest) user(role, content gjson.Result) {
	if content.Type == gjson.String {
		w.next()
		w.b = append(w.b, `{"role":`...)
		w.b = appendRole(w.b, role)
		w.b = append(w.b, `,"content":`...)
		w.b = append(w.b, content.Raw...)
		w.b = append(w.b, '}')
		return
	}
	if !content.IsArray() {
		return
	}
	w.parts = w.parts[:0]
	nparts := 0
	onlyText := true
	var firstText gjson.Result
	addPart := func(part []byte, text gjson.Result) {
		if nparts > 0 {
			w.parts = append(w.parts, ',')
		}
		w.parts = append(w.parts, part...)
		if nparts == 0 {
			firstText = text
		}
		if !text.Exists() {
			onlyText = false
		}
		nparts++
	}
	var scratch []byte
	content.ForEach(func(_, block gjson.Result) bool {
		switch block.Get("type").Str {
		case "text":
			text := block.Get("text")
			if text.Type != gjson.String {
				return true
			}
			scratch = append(scratch[:0], `{"type":"text","text":`...)
			scratch = append(scratch, text.Raw...)
			scratch = append(scratch, '}')
			addPart(scratch, text)
		case "image":
			if part, ok := appendImagePart(scratch[:0], block.Get("source")); ok {
				scratch = part
				addPart(part, gjson.Result{})
			}
		case "document":
			if part, text, ok := appendDocumentPart(scratch[:0], block); ok {
				scratch = part
				addPart(part, text)
			}
		case "tool_result":
			w.next()
			w.b = append(w.b, `{"role":"tool","tool_call_id":`...)
			w.b = appendStr(w.b, block.Get("tool_use_id"))
			w.b = append(w.b, `,"content":"`...)
			c := block.Get("content")
			w.b = appendJoinedText(w.b, c, "\n")
			w.b = append(w.b, `"}`...)
			// Tool messages carry text only; images go into the user message.
			if c.IsArray() {
				c.ForEach(func(_, inner gjson.Result) bool {
					if inner.Get("type").Str == "image" {
						if part, ok := appendImagePart(scratch[:0], inner.Get("source")); ok {
							scratch = part
							addPart(part, gjson.Result{})
						}
					}
					return true
				})
			}
		}
		return true
	})
	if nparts == 0 {
		return
	}
	w.next()
	w.b = append(w.b, `{"role":`...)
	w.b = appendRole(w.b, role)
	w.b = append(w.b, `,"content":`...)
	if nparts == 1 && onlyText {
		w.b = append(w.b, firstText.Raw...)
	} else {
		w.b = append(w.b, '[')
		w.b = append(w.b, w.parts...)
		w.b = append(w.b, ']')
	}
	w.b = append(w.b, '}')
}

// assistant writes an assistant turn: text blocks joined into content and
// tool_use blocks as tool_calls. Thinking blocks are dropped.
func (w *a2oRequest) assistant(content gjson.Result) {
	w.next()
	w.b = append(w.b, `{"role":"assistant","content":`...)
	if content.Type == gjson.String {
		w.b = append(w.b, content.Raw...)
		w.b = append(w.b, '}')
		return
	}
	w.parts = w.parts[:0]
	w.calls = w.calls[:0]
	ncalls := 0
	hasText := false
	content.ForEach(func(_, block gjson.Result) bool {
		switch block.Get("type").Str {
		case "text":
			text := block.Get("text")
			if text.Type == gjson.String && text.Str != "" {
				w.parts = appendStrInner(w.parts, text)
				hasText = true
			}
		case "tool_use":
			if ncalls > 0 {
				w.calls = append(w.calls, ',')
			}
			w.calls = append(w.calls, `{"id":`...)
			w.calls = appendStr(w.calls, block.Get("id"))
			w.calls = append(w.calls, `,"type":"function","function":{"name":`...)
			w.calls = appendStr(w.calls, block.Get("name"))
			w.calls = append(w.calls, `,"arguments":`...)
			w.calls = appendArguments(w.calls, block.Get("input"))
			w.calls = append(w.calls, `}}`...)
			ncalls++
		}
		return true
	})
	switch {
	case hasText:
		w.b = append(w.b, '"')
		w.b = append(w.b, w.parts...)
		w.b = append(w.b, '"')
	case ncalls > 0:
		w.b = append(w.b, "null"...)
	default:
		w.b = append(w.b, `""`...)
	}
	if ncalls > 0 {
		w.b = append(w.b, `,"tool_calls":[`...)
		w.b = append(w.b, w.calls...)
		w.b = append(w.b, ']')
	}
	w.b = append(w.b, '}')
}

// tools writes tools (custom tools only; server tools have no input_schema and
// no equivalent), tool_choice and parallel_tool_calls.
func (w *a2oRequest) tools(tools, choice gjson.Result) {
	if !tools.IsArray() {
		return
	}
	mark := len(w.b)
	w.b = append(w.b, `,"tools":[`...)
	n := 0
	tools.ForEach(func(_, t gjson.Result) bool {
		schema := t.Get("input_schema")
		if !schema.IsObject() {
			return true
		}
		if n > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, `{"type":"function","function":{"name":`...)
		w.b = appendStr(w.b, t.Get("name"))
		if d := t.Get("description"); d.Type == gjson.String {
			w.b = append(w.b, `,"description":`...)
			w.b = append(w.b, d.Raw...)
		}
		w.b = append(w.b, `,"parameters":`...)
		w.b = append(w.b, schema.Raw...)
		w.b = append(w.b, `}}`...)
		n++
		return true
	})
	if n == 0 {
		w.b = w.b[:mark]
		return
	}
	w.b = append(w.b, ']')
	if !choice.IsObject() {
		return
	}
	switch choice.Get("type").Str {
	case "auto":
		w.b = append(w.b, `,"tool_choice":"auto"`...)
	case "any":
		w.b = append(w.b, `,"tool_choice":"required"`...)
	case "none":
		w.b = append(w.b, `,"tool_choice":"none"`...)
	case "tool":
		w.b = append(w.b, `,"tool_choice":{"type":"function","function":{"name":`...)
		w.b = appendStr(w.b, choice.Get("name"))
		w.b = append(w.b, `}}`...)
	}
	if choice.Get("disable_parallel_tool_use").Type == gjson.True {
		w.b = append(w.b, `,"parallel_tool_calls":false`...)
	}
}

// appendRole appends the role, defaulting to "user".
func appendRole(b []byte, role gjson.Result) []byte {
	if role.Type != gjson.String || role.Str == "" {
		return append(b, `"user"`...)
	}
	return append(b, role.Raw...)
}

// appendImagePart appends an OpenAI image_url part for an Anthropic image
// source: base64 data becomes a data URL, a url source stays a URL. File
// sources have no equivalent.
func appendImagePart(b []byte, src gjson.Result) ([]byte, bool) {
	switch src.Get("type").Str {
	case "base64":
		b = append(b, `{"type":"image_url","image_url":{"url":"data:`...)
		b = appendStrInner(b, src.Get("media_type"))
		b = append(b, ";base64,"...)
		b = appendStrInner(b, src.Get("data"))
		return append(b, `"}}`...), true
	case "url":
		b = append(b, `{"type":"image_url","image_url":{"url":`...)
		b = appendStr(b, src.Get("url"))
		return append(b, `}}`...), true
	}
	return b, false
}

// appendDocumentPart appends the OpenAI part for an Anthropic document block:
// a base64 PDF becomes a file part and a plain-text document a text part (text
// is then its text, for the single-string shortcut).
func appendDocumentPart(b []byte, block gjson.Result) ([]byte, gjson.Result, bool) {
	src := block.Get("source")
	switch src.Get("type").Str {
	case "base64":
		b = append(b, `{"type":"file","file":{"filename":`...)
		if title := block.Get("title"); title.Type == gjson.String && title.Str != "" {
			b = append(b, title.Raw...)
		} else {
			b = append(b, `"document.pdf"`...)
		}
		b = append(b, `,"file_data":"data:`...)
		b = appendStrInner(b, src.Get("media_type"))
		b = append(b, ";base64,"...)
		b = appendStrInner(b, src.Get("data"))
		return append(b, `"}}`...), gjson.Result{}, true
	case "text":
		data := src.Get("data")
		if data.Type != gjson.String {
			return b, gjson.Result{}, false
		}
		b = append(b, `{"type":"text","text":`...)
		b = append(b, data.Raw...)
		return append(b, '}'), data, true
	}
	return b, gjson.Result{}, false
}
