package simupstream

import "strconv"

// Fixed pieces of Anthropic replies.
const (
	anthDeltaHead = "event: content_block_delta\ndata: " +
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`
	anthDeltaTail   = "\"}}\n\n"
	anthStartHead   = "event: message_start\ndata: " + `{"type":"message_start","message":{"id":"msg_sim`
	anthBlockStart  = "event: content_block_start\ndata: " + `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n"
	anthBlockStop   = "event: content_block_stop\ndata: " + `{"type":"content_block_stop","index":0}` + "\n\n"
	anthDeltaHeadMD = "event: message_delta\ndata: " + `{"type":"message_delta","delta":{"stop_reason":"`
	anthMessageStop = "event: message_stop\ndata: " + `{"type":"message_stop"}` + "\n\n"
	anthUsageTail   = `,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"service_tier":"standard"}`
)

// anthropicStop returns the stop_reason for a reply capped or not by
// max_tokens.
func anthropicStop(capped bool) string {
	if capped {
		return "max_tokens"
	}
	return "end_turn"
}

// anthropicMessage answers POST /v1/messages.
func (x *exchange) anthropicMessage(req *request, cut bool) {
	if req.answer != nil {
		x.anthropicEcho(req, cut)
		return
	}
	n, capped := x.s.replyTokens(req.maxTokens)
	if req.stream {
		x.anthropicStream(req, n, capped, cut)
		return
	}
	p := x.scratch()
	b := append((*p)[:0], `{"id":"msg_sim`...)
	b = strconv.AppendUint(b, x.id, 10)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = append(b, req.model...)
	b = append(b, `,"content":[{"type":"text","text":"`...)
	b = append(b, x.s.tpl.content(n)...)
	b = append(b, `"}],"stop_reason":"`...)
	b = append(b, anthropicStop(capped)...)
	b = append(b, `","stop_sequence":null,"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(req.inputTokens), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, anthUsageTail...)
	b = append(b, '}')
	*p = b
	x.writeJSON(b, cut)
}

// anthropicStream answers POST /v1/messages with "stream": true.
func (x *exchange) anthropicStream(req *request, n int, capped, cut bool) {
	x.startSSE()
	p := x.scratch()
	b := x.appendAnthropicStart((*p)[:0], req)
	*p = b
	if !x.event(b) || !x.event(x.s.tpl.anthBlockStart) {
		return
	}
	var t timerSlot
	for i := range n {
		if !x.pace(&t, i) || !x.event(x.s.tpl.anthDeltas[i]) {
			return
		}
		if cut {
			x.cutStream()
			return
		}
	}
	if !x.event(x.s.tpl.anthBlockStop) {
		return
	}
	b = append(b[:0], anthDeltaHeadMD...)
	b = append(b, anthropicStop(capped)...)
	b = append(b, `","stop_sequence":null},"usage":{"output_tokens":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, "}}\n\n"...)
	*p = b
	if !x.event(b) {
		return
	}
	x.event(x.s.tpl.anthMessageStop)
}

// appendAnthropicStart appends the message_start event of a stream.
func (x *exchange) appendAnthropicStart(b []byte, req *request) []byte {
	b = append(b, anthStartHead...)
	b = strconv.AppendUint(b, x.id, 10)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = append(b, req.model...)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(req.inputTokens), 10)
	b = append(b, `,"output_tokens":1`...)
	b = append(b, anthUsageTail...)
	return append(b, "}}\n\n"...)
}

// countTokens answers POST /v1/messages/count_tokens.
func (x *exchange) countTokens(req *request, cut bool) {
	p := x.scratch()
	b := append((*p)[:0], `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(req.inputTokens), 10)
	b = append(b, '}')
	*p = b
	x.writeJSON(b, cut)
}
