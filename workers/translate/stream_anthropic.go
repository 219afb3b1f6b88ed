package translate

import (
	"fmt"
	"strconv"

	"github.com/tidwall/gjson"
)

// NewOpenAIToAnthropicStream returns a converter from an upstream OpenAI chat
// completion stream to Anthropic Messages events, each with its event: name.
//
// It emits message_start on the first chunk with a choice, opens a text block
// for text and a tool_use block (streamed as input_json_delta) for each tool
// call, closing the open block before opening the next, and ends with
// message_delta, carrying the stop_reason and the usage of the upstream's
// include_usage chunk when there is one, and message_stop when the upstream
// sends [DONE] or, failing that, on Finish. An upstream chunk with a top-level
// "error" becomes an Anthropic error event and ends the stream. Events
// nested deeper than maxDepth are refused (see Convert).
func NewOpenAIToAnthropicStream(maxDepth int) StreamConverter {
	return &openAIToAnthropic{open: -1, maxDepth: maxDepth}
}

// openAIToAnthropic is the state of one OpenAI→Anthropic stream.
type openAIToAnthropic struct {
	maxDepth  int
	id, model string
	started   bool // message_start sent
	done      bool // message_stop or error sent
	open      int  // index of the open content block, -1 for none
	next      int  // index of the next content block
	textOpen  bool // the open block is a text block
	tools     []toolBlock
	finish    string // upstream finish_reason
	hasUsage  bool
	usage     usage
}

// toolBlock maps an OpenAI tool call index to its Anthropic block index.
type toolBlock struct {
	call  int64
	block int
}

var _ StreamConverter = (*openAIToAnthropic)(nil)

// Convert implements StreamConverter.
func (s *openAIToAnthropic) Convert(ev Event) ([]Event, error) {
	if s.done {
		return nil, nil
	}
	root, skip, done, err := parseEvent(ev, s.maxDepth)
	if err != nil {
		return nil, fmt.Errorf("convert openai stream event: %w", err)
	}
	if skip {
		return nil, nil
	}
	if done {
		return s.Finish(), nil
	}
	if e := root.Get("error"); e.Exists() {
		return s.fail(e), nil
	}
	if s.id == "" {
		s.id = root.Get("id").String()
	}
	if s.model == "" {
		s.model = root.Get("model").String()
	}
	if u := root.Get("usage"); u.IsObject() {
		s.usage = readOpenAIUsage(u)
		s.hasUsage = true
	}
	choices := root.Get("choices")
	if !choices.IsArray() || choices.Get("#").Int() == 0 {
		return nil, nil
	}
	choice := firstChoice(choices)
	if choice.Get("index").Int() != 0 {
		return nil, nil
	}

	var out []Event
	out = s.start(out)
	delta := choice.Get("delta")
	for _, key := range [...]string{"content", "refusal"} {
		if text := delta.Get(key); text.Type == gjson.String && text.Str != "" {
			out = s.text(out, text)
		}
	}
	pos := int64(0)
	delta.Get("tool_calls").ForEach(func(_, call gjson.Result) bool {
		idx := pos
		if i := call.Get("index"); i.Type == gjson.Number {
			idx = i.Int()
		}
		out = s.toolCall(out, idx, call)
		pos++
		return true
	})
	if f := choice.Get("finish_reason"); f.Type == gjson.String && f.Str != "" {
		s.finish = f.Str
		out = s.closeBlock(out)
	}
	return out, nil
}

// Finish implements StreamConverter.
func (s *openAIToAnthropic) Finish() []Event {
	if s.done {
		return nil
	}
	out := s.start(nil)
	out = s.closeBlock(out)
	b := make([]byte, 0, 192)
	b = append(b, `{"type":"message_delta","delta":{"stop_reason":"`...)
	b = append(b, stopReason(s.finish, len(s.tools) > 0)...)
	b = append(b, `","stop_sequence":null},"usage":{"output_tokens":`...)
	b = strconv.AppendInt(b, s.usage.output, 10)
	if s.hasUsage {
		b = appendInt(b, "input_tokens", s.usage.input)
		b = appendInt(b, "cache_creation_input_tokens", s.usage.cacheWrite)
		b = appendInt(b, "cache_read_input_tokens", s.usage.cacheRead)
	}
	b = append(b, `}}`...)
	out = append(out,
		Event{Name: "message_delta", Data: b},
		Event{Name: "message_stop", Data: []byte(`{"type":"message_stop"}`)},
	)
	s.done = true
	return out
}

