package simupstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// apiFormat is the API family whose shapes a reply uses.
type apiFormat uint8

const (
	formatAnthropic apiFormat = iota
	formatOpenAI
)

// endpoint is a served API route.
type endpoint uint8

const (
	epNotFound endpoint = iota
	epMessages
	epCountTokens
	epChat
	epModels
)

// method returns the HTTP method ep accepts.
func (ep endpoint) method() string {
	if ep == epModels {
		return http.MethodGet
	}
	return http.MethodPost
}

// route maps a request to its endpoint and reply format; the query string
// plays no part.
func route(r *http.Request) (endpoint, apiFormat) {
	anthropic := r.Header.Get("Anthropic-Version") != ""
	switch r.URL.Path {
	case "/v1/messages":
		return epMessages, formatAnthropic
	case "/v1/messages/count_tokens":
		return epCountTokens, formatAnthropic
	case "/v1/chat/completions":
		return epChat, formatOpenAI
	case "/v1/models":
		if anthropic {
			return epModels, formatAnthropic
		}
		return epModels, formatOpenAI
	}
	if anthropic || strings.HasPrefix(r.URL.Path, "/v1/messages") {
		return epNotFound, formatAnthropic
	}
	return epNotFound, formatOpenAI
}

// Client-facing messages.
const (
	msgClosed       = "simulated upstream is shutting down"
	msgBusy         = "Number of concurrent connections has exceeded your rate limit (simulated)"
	msgRateLimited  = "Number of requests has exceeded your rate limit (simulated)"
	msgFault429     = "Rate limit reached (simulated)"
	msgFault500     = "Internal server error (simulated)"
	msgFault503     = "Service unavailable (simulated)"
	msgFault529     = "Overloaded"
	msgFault401     = "invalid x-api-key (simulated)"
	msgFault400     = "invalid request (simulated)"
	msgUnknownFault = "unknown x-sim-fault value"
	msgBadLatency   = "invalid x-sim-latency value"
	garbageBody     = "<html>oops</html>"
)

// errClosing is returned by timerSlot.sleep when the server is closing.
var errClosing = errors.New("simupstream: closing")

// exchange is one request being served.
type exchange struct {
	s      *Server
	w      http.ResponseWriter
	r      *http.Request
	format apiFormat
	id     uint64
	rid    string  // request ID, "req_sim<id>"
	buf    *[]byte // pooled scratch space, taken lazily
	flush  http.Flusher
	at     time.Time  // when the request arrived
	limit  limitIndex // the cause of a 429 reply, set before it is written
}

// serve is the server's HTTP handler.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, controlPrefix) {
		s.serveControl(w, r)
		return
	}
	ep, format := route(r)
	x := exchange{s: s, w: w, r: r, format: format, id: s.seq.Add(1)}
	var idb [32]byte
	x.rid = string(strconv.AppendUint(append(idb[:0], "req_sim"...), x.id, 10))
	if format == formatAnthropic {
		w.Header()["Request-Id"] = []string{x.rid}
	} else {
		w.Header()["X-Request-Id"] = []string{x.rid}
	}
	defer x.release()
	if !s.enter() {
		x.writeError(http.StatusServiceUnavailable, msgClosed)
		return
	}
	defer s.active.Done()
	s.requests.Add(1)
	x.at = time.Now()
	s.tl.request(x.at)
	defer s.opened()()

	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	body, err := readBody(bp, r.Body)
	if err != nil {
		s.count(0) // the client went away while sending
		return
	}
	if s.rec != nil {
		s.record(r, body)
	}
	x.handle(ep, body)
}

