package gateway

// This file owns the proxied request's path: POST /v1/messages and
// /v1/chat/completions from arrival, through admission or parking on a
// lane and the upstream call, to the answer (streams event by event), its
// log line and metrics.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/keylimits"
	"github.com/relaygw/relay/workers/wire"
)

// exchange is one proxied request on its way through the gateway: what it
// asked for, where it stands, and what it learned, for its answer, log line
// and metrics. It is one allocation, made when the request arrives.
type exchange struct {
	c      echo.Context
	d      Dispatcher
	lane   Lane // lane.MaxWait is what is left of the wait
	req    workers.Request
	answer *apiError // the error to answer with, set by a step

	start     time.Time
	deadline  time.Time // the end of the lane's wait
	requestID string
	format    workers.Format
	keyName   string
	route     string
	queued    time.Duration
	upstream  time.Duration // waiting on upstreams (metrics.go: added latency)
	ttft      time.Duration // streams: time to first token, 0 until then
	reparks   int
	mode      string
	bodyBuf   *bodyBuf // pooled body buffer, nil once given back
	provider  string
	stream    bool
	status    int
	attempts  int
	usage     wire.Usage
	err       error
	park      trace.Span // the wait on a lane, while parked
	// gate is the request's admission by its key's limits and budget
	// (quota.go); nil when the key has neither.
	gate *gate
	// upstreamModel is the model sent upstream, once an upstream
	// answered; answered reports an upstream answer (2xx) went out.
	upstreamModel string
	answered      bool
}

// releaseBody gives back the pooled body buffer and its charge to the
// body memory budget.
func (x *exchange) releaseBody() {
	if x.bodyBuf != nil {
		putBody(x.bodyBuf)
		x.bodyBuf = nil
	}
}

// proxyHandler serves POST /v1/messages or /v1/chat/completions.
//
// A request goes through steps (proxy, then resume after each wait on a
// lane) that each answer it or return the Ticket it waits on. The handler
// itself only loops and waits, so a parked request's goroutine sleeps on a
// few small frames: the runtime shrinks its stack to 4 KiB over HTTP/2
// (the HTTP/1.1 server's own frame keeps it at 8 KiB), which at 10,000
// parked requests is 40 MiB.
func (s *Server) proxyHandler(f workers.Format) echo.HandlerFunc {
	return func(c echo.Context) error {
		x := s.begin(c, f)
		defer s.end(x)
		for t := s.proxy(x); t != nil; {
			g, waited, err := t.Wait()
			t = s.resume(x, g, waited, err)
		}
		return nil
	}
}

// begin starts the exchange for the request c carries.
func (s *Server) begin(c echo.Context, f workers.Format) *exchange {
	s.metrics.inflight.Inc()
	x := &exchange{c: c, start: time.Now(), requestID: requestIDOf(c), format: f, mode: "direct"}
	x.bodyBuf = getBody()
	return x
}

// end answers with the error a step left, gives back the body buffer, and
// logs and counts the request.
func (s *Server) end(x *exchange) {
	if e := x.answer; e != nil {
		if x.lane.Name != "" {
			x.c.Response().Header()["X-Relay-Lane"] = []string{x.lane.Name}
		}
		x.status = e.statusFor(x.format)
		if e.cause != nil {
			x.err = e.cause
		} else {
			x.err = e
		}
		s.writeError(x.c, x.format, x.requestID, e)
	}
	x.releaseBody()
	// A stream that ended with an error was cut short.
	x.gate.settle(x.usage, x.upstreamModel, x.answered, x.stream && x.err != nil)
	s.metrics.inflight.Dec()
	s.finish(x.c.Request().Context(), x)
}

// proxy checks the request and takes capacity for it. It answers the
// request, or returns the Ticket it is parked with.
func (s *Server) proxy(x *exchange) *lanes.Ticket {
	if x.answer = s.prepare(x); x.answer != nil {
		return nil
	}
	return s.acquire(x)
}

// prepare authenticates and reads the request, and admits it per the
// request policy (policy.go): its route, lane and wait.
func (s *Server) prepare(x *exchange) *apiError {
	st := s.state.Load()
	c := x.c
	r := c.Request()
	k, aerr := st.authenticate(r)
	if aerr != nil {
		return aerr
	}
	x.keyName = k.Name
	body, aerr := s.readBody(c, st.maxBodyBytes, x.bodyBuf)
	if aerr != nil {
		return aerr
	}
	d, aerr := st.admit(&syncPolicy, k, body, r.Header.Get("X-Relay-Lane"), r.Header.Get("X-Relay-Max-Wait"))
	x.stream, x.route = d.fields.Stream, d.route
	if aerr != nil {
		return aerr
	}
	x.lane, x.d = d.lane, st.dispatcher
	x.gate = s.quotas.newGate(&k.Key, body, d.fields)
	if err := x.gate.reserve(r.Context(), k.Budget, st.dispatcher, d.fields.Model); err != nil {
		return budgetError(k.Name, k.Budget, err)
	}
	x.deadline = time.Now().Add(d.lane.MaxWait)
	// Header is filled just before the first upstream call: a parked
	// request does not keep a copy.
	x.req = workers.Request{Format: x.format, Body: body, Fields: d.fields}
	if x.gate != nil {
		x.req.InputEstimate = x.gate.in
	}
	return nil
}

