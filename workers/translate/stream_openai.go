package translate

import (
	"fmt"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
)

// NewAnthropicToOpenAIStream returns a converter from an upstream Anthropic
// Messages event stream to OpenAI chat.completion.chunk events (data only, no
// event names).
//
// The first chunk carries delta.role "assistant"; text_delta becomes
// delta.content; a tool_use block becomes a tool_calls delta with its index,
// id and name, and its input_json_delta events argument deltas; message_delta
// becomes a chunk with finish_reason. On message_stop it emits, when
// includeUsage is set, a usage chunk with "choices": [], and then the final
// "[DONE]" event. ping and thinking events are dropped; an error event becomes
// data {"error":{...}} and ends the stream. Events nested deeper than
// maxDepth are refused (see Convert).
func NewAnthropicToOpenAIStream(includeUsage bool, maxDepth int) StreamConverter {
	return newAnthropicToOpenAIStream(includeUsage, time.Now().Unix(), maxDepth)
}

func newAnthropicToOpenAIStream(includeUsage bool, created int64, maxDepth int) *anthropicToOpenAI {
	return &anthropicToOpenAI{includeUsage: includeUsage, created: created, maxDepth: maxDepth}
}

// anthropicToOpenAI is the state of one Anthropic→OpenAI stream.
type anthropicToOpenAI struct {
	maxDepth     int
	includeUsage bool
	created      int64
	id, model    string
	started      bool  // role chunk sent
	finished     bool  // finish_reason chunk sent
	done         bool  // [DONE] or error sent
	tools        []int // content block index → tool call index, -1 for other blocks
	ncalls       int
	usage        usage
}

var _ StreamConverter = (*anthropicToOpenAI)(nil)

// Convert implements StreamConverter.
func (s *anthropicToOpenAI) Convert(ev Event) ([]Event, error) {
	if s.done {
		return nil, nil
	}
	root, skip, _, err := parseEvent(ev, s.maxDepth)
	if err != nil {
		return nil, fmt.Errorf("convert anthropic stream event: %w", err)
	}
	if skip || !root.Exists() {
		return nil, nil
	}
	typ := root.Get("type").String()
	if typ == "" {
		typ = ev.Name
	}
	switch typ {
	case "message_start":
		msg := root.Get("message")
		if s.id == "" {
			s.id = msg.Get("id").String()
		}
		if s.model == "" {
			s.model = msg.Get("model").String()
		}
		s.usage = readAnthropicUsage(msg.Get("usage"))
		return s.start(nil), nil
	case "content_block_start":
		return s.blockStart(root.Get("index").Int(), root.Get("content_block")), nil
	case "content_block_delta":
		return s.blockDelta(root.Get("index").Int(), root.Get("delta")), nil
	case "message_delta":
		u := root.Get("usage")
		s.usage.output = u.Get("output_tokens").Int()
		if v := u.Get("input_tokens"); v.Exists() {
			s.usage.input = v.Int()
		}
		if v := u.Get("cache_read_input_tokens"); v.Exists() {
			s.usage.cacheRead = v.Int()
		}
		if v := u.Get("cache_creation_input_tokens"); v.Exists() {
			s.usage.cacheWrite = v.Int()
		}
		return s.finishChunk(s.start(nil), root.Get("delta.stop_reason").String()), nil
	case "message_stop":
		return s.Finish(), nil
	case "error":
		return s.fail(root.Get("error")), nil
	}
	return nil, nil
}

// Finish implements StreamConverter.
func (s *anthropicToOpenAI) Finish() []Event {
	if s.done {
		return nil
	}
	out := s.start(nil)
	out = s.finishChunk(out, "")
	if s.includeUsage {
		b := make([]byte, 0, 256)
		b = s.appendChunkHead(b)
		b = append(b, `,"choices":[],"usage":`...)
		b = appendOpenAIUsage(b, s.usage)
		b = append(b, '}')
		out = append(out, Event{Data: b})
	}
	s.done = true
	return append(out, Event{Data: []byte(doneData)})
}

// start appends the role chunk unless it was sent.
func (s *anthropicToOpenAI) start(out []Event) []Event {
	if s.started {
		return out
	}
	s.started = true
	return append(out, s.chunk([]byte(`{"role":"assistant","content":""}`), ""))
}