// handle applies the limits, the fault and the latency to a request whose
// body has been read, then replies.
func (x *exchange) handle(ep endpoint, body []byte) {
	s, w, r := x.s, x.w, x.r
	if ep == epNotFound {
		x.writeError(http.StatusNotFound, "Invalid URL ("+r.Method+" "+r.URL.Path+")")
		return
	}
	if r.Method != ep.method() {
		w.Header()["Allow"] = []string{ep.method()}
		x.writeError(http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
		return
	}
	if !s.admit() {
		w.Header()["Retry-After"] = []string{"1"}
		x.limit = limConcurrency
		x.writeError(http.StatusTooManyRequests, msgBusy)
		return
	}
	defer s.inFlight.Add(-1)
	if s.lim != nil && !x.takeRate() {
		return
	}
	if s.win != nil && !x.takeWindows() {
		return
	}
	fault, latency, ok := x.simHeaders()
	if !ok || x.applyFault(fault) {
		return
	}
	var req request
	if ep != epModels {
		var msg string
		if req, msg = parseRequest(body); msg != "" {
			x.writeError(http.StatusBadRequest, msg)
			return
		}
		if s.opts.Echo && ep != epCountTokens {
			req.answer = buildAnswer(body, x.format, req.maxTokens)
		}
	}
	if latency > 0 {
		var t timerSlot
		if !x.pauseOrAbort(&t, latency) {
			return
		}
	}
	cut := fault == FaultCut
	switch ep {
	case epMessages:
		x.anthropicMessage(&req, cut)
	case epCountTokens:
		x.countTokens(&req, cut)
	case epChat:
		x.chatCompletion(&req, cut)
	case epModels:
		if x.format == formatAnthropic {
			x.anthropicModels(cut)
		} else {
			x.writeJSON(s.tpl.oaiModels, cut)
		}
	}
}

// anthropicModels answers GET /v1/models in Anthropic's shape: every
// model at once without a query, else the page the query asks for.
func (x *exchange) anthropicModels(cut bool) {
	if x.r.URL.RawQuery == "" {
		x.writeJSON(x.s.tpl.anthModels, cut)
		return
	}
	page, msg := anthropicModelsPage(x.r.URL.Query())
	if msg != "" {
		x.writeError(http.StatusBadRequest, msg)
		return
	}
	x.writeJSON(page, cut)
}

// simHeaders returns the fault and latency for the request: the server's,
// unless x-sim-fault or x-sim-latency override them. On an invalid header
// it answers 400 and reports false.
func (x *exchange) simHeaders() (Fault, time.Duration, bool) {
	fault := x.s.currentFault()
	if h := x.r.Header.Get("X-Sim-Fault"); h != "" {
		fault = Fault(h)
		if !fault.known() {
			x.writeError(http.StatusBadRequest, msgUnknownFault)
			return "", 0, false
		}
	}
	latency := time.Duration(x.s.latency.Load())
	if h := x.r.Header.Get("X-Sim-Latency"); h != "" {
		d, err := time.ParseDuration(h)
		if err != nil || d < 0 {
			x.writeError(http.StatusBadRequest, msgBadLatency)
			return "", 0, false
		}
		latency = d
	}
	return fault, latency, true
}

// readBody reads r into the pooled buffer *bp, keeping any growth there.
func readBody(bp *[]byte, r io.Reader) ([]byte, error) {
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			*bp = b
			return b, nil
		}
		if err != nil {
			*bp = b
			return nil, err
		}
	}
}

// admit counts an admitted request in flight; it reports false, counting
// nothing, when MaxConcurrency requests are already in flight.
func (s *Server) admit() bool {
	n := s.inFlight.Add(1)
	if m := s.opts.MaxConcurrency; m > 0 && n > int64(m) {
		s.inFlight.Add(-1)
		return false
	}
	for {
		cur := s.maxInFlight.Load()
		if n <= cur || s.maxInFlight.CompareAndSwap(cur, n) {
			return true
		}
	}
}

// opened counts a request open and returns the function that counts it
// closed.
func (s *Server) opened() func() {
	n := s.open.Add(1)
	for {
		cur := s.maxOpen.Load()
		if n <= cur || s.maxOpen.CompareAndSwap(cur, n) {
			break
		}
	}
	return func() { s.open.Add(-1) }
}

// count records a reply status; 0 means no reply.
func (s *Server) count(status int) {
	if status >= 0 && status < maxStatus {
		s.byStatus[status].Add(1)
	}
	if status == http.StatusTooManyRequests {
		s.rateLimited.Add(1)
	}
}

// release returns the scratch buffer to the pool.
func (x *exchange) release() {
	if x.buf != nil {
		x.s.bufs.Put(x.buf)
		x.buf = nil
	}
}

// scratch returns the exchange's scratch buffer; callers store what they
// built back into it so growth is kept.
func (x *exchange) scratch() *[]byte {
	if x.buf == nil {
		x.buf = x.s.bufs.Get().(*[]byte)
	}
	return x.buf
}

// writeHeader sends the status line and counts it, a 429 by its cause
// (x.limit) and in the second the request arrived.
func (x *exchange) writeHeader(status int) {
	x.s.count(status)
	if status == http.StatusTooManyRequests {
		x.s.limitedBy[x.limit].Add(1)
		x.s.tl.rateLimited(x.at)
	}
	x.w.WriteHeader(status)
}

// takeRate takes a token from the RPS limiter and sets the rate-limit
// headers. Without a token it answers 429 and reports false.
func (x *exchange) takeRate() bool {
	s := x.s
	now := time.Now()
	res := s.lim.ReserveN(now, 1)
	delay := res.DelayFrom(now)
	if !res.OK() || delay > 0 {
		res.CancelAt(now)
		x.setRateHeaders(now, 0)
		x.setRetryAfter(delay)
		x.limit = limRPS
		x.writeError(http.StatusTooManyRequests, msgRateLimited)
		return false
	}
	x.setRateHeaders(now, s.lim.TokensAt(now))
	return true
}

// setRateHeaders sets the request rate-limit headers of the reply format:
// the limit is the bucket size, remaining the whole tokens left, and reset
// when the bucket will be full again.
func (x *exchange) setRateHeaders(now time.Time, tokens float64) {
	s := x.s
	if s.opts.NoRateHeaders {
		return
	}
	tokens = max(0, tokens)
	reset := time.Duration((float64(s.burst) - tokens) / s.opts.RPS * float64(time.Second))
	limit := strconv.Itoa(s.burst)
	remaining := strconv.Itoa(int(tokens))
	h := x.w.Header()
	if x.format == formatAnthropic {
		h.Set("Anthropic-Ratelimit-Requests-Limit", limit)
		h.Set("Anthropic-Ratelimit-Requests-Remaining", remaining)
		h.Set("Anthropic-Ratelimit-Requests-Reset", now.Add(reset).UTC().Format(time.RFC3339))
		return
	}
	h.Set("X-Ratelimit-Limit-Requests", limit)
	h.Set("X-Ratelimit-Remaining-Requests", remaining)
	h.Set("X-Ratelimit-Reset-Requests", reset.Round(time.Millisecond).String())
}