// acquire takes capacity for the request: directly when a target of its
// route has some and nobody is parked ahead of it, then calls upstream;
// else it parks the request on its lane and returns its Ticket. Without
// lanes it leaves admission to Do.
func (s *Server) acquire(x *exchange) *lanes.Ticket {
	if s.lanes == nil {
		if err := x.gate.admitKey(); err != nil {
			var kr *keylimits.Refusal
			errors.As(err, &kr)
			x.answer = keyRefusalError(kr)
			return nil
		}
		return s.call(x, nil)
	}
	if !s.lanes.Parked(x.route) {
		g, err := x.gate.admit(x.d, &x.req)
		if err == nil {
			return s.call(x, g)
		}
		var we *workers.Error
		var kr *keylimits.Refusal
		if !errors.As(err, &kr) && (!errors.As(err, &we) || !we.Transient()) {
			// Parking cannot help a request whose providers all need an
			// operator (their keys were refused).
			x.answer = s.dispatchError(x, err)
			return nil
		}
	}
	if x.gate.keyHold() != nil {
		// Over its key's limits for longer than it may wait: 429 now.
		ahead := 0
		if kc, ok := s.lanes.(keyCounter); ok {
			ahead = kc.KeyParked(x.keyName)
		}
		if w := x.gate.keyWait(ahead); w > x.lane.MaxWait {
			x.answer = keyLimitError(x.keyName, w, &about{lane: x.lane})
			return nil
		}
	}
	x.mode = "queued"
	// The body has been read in full by now, so a parked HTTP/2 stream
	// holds none of its connection's flow-control window: parked streams
	// never stall the others on their connection.
	if x.bodyBuf != nil {
		// A parked request may wait long: keep an exact-size copy of its
		// body and give the pooled buffer, and its charge to the body
		// memory budget, back. Parked bodies are bounded by the lanes'
		// depth times max_body_bytes instead.
		x.req.Body = bytes.Clone(x.req.Body)
		x.releaseBody()
	}
	s.startPark(x)
	t, err := s.lanes.Park(x.c.Request().Context(), lanes.Waiter{
		Lane:    x.lane.Name,
		Key:     x.keyName,
		Route:   x.route,
		MaxWait: x.lane.MaxWait,
		Admit:   x.gate.admitFunc(x.d, &x.req),
		KeyHold: x.gate.keyHold(),
		// Answered at once, or early, when nothing can serve it before
		// its wait ends (admit.go).
		Hold:     holdFunc(x.d, &x.req),
		FailFast: true,
	})
	if err != nil {
		s.endPark(x, 0, err)
		x.answer = s.laneError(x, err)
		return nil
	}
	return t
}

// resume continues a request after its wait on a lane: with the grant,
// it calls upstream; else it answers why there is none.
func (s *Server) resume(x *exchange, grant any, waited time.Duration, err error) *lanes.Ticket {
	x.queued += waited
	s.endPark(x, waited, err)
	if err != nil {
		x.answer = s.laneError(x, err)
		return nil
	}
	return s.call(x, grant.(*workers.Grant))
}

// maxReparks bounds how often one request goes back to its lane after
// upstreams answered 429.
const maxReparks = 3

// call serves the request upstream with grant (nil: Do admits) and
// answers it. When lanes exist and the upstreams answered nothing but 429
// (their limits were tighter than the relay's buckets), the request goes
// back to its lane, where the cool-down the 429s started holds it, instead
// of failing: no 429 storm reaches the client.
func (s *Server) call(x *exchange, grant *workers.Grant) *lanes.Ticket {
	ctx := x.c.Request().Context()
	if x.req.Header == nil {
		x.req.Header = forwardHeaders(x.c.Request().Header)
		x.req.Header["X-Request-Id"] = []string{x.requestID}
	}
	called := time.Now()
	if x.gate != nil {
		x.gate.called = true
	}
	resp, err := x.d.Do(ctx, &x.req, grant)
	x.upstream += time.Since(called)
	if err != nil {
		var we *workers.Error
		if s.lanes != nil && x.reparks < maxReparks && errors.As(err, &we) && we.RateLimitedOnly() && ctx.Err() == nil {
			if left := time.Until(x.deadline); left > 0 {
				x.lane.MaxWait = left
				x.reparks++
				return s.acquire(x)
			}
		}
		x.answer = s.dispatchError(x, err)
		return nil
	}
	s.respond(x, resp)
	return nil
}

