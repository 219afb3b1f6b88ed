package translate

import (
	"fmt"

	"github.com/tidwall/gjson"
)

// defaultMaxTokens is used when an OpenAI request sets no token limit, since
// Anthropic requires max_tokens.
const defaultMaxTokens = "4096"

// OpenAIToAnthropicRequest converts an OpenAI Chat Completions request body into
// an Anthropic Messages request body for upstreamModel (the body's own model
// when upstreamModel is empty).
//
// system and developer messages become system; max_completion_tokens or
// max_tokens becomes max_tokens (4096 when neither is set); tool messages
// become tool_result blocks and consecutive messages of one role are merged
// into one turn; assistant tool_calls become tool_use blocks; image_url parts
// become image blocks; stop, stream, tools, tool_choice, parallel_tool_calls,
// temperature (capped at 1), top_p and user are mapped. n, seed, penalties,
// response_format and other fields without an equivalent are dropped. It
// returns an error wrapping ErrInvalidBody when body is not a JSON object or
// messages is not an array, and also wrapping a *wire.DepthError when it
// nests deeper than maxDepth (tool call arguments nested deeper are passed
// on as {"raw": arguments}).
func OpenAIToAnthropicRequest(body []byte, upstreamModel string, maxDepth int) ([]byte, error) {
	root, err := parseObject(body, maxDepth)
	if err != nil {
		return nil, fmt.Errorf("convert openai request: %w", err)
	}
	msgs := root.Get("messages")
	if msgs.Exists() && !msgs.IsArray() {
		return nil, fmt.Errorf("convert openai request: messages is not an array: %w", ErrInvalidBody)
	}

	w := o2aRequest{maxDepth: maxDepth, b: make([]byte, 0, len(body)+len(body)/4+256)}
	w.b = append(w.b, `{"model":`...)
	w.b = appendModel(w.b, upstreamModel, root.Get("model"))
	w.b = append(w.b, `,"max_tokens":`...)
	maxTokens := root.Get("max_completion_tokens")
	if maxTokens.Type != gjson.Number {
		maxTokens = root.Get("max_tokens")
	}
	if maxTokens.Type == gjson.Number {
		w.b = append(w.b, maxTokens.Raw...)
	} else {
		w.b = append(w.b, defaultMaxTokens...)
	}
	w.system(msgs)
	w.b = append(w.b, `,"messages":[`...)
	msgs.ForEach(func(_, m gjson.Result) bool {
		switch m.Get("role").Str {
		case "user":
			w.user(m.Get("content"))
		case "assistant":
			w.assistant(m)
		case "tool":
			w.toolResult(m)
		}
		return true
	})
	w.end()
	w.b = append(w.b, ']')
	w.tools(root.Get("tools"), root.Get("tool_choice"), root.Get("parallel_tool_calls"))

	b := w.b
	if t := root.Get("temperature"); t.Type == gjson.Number {
		if t.Num > 1 {
			b = append(b, `,"temperature":1`...)
		} else {
			b = appendNumber(b, "temperature", t)
		}
	}
	b = appendNumber(b, "top_p", root.Get("top_p"))
	b = appendStops(b, root.Get("stop"))
	if root.Get("stream").Type == gjson.True {
		b = append(b, `,"stream":true`...)
	}
	if user := root.Get("user"); user.Type == gjson.String && user.Str != "" {
		b = append(b, `,"metadata":{"user_id":`...)
		b = append(b, user.Raw...)
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// o2aRequest accumulates the Anthropic request. Blocks are written one at a
// time; a block whose role matches the open message joins it, so consecutive
// tool results (and any same-role messages) merge into one turn and messages
// that end up with no blocks are never written.
type o2aRequest struct {
	maxDepth int
	b        []byte
	role     string
	open     bool
	msgs     int
}

// block prepares w.b for the next content block of a message in role.
func (w *o2aRequest) block(role string) {
	if w.open && w.role == role {
		w.b = append(w.b, ',')
		return
	}
	w.end()
	if w.msgs > 0 {
		w.b = append(w.b, ',')
	}
	w.b = append(w.b, `{"role":"`...)
	w.b = append(w.b, role...)
	w.b = append(w.b, `","content":[`...)
	w.open, w.role = true, role
	w.msgs++
}

// end closes the open message, if any.
func (w *o2aRequest) end() {
	if w.open {
		w.b = append(w.b, `]}`...)
		w.open = false
	}
}

// textBlock writes a text block for a non-empty string (Anthropic rejects
// empty text blocks).
func (w *o2aRequest) textBlock(role string, text gjson.Result) {
	if text.Type != gjson.String || text.Str == "" {
		return
	}
	w.block(role)
	w.b = append(w.b, `{"type":"text","text":`...)
	w.b = append(w.b, text.Raw...)
	w.b = append(w.b, '}')
}

// system writes the text of every system and developer message as system: a
// string for one, text blocks for several.
func (w *o2aRequest) system(msgs gjson.Result) {
	var first gjson.Result
	n := 0
	mark := len(w.b)
	w.b = append(w.b, `,"system":[`...)
	msgs.ForEach(func(_, m gjson.Result) bool {
		if role := m.Get("role").Str; role != "system" && role != "developer" {
			return true
		}
		add := func(text gjson.Result) {
			if text.Type != gjson.String || text.Str == "" {
				return
			}
			if n > 0 {
				w.b = append(w.b, ',')
			}
			w.b = append(w.b, `{"type":"text","text":`...)
			w.b = append(w.b, text.Raw...)
			w.b = append(w.b, '}')
			if n == 0 {
				first = text
			}
			n++
		}
		c := m.Get("content")
		if c.Type == gjson.String {
			add(c)
			return true
		}
		c.ForEach(func(_, part gjson.Result) bool {
			if part.Get("type").Str == "text" {
				add(part.Get("text"))
			}
			return true
		})
		return true
	})
	switch n {
	case 0:
		w.b = w.b[:mark]
	case 1:
		w.b = append(w.b[:mark], `,"system":`...)
		w.b = append(w.b, first.Raw...)
	default:
		w.b = append(w.b, ']')
	}
}

func (w *o2aRequest) user(content gjson.Result) {
	if content.Type == gjson.String {
		w.textBlock("user", content)
		return
	}
	content.ForEach(func(_, part gjson.Result) bool {
		switch part.Get("type").Str {
		case "text":
			w.textBlock("user", part.Get("text"))
		case "image_url":
			u := part.Get("image_url.url")
			if !u.Exists() {
				u = part.Get("image_url")
			}
			w.image(u)
		case "file":
			w.file(part.Get("file"))
		}
		return true
	})
}

// image writes an image block: data URLs as base64 sources, other URLs as url
// sources.
func (w *o2aRequest) image(u gjson.Result) {
	if u.Type != gjson.String || u.Str == "" {
		return
	}
	if media, data, ok := splitDataURL(u.Str); ok {
		w.block("user")
		w.b = append(w.b, `{"type":"image","source":{"type":"base64","media_type":`...)
		w.b = appendString(w.b, media)
		w.b = append(w.b, `,"data":`...)
		w.b = appendString(w.b, data)
		w.b = append(w.b, `}}`...)
		return
	}
	if len(u.Str) >= 5 && u.Str[:5] == "data:" {
		return
	}
	w.block("user")
	w.b = append(w.b, `{"type":"image","source":{"type":"url","url":`...)
	w.b = append(w.b, u.Raw...)
	w.b = append(w.b, `}}`...)
}

// file writes a document block for an inline PDF file part. File IDs refer to
// OpenAI's file store and have no equivalent.
func (w *o2aRequest) file(f gjson.Result) {
	media, data, ok := splitDataURL(f.Get("file_data").Str)
	if !ok || media != "application/pdf" {
		return
	}
	w.block("user")
	w.b = append(w.b, `{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":`...)
	w.b = appendString(w.b, data)
	w.b = append(w.b, `}}`...)
}

func (w *o2aRequest) assistant(m gjson.Result) {
	c := m.Get("content")
	if c.Type == gjson.String {
		w.textBlock("assistant", c)
	} else {
		c.ForEach(func(_, part gjson.Result) bool {
			switch part.Get("type").Str {
			case "text":
				w.textBlock("assistant", part.Get("text"))
			case "refusal":
				w.textBlock("assistant", part.Get("refusal"))
			}
			return true
		})
	}
	m.Get("tool_calls").ForEach(func(_, call gjson.Result) bool {
		fn := call.Get("function")
		w.block("assistant")
		w.b = append(w.b, `{"type":"tool_use","id":`...)
		w.b = appendStr(w.b, call.Get("id"))
		w.b = append(w.b, `,"name":`...)
		w.b = appendStr(w.b, fn.Get("name"))
		w.b = append(w.b, `,"input":`...)
		w.b = appendToolInput(w.b, fn.Get("arguments"), w.maxDepth)
		w.b = append(w.b, '}')
		return true
	})
}

func (w *o2aRequest) toolResult(m gjson.Result) {
	w.block("user")
	w.b = append(w.b, `{"type":"tool_result","tool_use_id":`...)
	w.b = appendStr(w.b, m.Get("tool_call_id"))
	mark := len(w.b)
	w.b = append(w.b, `,"content":"`...)
	start := len(w.b)
	w.b = appendJoinedText(w.b, m.Get("content"), "\n")
	if len(w.b) == start {
		w.b = w.b[:mark]
	} else {
		w.b = append(w.b, '"')
	}
	w.b = append(w.b, '}')
}

// tools writes function tools, tool_choice and parallel_tool_calls=false as
// disable_parallel_tool_use.
func (w *o2aRequest) tools(tools, choice, parallel gjson.Result) {
	if !tools.IsArray() {
		return
	}
	mark := len(w.b)
	w.b = append(w.b, `,"tools":[`...)
	n := 0
	tools.ForEach(func(_, t gjson.Result) bool {
		if typ := t.Get("type").Str; typ != "function" && typ != "" {
			return true
		}
		fn := t.Get("function")
		if !fn.IsObject() {
			return true
		}
		if n > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, `{"name":`...)
		w.b = appendStr(w.b, fn.Get("name"))
		if d := fn.Get("description"); d.Type == gjson.String {
			w.b = append(w.b, `,"description":`...)
			w.b = append(w.b, d.Raw...)
		}
		w.b = append(w.b, `,"input_schema":`...)
		if p := fn.Get("parameters"); p.IsObject() {
			w.b = append(w.b, p.Raw...)
		} else {
			w.b = append(w.b, `{"type":"object","properties":{}}`...)
		}
		w.b = append(w.b, '}')
		n++
		return true
	})
	if n == 0 {
		w.b = w.b[:mark]
		return
	}
	w.b = append(w.b, ']')

	typ, name := "", gjson.Result{}
	switch {
	case choice.Type == gjson.String:
		switch choice.Str {
		case "auto":
			typ = "auto"
		case "required":
			typ = "any"
		case "none":
			typ = "none"
		}
	case choice.IsObject() && choice.Get("type").Str == "function":
		if name = choice.Get("function.name"); name.Type == gjson.String {
			typ = "tool"
		}
	}
	noParallel := parallel.Type == gjson.False
	if typ == "" && noParallel {
		typ = "auto"
	}
	if typ == "" {
		return
	}
	w.b = append(w.b, `,"tool_choice":{"type":"`...)
	w.b = append(w.b, typ...)
	w.b = append(w.b, '"')
	if typ == "tool" {
		w.b = append(w.b, `,"name":`...)
		w.b = append(w.b, name.Raw...)
	}
	if noParallel && typ != "none" {
		w.b = append(w.b, `,"disable_parallel_tool_use":true`...)
	}
	w.b = append(w.b, '}')
}

// appendStops appends stop (a string or an array of strings) as stop_sequences.
func appendStops(b []byte, stop gjson.Result) []byte {
	if stop.Type == gjson.String {
		if stop.Str == "" {
			return b
		}
		b = append(b, `,"stop_sequences":[`...)
		b = append(b, stop.Raw...)
		return append(b, ']')
	}
	if !stop.IsArray() {
		return b
	}
	mark := len(b)
	b = append(b, `,"stop_sequences":[`...)
	n := 0
	stop.ForEach(func(_, s gjson.Result) bool {
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
		return b[:mark]
	}
	return append(b, ']')
}