// applyFault answers according to f and reports whether it did. FaultNone,
// FaultCut and unknown faults are left to the normal reply.
func (x *exchange) applyFault(f Fault) bool {
	switch f {
	case Fault500:
		x.writeError(http.StatusInternalServerError, msgFault500)
	case Fault503:
		x.writeError(http.StatusServiceUnavailable, msgFault503)
	case Fault529:
		x.writeError(529, msgFault529)
	case Fault429:
		x.w.Header()["Retry-After"] = []string{"1"}
		x.limit = limFault
		x.writeError(http.StatusTooManyRequests, msgFault429)
	case Fault401:
		x.writeError(http.StatusUnauthorized, msgFault401)
	case Fault400:
		x.writeError(http.StatusBadRequest, msgFault400)
	case FaultHang:
		select {
		case <-x.r.Context().Done():
			x.s.count(0)
		case <-x.s.closing:
			x.writeError(http.StatusServiceUnavailable, msgClosed)
		}
	case FaultGarbage:
		x.w.Header()["Content-Type"] = []string{"text/html"}
		x.writeHeader(http.StatusOK)
		_, _ = io.WriteString(x.w, garbageBody)
	case FaultReset:
		x.s.count(0)
		hijackClose(x.w, true)
	default:
		return false
	}
	return true
}

// hijackClose takes over the connection and closes it; with rst the close
// sends a TCP reset. It reports false when w cannot be hijacked.
func hijackClose(w http.ResponseWriter, rst bool) bool {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	if tc, ok := conn.(*net.TCPConn); ok && rst {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
	return true
}

// timerSlot is a lazily made timer reused across pauses.
type timerSlot struct{ t *time.Timer }

// sleep waits d. It returns errClosing when the server closes first, and the
// context's error when ctx ends first.
func (ts *timerSlot) sleep(ctx context.Context, closing <-chan struct{}, d time.Duration) error {
	if ts.t == nil {
		ts.t = time.NewTimer(d)
	} else {
		ts.t.Reset(d)
	}
	select {
	case <-ts.t.C:
		return nil
	case <-ctx.Done():
		ts.t.Stop()
		return ctx.Err()
	case <-closing:
		ts.t.Stop()
		return errClosing
	}
}

// pauseOrAbort waits d before a reply has started. When the wait is cut
// short it answers 503 (server closing) or counts no reply (client gone),
// and reports false.
func (x *exchange) pauseOrAbort(t *timerSlot, d time.Duration) bool {
	err := t.sleep(x.r.Context(), x.s.closing, d)
	switch {
	case err == nil:
		return true
	case errors.Is(err, errClosing):
		x.writeError(http.StatusServiceUnavailable, msgClosed)
	default:
		x.s.count(0)
	}
	return false
}

// writeJSON answers 200 with body; with cut it declares the full length,
// sends half of body and closes the connection.
func (x *exchange) writeJSON(body []byte, cut bool) {
	h := x.w.Header()
	h["Content-Type"] = []string{"application/json"}
	if cut {
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
		x.writeHeader(http.StatusOK)
		_, _ = x.w.Write(body[:len(body)/2])
		_ = http.NewResponseController(x.w).Flush()
		hijackClose(x.w, false)
		return
	}
	x.writeHeader(http.StatusOK)
	_, _ = x.w.Write(body)
}

// startSSE sends the headers of an event stream.
func (x *exchange) startSSE() {
	h := x.w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["Cache-Control"] = []string{"no-cache"}
	x.flush, _ = x.w.(http.Flusher)
	x.writeHeader(http.StatusOK)
}

// event writes one SSE event and flushes it; it reports false when the
// client has gone.
func (x *exchange) event(b []byte) bool {
	if _, err := x.w.Write(b); err != nil {
		return false
	}
	if x.flush != nil {
		x.flush.Flush()
	}
	return true
}

// cutStream drops the connection of a started stream.
func (x *exchange) cutStream() {
	hijackClose(x.w, false)
}

// pace waits the token interval before content delta i (none before the
// first); it reports false when the stream must stop.
func (x *exchange) pace(t *timerSlot, i int) bool {
	d := x.s.opts.TokenInterval
	if i == 0 || d <= 0 {
		return true
	}
	return t.sleep(x.r.Context(), x.s.closing, d) == nil
}

// replyTokens returns the number of output tokens for a request with the
// given max_tokens, and whether max_tokens capped it.
func (s *Server) replyTokens(maxTokens int64) (int, bool) {
	if maxTokens > 0 && maxTokens < int64(s.tokens) {
		return int(maxTokens), true
	}
	return s.tokens, false
}