func (s *anthropicToOpenAI) blockStart(index int64, block gjson.Result) []Event {
	out := s.start(nil)
	if index < 0 || index > int64(len(s.tools))+1024 {
		return out
	}
	for int64(len(s.tools)) <= index {
		s.tools = append(s.tools, -1)
	}
	switch block.Get("type").Str {
	case "text":
		if text := block.Get("text"); text.Str != "" {
			out = append(out, s.contentChunk(text))
		}
	case "tool_use":
		call := s.ncalls
		s.ncalls++
		s.tools[index] = call
		d := make([]byte, 0, 128)
		d = append(d, `{"tool_calls":[{"index":`...)
		d = strconv.AppendInt(d, int64(call), 10)
		d = append(d, `,"id":`...)
		d = appendStr(d, block.Get("id"))
		d = append(d, `,"type":"function","function":{"name":`...)
		d = appendStr(d, block.Get("name"))
		d = append(d, `,"arguments":`...)
		if input := block.Get("input"); input.IsObject() && !isEmptyObject(input.Raw) {
			d = appendString(d, input.Raw)
		} else {
			d = append(d, `""`...)
		}
		d = append(d, `}}]}`...)
		out = append(out, s.chunk(d, ""))
	}
	return out
}

func (s *anthropicToOpenAI) blockDelta(index int64, delta gjson.Result) []Event {
	out := s.start(nil)
	switch delta.Get("type").Str {
	case "text_delta":
		if text := delta.Get("text"); text.Str != "" {
			out = append(out, s.contentChunk(text))
		}
	case "input_json_delta":
		partial := delta.Get("partial_json")
		if partial.Str == "" || index < 0 || index >= int64(len(s.tools)) || s.tools[index] < 0 {
			return out
		}
		d := make([]byte, 0, len(partial.Raw)+64)
		d = append(d, `{"tool_calls":[{"index":`...)
		d = strconv.AppendInt(d, int64(s.tools[index]), 10)
		d = append(d, `,"function":{"arguments":`...)
		d = appendStr(d, partial)
		d = append(d, `}}]}`...)
		out = append(out, s.chunk(d, ""))
	}
	return out
}

// contentChunk returns a chunk whose delta is content text.
func (s *anthropicToOpenAI) contentChunk(text gjson.Result) Event {
	d := make([]byte, 0, len(text.Raw)+16)
	d = append(d, `{"content":`...)
	d = appendStr(d, text)
	d = append(d, '}')
	return s.chunk(d, "")
}

// finishChunk appends the finish_reason chunk unless it was sent.
func (s *anthropicToOpenAI) finishChunk(out []Event, stop string) []Event {
	if s.finished {
		return out
	}
	s.finished = true
	return append(out, s.chunk([]byte(`{}`), finishReason(stop, s.ncalls > 0)))
}

// chunk returns a chat.completion.chunk with one choice.
func (s *anthropicToOpenAI) chunk(delta []byte, finish string) Event {
	b := make([]byte, 0, len(delta)+192)
	b = s.appendChunkHead(b)
	b = append(b, `,"choices":[{"index":0,"delta":`...)
	b = append(b, delta...)
	b = append(b, `,"logprobs":null,"finish_reason":`...)
	if finish == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, finish)
	}
	b = append(b, `}]`...)
	if s.includeUsage {
		b = append(b, `,"usage":null`...)
	}
	return Event{Data: append(b, '}')}
}

// appendChunkHead appends the fields every chunk starts with, leaving the
// object open.
func (s *anthropicToOpenAI) appendChunkHead(b []byte) []byte {
	b = append(b, `{"id":"chatcmpl-`...)
	if s.id == "" {
		b = append(b, "relay"...)
	} else {
		b = appendEscaped(b, s.id)
	}
	b = append(b, `","object":"chat.completion.chunk","created":`...)
	b = strconv.AppendInt(b, s.created, 10)
	b = append(b, `,"model":`...)
	return appendString(b, s.model)
}

// fail converts an upstream error event into an OpenAI error payload and ends
// the stream.
func (s *anthropicToOpenAI) fail(e gjson.Result) []Event {
	s.done = true
	msg := e.Get("message")
	if msg.Type != gjson.String || msg.Str == "" {
		msg = gjson.Result{}
	}
	typ := e.Get("type").String()
	if typ == "" {
		typ = "api_error"
	}
	oType, code := openAIErrorType(typ)
	b := appendOpenAIError(make([]byte, 0, len(msg.Raw)+128), oType, code, msg, 500)
	return []Event{{Data: b}}
}

// isEmptyObject reports whether raw is a JSON object with no members.
func isEmptyObject(raw string) bool {
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '{', '}', ' ', '\t', '\n', '\r':
		default:
			return false
		}
	}
	return true
}