// respond writes an upstream answer. The relay's own headers are set only
// now: a parked request holds no response header map.
func (s *Server) respond(x *exchange, resp *workers.Response) {
	c := x.c
	h := c.Response().Header()
	h["X-Request-Id"] = []string{x.requestID}
	h["X-Relay-Lane"] = []string{x.lane.Name}
	h["X-Relay-Queue-Ms"] = []string{strconv.FormatInt(x.queued.Milliseconds(), 10)}
	x.provider, x.attempts, x.status = resp.Provider, resp.Attempts, resp.StatusCode
	x.upstreamModel, x.answered = resp.UpstreamModel, resp.StatusCode < 300
	traceAnswer(c.Request().Context(), resp)
	for name, v := range resp.Header {
		h[name] = v
	}
	h["X-Relay-Provider"] = []string{resp.Provider}
	h["X-Relay-Attempts"] = []string{strconv.Itoa(resp.Attempts)}
	if resp.Stream != nil {
		s.relayStream(c, x, resp.Stream)
		return
	}
	x.usage = resp.Usage
	rc := http.NewResponseController(c.Response().Writer)
	_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	h["Content-Length"] = []string{strconv.Itoa(len(resp.Body))}
	c.Response().WriteHeader(resp.StatusCode)
	if _, err := c.Response().Write(resp.Body); err != nil {
		x.err = err
	}
}

// laneError answers why a request got no capacity from its lane; a client
// that left gets no answer.
func (s *Server) laneError(x *exchange, err error) *apiError {
	if x.clientGone(err) {
		return nil
	}
	s.fast.count(x.route, err)
	return answerFor(err, &about{from: fromLane, lane: x.lane, lanes: s.lanes})
}

// dispatchError answers a Dispatcher error; a client that left gets no
// answer.
func (s *Server) dispatchError(x *exchange, err error) *apiError {
	if x.clientGone(err) {
		return nil
	}
	var we *workers.Error
	if errors.As(err, &we) {
		x.attempts = len(we.Failures)
		if len(we.Failures) > 0 {
			x.provider = we.Failures[len(we.Failures)-1].Provider
		}
	}
	return answerFor(err, &about{from: fromDispatcher})
}

// clientGone reports whether the client went away, and if so records err
// as its end: nothing can be written, the request is logged and counted
// as StatusClientClosedRequest.
func (x *exchange) clientGone(err error) bool {
	if x.c.Request().Context().Err() == nil {
		return false
	}
	x.status, x.err = StatusClientClosedRequest, err
	return true
}

// relayStream writes a streaming answer event by event. Every event is
// flushed as soon as it has arrived; events that arrived together (already
// buffered) are flushed together. Each flush gets a fresh write deadline, so
// a client that stops reading is cut off while long streams never are. When the upstream breaks mid-stream the
// client gets an error event in its own format; when the client goes away
// the upstream call is cancelled.
func (s *Server) relayStream(c echo.Context, x *exchange, st *workers.Stream) {
	defer st.Close()
	w := c.Response()
	h := w.Header()
	h["Cache-Control"] = []string{"no-cache"}
	h["X-Accel-Buffering"] = []string{"no"}
	delete(h, "Content-Length")
	rc := http.NewResponseController(w.Writer)
	_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	w.WriteHeader(x.status)
	if err := rc.Flush(); err != nil {
		x.err = err
		return
	}
	for {
		waited := time.Now()
		ev, err := st.Next()
		x.upstream += time.Since(waited)
		if err != nil {
			x.usage = st.Usage()
			if errors.Is(err, io.EOF) {
				return
			}
			if x.clientGone(err) {
				return
			}
			x.err = err
			ae := errStreamBroken(err)
			_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
			_, _ = w.Write(ae.streamBody(x.format))
			_ = rc.Flush()
			return
		}
		if _, err := w.Write(ev); err != nil {
			x.status, x.err = StatusClientClosedRequest, err
			x.usage = st.Usage()
			return
		}
		x.firstToken(ev)
		if st.Buffered() {
			// More events have already arrived: write them before flushing.
			continue
		}
		if err := rc.Flush(); err != nil {
			x.status, x.err = StatusClientClosedRequest, err
			x.usage = st.Usage()
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	}
}

func streamErrMsg(err error) string {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed mid-event"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, wire.ErrEventTooLarge):
		return "event too large"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

// finish logs the request line and records its metrics.
func (s *Server) finish(ctx context.Context, x *exchange) {
	d := time.Since(x.start)
	s.metrics.observe(x, strconv.Itoa(x.status), d)
	s.record(x)
	traceExchange(ctx, x)
	s.logRequest(ctx, &requestLine{
		requestID: x.requestID, api: x.format.String(), key: x.keyName,
		proxied: true, route: x.route, model: x.req.Fields.Model, provider: x.provider, lane: x.lane.Name, stream: x.stream,
		attempts: x.attempts, mode: x.mode, queued: x.queued,
		status: x.status, duration: d, reparks: x.reparks, usage: x.usage, err: x.err,
	})
}
