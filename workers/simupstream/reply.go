package simupstream

import (
	"strconv"
	"time"
)

// Pieces of Echo-mode replies.
const (
	anthToolDeltaHead = "event: content_block_delta\ndata: " +
		`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"`
	oaiToolArgsHead = `{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"`
	oaiToolArgsTail = `"}}]},"logprobs":null,"finish_reason":null}]`
)

// anthropicStopReason returns the Messages API stop_reason for k.
func anthropicStopReason(k stopKind) string {
	switch k {
	case stopMaxTokens:
		return "max_tokens"
	case stopToolUse:
		return "tool_use"
	}
	return "end_turn"
}

// openAIFinishReason returns the Chat Completions finish_reason for k.
func openAIFinishReason(k stopKind) string {
	switch k {
	case stopMaxTokens:
		return "length"
	case stopToolUse:
		return "tool_calls"
	}
	return "stop"
}

// appendPieces appends the concatenated pieces of a.
func appendPieces(b []byte, a *answer) []byte {
	for _, p := range a.pieces {
		b = append(b, p...)
	}
	return b
}

// appendToolID appends the tool call id of the exchange: prefix + "sim" + id.
func (x *exchange) appendToolID(b []byte, prefix string) []byte {
	b = append(b, prefix...)
	b = append(b, "sim"...)
	return strconv.AppendUint(b, x.id, 10)
}

// anthropicEcho answers POST /v1/messages in Echo mode.
func (x *exchange) anthropicEcho(req *request, cut bool) {
	if req.stream {
		x.anthropicEchoStream(req, cut)
		return
	}
	a := req.answer
	p := x.scratch()
	b := append((*p)[:0], `{"id":"msg_sim`...)
	b = strconv.AppendUint(b, x.id, 10)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = append(b, req.model...)
	if a.tool != "" {
		b = append(b, `,"content":[{"type":"tool_use","id":"`...)
		b = x.appendToolID(b, "toolu_")
		b = append(b, `","name":`...)
		b = appendJSONString(b, a.tool)
		b = append(b, `,"input":`...)
		b = append(b, a.args...)
		b = append(b, '}')
	} else {
		b = append(b, `,"content":[{"type":"text","text":"`...)
		b = appendPieces(b, a)
		b = append(b, `"}`...)
	}
	b = append(b, `],"stop_reason":"`...)
	b = append(b, anthropicStopReason(a.stop)...)
	b = append(b, `","stop_sequence":null,"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(req.inputTokens), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(len(a.pieces)), 10)
	b = append(b, anthUsageTail...)
	b = append(b, '}')
	*p = b
	x.writeJSON(b, cut)
}

// anthropicEchoStream answers POST /v1/messages with "stream": true in Echo
// mode: one text or tool_use block whose deltas are the answer's pieces.
func (x *exchange) anthropicEchoStream(req *request, cut bool) {
	a := req.answer
	x.startSSE()
	p := x.scratch()
	b := x.appendAnthropicStart((*p)[:0], req)
	defer func() { *p = b }()
	if !x.event(b) {
		return
	}
	head := anthDeltaHead
	if a.tool != "" {
		head = anthToolDeltaHead
		b = append(b[:0], "event: content_block_start\ndata: "+
			`{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"`...)
		b = x.appendToolID(b, "toolu_")
		b = append(b, `","name":`...)
		b = appendJSONString(b, a.tool)
		b = append(b, `,"input":{}}}`+"\n\n"...)
	} else {
		b = append(b[:0], anthBlockStart...)
	}
	if !x.event(b) {
		return
	}
	var t timerSlot
	for i, piece := range a.pieces {
		b = append(append(append(b[:0], head...), piece...), anthDeltaTail...)
		if !x.pace(&t, i) || !x.event(b) {
			return
		}
		if cut {
			x.cutStream()
			return
		}
	}
	b = append(b[:0], anthBlockStop...)
	b = append(b, anthDeltaHeadMD...)
	b = append(b, anthropicStopReason(a.stop)...)
	b = append(b, `","stop_sequence":null},"usage":{"output_tokens":`...)
	b = strconv.AppendInt(b, int64(len(a.pieces)), 10)
	b = append(b, "}}\n\n"...)
	b = append(b, anthMessageStop...)
	x.event(b)
}

// chatEcho answers POST /v1/chat/completions in Echo mode.
func (x *exchange) chatEcho(req *request, cut bool) {
	if req.stream {
		x.chatEchoStream(req, cut)
		return
	}
	a := req.answer
	p := x.scratch()
	b := append((*p)[:0], `{"id":"chatcmpl-sim`...)
	b = strconv.AppendUint(b, x.id, 10)
	b = append(b, `","object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	b = append(b, `,"model":`...)
	b = append(b, req.model...)
	if a.tool != "" {
		b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"`...)
		b = x.appendToolID(b, "call_")
		b = append(b, `","type":"function","function":{"name":`...)
		b = appendJSONString(b, a.tool)
		b = append(b, `,"arguments":"`...)
		b = appendPieces(b, a)
		b = append(b, `"}}]`...)
	} else {
		b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
		b = appendPieces(b, a)
		b = append(b, '"')
	}
	b = append(b, `,"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"`...)
	b = append(b, openAIFinishReason(a.stop)...)
	b = append(b, `"}],"usage":`...)
	b = appendOpenAIUsage(b, req.inputTokens, len(a.pieces))
	b = append(b, `,"service_tier":"default","system_fingerprint":"fp_sim"}`...)
	*p = b
	x.writeJSON(b, cut)
}

// chatEchoStream answers POST /v1/chat/completions with "stream": true in
// Echo mode: content deltas, or a tool call whose arguments come in pieces.
func (x *exchange) chatEchoStream(req *request, cut bool) {
	a := req.answer
	p, b, prefix, end := x.startChatStream(req)
	defer func() { *p = b }()
	head, tail := oaiTokenHead, oaiTokenTail
	if a.tool != "" {
		head, tail = oaiToolArgsHead, oaiToolArgsTail
		b = append(b, `{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"`...)
		b = x.appendToolID(b, "call_")
		b = append(b, `","type":"function","function":{"name":`...)
		b = appendJSONString(b, a.tool)
		b = append(b, `,"arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]`...)
	} else {
		b = append(b, oaiRoleDelta...)
	}
	if !x.event(append(b, end...)) {
		return
	}
	var t timerSlot
	for i, piece := range a.pieces {
		b = append(append(append(b[:prefix], head...), piece...), tail...)
		if !x.pace(&t, i) || !x.event(append(b, end...)) {
			return
		}
		if cut {
			x.cutStream()
			return
		}
	}
	b = append(b[:prefix], oaiFinishHead...)
	b = append(b, openAIFinishReason(a.stop)...)
	b = append(b, `"}]`...)
	if !x.event(append(b, end...)) {
		return
	}
	if req.includeUsage {
		b = append(b[:prefix], `],"usage":`...)
		b = appendOpenAIUsage(b, req.inputTokens, len(a.pieces))
		if !x.event(append(b, oaiChunkEnd...)) {
			return
		}
	}
	x.event(x.s.tpl.oaiDone)
}
