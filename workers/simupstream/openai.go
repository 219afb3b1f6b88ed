package simupstream

import (
	"strconv"
	"time"
)

// Fixed pieces of OpenAI replies.
const (
	oaiRoleDelta  = `{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]`
	oaiTokenHead  = `{"index":0,"delta":{"content":"`
	oaiTokenTail  = `"},"logprobs":null,"finish_reason":null}]`
	oaiFinishHead = `{"index":0,"delta":{},"logprobs":null,"finish_reason":"`
	oaiChunkEnd   = "}\n\n"
	oaiNullUsage  = `,"usage":null}` + "\n\n"
	oaiDone       = "data: [DONE]\n\n"
)

// openAIFinish returns the finish_reason for a reply capped or not by
// max_tokens.
func openAIFinish(capped bool) string {
	if capped {
		return "length"
	}
	return "stop"
}

// appendOpenAIUsage appends a Chat Completions usage object.
func appendOpenAIUsage(b []byte, in, out int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(in), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(out), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(in+out), 10)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},`+
		`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,`+
		`"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`...)
	return b
}

// chatCompletion answers POST /v1/chat/completions.
func (x *exchange) chatCompletion(req *request, cut bool) {
	if req.answer != nil {
		x.chatEcho(req, cut)
		return
	}
	n, capped := x.s.replyTokens(req.maxTokens)
	if req.stream {
		x.chatStream(req, n, capped, cut)
		return
	}
	p := x.scratch()
	b := append((*p)[:0], `{"id":"chatcmpl-sim`...)
	b = strconv.AppendUint(b, x.id, 10)
	b = append(b, `","object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	b = append(b, `,"model":`...)
	b = append(b, req.model...)
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
	b = append(b, x.s.tpl.content(n)...)
	b = append(b, `","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"`...)
	b = append(b, openAIFinish(capped)...)
	b = append(b, `"}],"usage":`...)
	b = appendOpenAIUsage(b, req.inputTokens, n)
	b = append(b, `,"service_tier":"default","system_fingerprint":"fp_sim"}`...)
	*p = b
	x.writeJSON(b, cut)
}

// startChatStream starts an SSE answer and returns the scratch buffer, the
// per-request chunk prefix written into it (its length is prefix) and how
// each chunk ends (with "usage":null when the client asked for usage).
// The caller stores the grown buffer back into *p.
func (x *exchange) startChatStream(req *request) (p *[]byte, b []byte, prefix int, end string) {
	x.startSSE()
	p = x.scratch()
	b = x.appendChatPrefix((*p)[:0], req)
	end = oaiChunkEnd
	if req.includeUsage {
		end = oaiNullUsage
	}
	return p, b, len(b), end
}

// chatStream answers POST /v1/chat/completions with "stream": true. Every
// chunk is built in the scratch buffer after a per-request prefix that is
// kept there, so a content chunk costs two appends.
func (x *exchange) chatStream(req *request, n int, capped, cut bool) {
	p, b, prefix, end := x.startChatStream(req)
	defer func() { *p = b }()

	b = append(b, oaiRoleDelta...)
	b = append(b, end...)
	if !x.event(b) {
		return
	}
	var t timerSlot
	for i := range n {
		if !x.pace(&t, i) {
			return
		}
		b = append(b[:prefix], oaiTokenHead...)
		b = append(b, x.s.tpl.token(i)...)
		b = append(b, oaiTokenTail...)
		b = append(b, end...)
		if !x.event(b) {
			return
		}
		if cut {
			x.cutStream()
			return
		}
	}
	b = append(b[:prefix], oaiFinishHead...)
	b = append(b, openAIFinish(capped)...)
	b = append(b, `"}]`...)
	b = append(b, end...)
	if !x.event(b) {
		return
	}
	if req.includeUsage {
		b = append(b[:prefix], `],"usage":`...)
		b = appendOpenAIUsage(b, req.inputTokens, n)
		b = append(b, oaiChunkEnd...)
		if !x.event(b) {
			return
		}
	}
	x.event(x.s.tpl.oaiDone)
}

// appendChatPrefix appends the start of every chunk of a chat stream, up to
// and including `"choices":[`.
func (x *exchange) appendChatPrefix(b []byte, req *request) []byte {
	b = append(b, `data: {"id":"chatcmpl-sim`...)
	b = strconv.AppendUint(b, x.id, 10)
	b = append(b, `","object":"chat.completion.chunk","created":`...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	b = append(b, `,"model":`...)
	b = append(b, req.model...)
	return append(b, `,"system_fingerprint":"fp_sim","choices":[`...)
}