// start appends message_start unless it was sent.
func (s *openAIToAnthropic) start(out []Event) []Event {
	if s.started {
		return out
	}
	s.started = true
	b := make([]byte, 0, 256)
	b = append(b, `{"type":"message_start","message":{"id":"msg_`...)
	if s.id == "" {
		b = append(b, "relay"...)
	} else {
		b = appendEscaped(b, s.id)
	}
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = appendString(b, s.model)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, s.usage.input, 10)
	b = append(b, `,"output_tokens":0}}}`...)
	return append(out, Event{Name: "message_start", Data: b})
}

// text appends a text_delta, opening a text block first if needed.
func (s *openAIToAnthropic) text(out []Event, text gjson.Result) []Event {
	if !s.textOpen {
		out = s.closeBlock(out)
		out = s.openBlock(out, []byte(`{"type":"text","text":""}`))
		s.textOpen = true
	}
	b := make([]byte, 0, len(text.Raw)+80)
	b = append(b, `{"type":"content_block_delta","index":`...)
	b = strconv.AppendInt(b, int64(s.open), 10)
	b = append(b, `,"delta":{"type":"text_delta","text":`...)
	b = appendStr(b, text)
	b = append(b, `}}`...)
	return append(out, Event{Name: "content_block_delta", Data: b})
}

// toolCall appends the events for one tool call delta: a tool_use block start
// the first time the call index is seen, then its arguments as input_json_delta.
func (s *openAIToAnthropic) toolCall(out []Event, idx int64, call gjson.Result) []Event {
	block := -1
	for _, t := range s.tools {
		if t.call == idx {
			block = t.block
			break
		}
	}
	fn := call.Get("function")
	if block < 0 {
		out = s.closeBlock(out)
		b := make([]byte, 0, 128)
		b = append(b, `{"type":"tool_use","id":`...)
		if id := call.Get("id"); id.Type == gjson.String && id.Str != "" {
			b = append(b, id.Raw...)
		} else {
			b = append(b, `"toolu_relay_`...)
			b = strconv.AppendInt(b, int64(s.next), 10)
			b = append(b, '"')
		}
		b = append(b, `,"name":`...)
		b = appendStr(b, fn.Get("name"))
		b = append(b, `,"input":{}}`...)
		block = s.next
		out = s.openBlock(out, b)
		s.tools = append(s.tools, toolBlock{call: idx, block: block})
	}
	args := fn.Get("arguments")
	if args.String() == "" {
		return out
	}
	b := make([]byte, 0, len(args.Raw)+96)
	b = append(b, `{"type":"content_block_delta","index":`...)
	b = strconv.AppendInt(b, int64(block), 10)
	b = append(b, `,"delta":{"type":"input_json_delta","partial_json":`...)
	if args.Type == gjson.String {
		b = appendStr(b, args)
	} else {
		b = appendString(b, args.Raw)
	}
	b = append(b, `}}`...)
	return append(out, Event{Name: "content_block_delta", Data: b})
}

// openBlock appends content_block_start for block at the next index.
func (s *openAIToAnthropic) openBlock(out []Event, block []byte) []Event {
	b := make([]byte, 0, len(block)+64)
	b = append(b, `{"type":"content_block_start","index":`...)
	b = strconv.AppendInt(b, int64(s.next), 10)
	b = append(b, `,"content_block":`...)
	b = append(b, block...)
	b = append(b, '}')
	s.open = s.next
	s.next++
	return append(out, Event{Name: "content_block_start", Data: b})
}

// closeBlock appends content_block_stop for the open block, if any.
func (s *openAIToAnthropic) closeBlock(out []Event) []Event {
	if s.open < 0 {
		return out
	}
	b := make([]byte, 0, 48)
	b = append(b, `{"type":"content_block_stop","index":`...)
	b = strconv.AppendInt(b, int64(s.open), 10)
	b = append(b, '}')
	s.open = -1
	s.textOpen = false
	return append(out, Event{Name: "content_block_stop", Data: b})
}

// fail converts an upstream error into an Anthropic error event and ends the
// stream.
func (s *openAIToAnthropic) fail(e gjson.Result) []Event {
	s.done = true
	msg, typ, code := e, "", ""
	if e.IsObject() {
		msg = e.Get("message")
		typ, code = e.Get("type").String(), e.Get("code").String()
	}
	if msg.Type != gjson.String || msg.Str == "" {
		msg = gjson.Result{}
	}
	b := appendAnthropicError(make([]byte, 0, len(msg.Raw)+96), anthropicStreamErrorType(typ, code), msg, 500)
	return []Event{{Name: "error", Data: b}}
}
