// Package simupstream is a simulated Anthropic and OpenAI upstream for the
// relay's demo, tests and benchmarks.
//
// It serves the Anthropic Messages API (POST /v1/messages, with SSE when the
// body says "stream": true, and POST /v1/messages/count_tokens), OpenAI Chat
// Completions (POST /v1/chat/completions, with SSE and
// stream_options.include_usage) and GET /v1/models (Anthropic's list shape,
// paged by limit (default 20, at most 1000), after_id and before_id, when
// the request carries anthropic-version, else OpenAI's; among the models
// are Claude Code's defaults). Any model id is served: every reply
// echoes the request's model, and its content is the words "tok0 tok1 …",
// Options.OutputTokens of them, capped by the request's max_tokens.
// input_tokens is the length of all message text divided by four (at least 1).
// Auth is not checked; headers are recorded so tests can see which key
// arrived. Query strings are ignored.
//
// # Echo mode
//
// With Options.Echo (the relay's demo) the reply is built from the request,
// so SDK checks and tool loops can be seen; no model runs, and images,
// documents and thinking are ignored. Output is counted in words: every
// word (or tool-argument fragment) is one output token and one stream delta.
//
//   - Text: "You said: " and the text of the last user message (a string,
//     or its text blocks / text parts; blocks starting with
//     <system-reminder>, which Claude Code adds, are skipped), at most 256
//     words and max_tokens words (then stop_reason max_tokens / finish_reason
//     length).
//   - Tool call: when the request offers tools (Anthropic custom tools,
//     OpenAI tools of type function) and the user text says "use NAME" for
//     an offered tool (any case), that tool is called with the text after
//     NAME; otherwise, when the text has the word "tool" or "tools", the
//     first tool is called with the whole text. tool_choice is honoured:
//     "any" / "required" calls a tool (the first unless named) even
//     unasked, "none" calls none, a named tool is the one called. The
//     arguments fill each required property of the tool's schema: its
//     first enum value, or 0, false, [], {} by type, and strings with the
//     text (at most 1,000 bytes). The reply is one tool_use block with
//     stop_reason tool_use, or
//     one tool_calls entry with finish_reason tool_calls; ids are
//     toolu_sim<n> / call_sim<n>. Streams send the arguments as
//     input_json_delta / function.arguments fragments.
//   - Tool result: when the last user message carries tool_result blocks
//     (Anthropic) or the conversation ends with role "tool" messages
//     (OpenAI), the reply is text "Tool NAME returned: CONTENT" for each,
//     NAME found from the earlier tool call's id, and never a tool call, so
//     a client's tool loop ends.
//
// Behaviour can be changed at run time: [Server.SetFault] and
// [Server.SetLatency] apply to every later request, and a request can carry
// its own x-sim-fault: FAULT and x-sim-latency: DURATION headers. For
// subprocess use the same handler also serves POST /_sim/fault?f=FAULT,
// POST /_sim/latency?d=DURATION and GET /_sim/stats (the [Stats] as JSON).
//
// The order of checks for a request is: record it, the MaxConcurrency limit,
// the RPS limit, the PerSecond and PerMinute windows, the fault, request
// validation (400), the latency, the reply.
//
// # Hard limits
//
// Like a real provider's, the limits answer 429 (rate_limit_error in the
// caller's shape) with retry-after past them: MaxConcurrency (requests in
// flight), RPS (a token bucket, with anthropic-ratelimit-requests-* /
// x-ratelimit-*-requests headers on every reply unless NoRateHeaders) and PerSecond / PerMinute
// (sliding windows: at most that many requests admitted in any one second
// or minute; they send no rate-limit headers, so a relay in front learns
// nothing from them and what the upstream sees is the relay's own
// limiting). [Stats] tells tests and benchmarks what happened: requests,
// 429s by cause, the highest concurrency seen and requests per second
// over time.
// Faults other than [FaultCut] answer at once, without the latency.
//
// Error replies use the endpoint's real shapes:
//
//	status  Anthropic error.type   OpenAI error.type / error.code
//	400     invalid_request_error  invalid_request_error / null
//	401     authentication_error   invalid_request_error / invalid_api_key
//	404     not_found_error        invalid_request_error / null
//	429     rate_limit_error       requests / rate_limit_exceeded
//	500     api_error              server_error / null
//	503     api_error              server_error / null
//	529     overloaded_error       server_error / overloaded
//
// The server is cheap on purpose, since it is a benchmark baseline: outside
// Echo mode replies are built from byte templates prepared in [New], the request is read with gjson
// without copying it, and each SSE event is written with one Write and one
// Flush.
package simupstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Options configure a simulated upstream.
type Options struct {
	// Latency is the time to first byte (non-stream: before the whole reply).
	Latency time.Duration
	// TokenInterval is the pause between streamed content deltas (0 = none).
	TokenInterval time.Duration
	// OutputTokens is the number of content tokens per reply (words
	// "tok0 tok1 ..."); default 8; capped by the request's max_tokens.
	OutputTokens int
	// MaxConcurrency, when >0, makes requests beyond this many in flight get
	// 429 rate_limit_error with retry-after: 1.
	MaxConcurrency int
	// RPS, when >0, is a hard requests-per-second limit (a token bucket with
	// burst max(1, RPS)); requests beyond it get 429 with retry-after (whole
	// seconds, rounded up) and retry-after-ms headers.
	RPS float64
	// NoRateHeaders leaves out the rate-limit headers RPS adds to every
	// reply, so a relay in front learns nothing from them (retry-after on
	// a 429 stays).
	NoRateHeaders bool
	// PerSecond, when >0, is a hard limit of requests admitted in any
	// sliding one-second window; a request past it gets 429 with
	// retry-after (whole seconds, rounded up) and retry-after-ms saying
	// when the oldest admission leaves the window. 429s do not count.
	PerSecond int
	// PerMinute, when >0, is the same over a sliding 60-second window.
	PerMinute int
	// Record keeps the last Record requests for [Server.Requests] (0 = none).
	Record int
	// Echo makes replies depend on the conversation (see "Echo mode" in the
	// package doc) instead of the fixed "tok0 tok1 ..." text; OutputTokens
	// is then unused. The relay's demo turns it on; benchmarks leave it off.
	Echo bool
}

// defaultOutputTokens is used when Options.OutputTokens is not positive.
const defaultOutputTokens = 8

// Fault is a runtime-switchable failure mode applied to every request.
type Fault string

// The faults a [Server] can simulate.
const (
	// FaultNone is normal behaviour.
	FaultNone Fault = ""
	// Fault500 answers 500 api_error in the caller's format.
	Fault500 Fault = "500"
	// Fault503 answers 503 in the caller's format.
	Fault503 Fault = "503"
	// Fault529 answers 529 overloaded_error.
	Fault529 Fault = "529"
	// Fault429 answers 429 rate_limit_error with retry-after: 1.
	Fault429 Fault = "429"
	// FaultHang never answers until the client goes away (or Close, which
	// answers 503).
	FaultHang Fault = "hang"
	// FaultGarbage answers 200 with a non-JSON body ("<html>oops</html>") and
	// content-type text/html.
	FaultGarbage Fault = "garbage"
	// FaultCut, on a stream, sends the first events and then drops the
	// connection; on a non-stream request it writes half of the JSON body
	// (with the full Content-Length) and then closes the connection.
	FaultCut Fault = "cut"
	// FaultReset closes the connection without any reply.
	FaultReset Fault = "reset"
	// Fault401 answers authentication_error (bad provider key).
	Fault401 Fault = "401"
	// Fault400 answers invalid_request_error (the request's fault).
	Fault400 Fault = "400"
)

// known reports whether f is one of the Fault constants.
func (f Fault) known() bool {
	switch f {
	case FaultNone, Fault500, Fault503, Fault529, Fault429, FaultHang,
		FaultGarbage, FaultCut, FaultReset, Fault401, Fault400:
		return true
	}
	return false
}

// Stats is a snapshot of a server's counters.
type Stats struct {
	// Requests counts API requests received (control requests excluded).
	Requests int64 `json:"requests"`
	// ByStatus counts replies by HTTP status. Key 0 counts requests that got
	// no status line: FaultReset, and clients that left before the reply.
	ByStatus map[int]int64 `json:"by_status"`
	// InFlight is the number of admitted requests being served now.
	InFlight int64 `json:"in_flight"`
	// MaxInFlight is the highest InFlight seen.
	MaxInFlight int64 `json:"max_in_flight"`
	// RateLimited counts 429 replies sent, whatever their cause.
	RateLimited int64 `json:"rate_limited"`
	// RateLimitedBy counts 429 replies by cause: [LimitConcurrency],
	// [LimitRPS], [LimitPerSecond], [LimitPerMinute] and [LimitFault], each
	// present (0 included).
	RateLimitedBy map[string]int64 `json:"rate_limited_by"`
	// Open is the number of API requests being handled now, admitted or
	// not; MaxOpen the highest Open seen. Unlike MaxInFlight it counts the
	// requests MaxConcurrency refuses, so it shows how many requests a
	// client had open at once even when the upstream enforces a limit.
	Open    int64 `json:"open"`
	MaxOpen int64 `json:"max_open"`
	// Seconds counts requests and 429s per wall-clock second, for the
	// seconds of the last hour that had requests, oldest first.
	Seconds []Second `json:"seconds"`
}

// Request is a recorded request.
type Request struct {
	Method   string      // the HTTP method
	Path     string      // the URL path, without the query
	RawQuery string      // the query string, without "?"
	Header   http.Header // the request headers, auth included
	Body     []byte      // the whole request body
}

// clone returns a deep copy of r.
func (r Request) clone() Request {
	r.Header = r.Header.Clone()
	r.Body = append([]byte(nil), r.Body...)
	return r
}

// maxStatus bounds the status codes counted in Stats.ByStatus.
const maxStatus = 600

// Server is a simulated upstream. It is safe for concurrent use. A Server
// made by [Start] listens until [Server.Close]; one made by [New] only serves
// through [Server.Handler]. Either way Close must be called to release hung
// handlers and wait for all handlers to return.
type Server struct {
	opts    Options
	tokens  int // output tokens per reply
	tpl     templates
	lim     *rate.Limiter // nil without Options.RPS
	burst   int
	win     *windows // nil without Options.PerSecond and PerMinute
	tl      timeline
	handler http.Handler
	bufs    sync.Pool // *[]byte, request bodies and scratch space

	fault   atomic.Pointer[Fault]
	latency atomic.Int64 // time.Duration
	seq     atomic.Uint64

	requests    atomic.Int64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	rateLimited atomic.Int64
	limitedBy   [len(limitNames)]atomic.Int64
	open        atomic.Int64
	maxOpen     atomic.Int64
	byStatus    [maxStatus]atomic.Int64

	recMu   sync.Mutex
	rec     []Request // ring of the last Options.Record requests
	recNext int
	recFull bool

	lifeMu    sync.RWMutex
	closed    bool
	closing   chan struct{} // closed by Close; releases hung and pausing handlers
	active    sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	ln        net.Listener  // nil unless started
	srv       *http.Server  // nil unless started
	serveDone chan struct{} // closed when srv.Serve returns
	serveErr  error         // written before serveDone is closed
}

// New returns a simulated upstream that is not listening yet; its
// [Server.Handler] can be used with httptest. Call [Server.Close] when done.
func New(opts Options) *Server {
	s := &Server{opts: opts, closing: make(chan struct{})}
	s.tokens = opts.OutputTokens
	if s.tokens <= 0 {
		s.tokens = defaultOutputTokens
	}
	s.tpl = newTemplates(s.tokens)
	if opts.RPS > 0 {
		s.burst = max(1, int(opts.RPS))
		s.lim = rate.NewLimiter(rate.Limit(opts.RPS), s.burst)
	}
	if opts.PerSecond > 0 || opts.PerMinute > 0 {
		s.win = &windows{perSecond: newWindow(opts.PerSecond, time.Second), perMinute: newWindow(opts.PerMinute, time.Minute)}
	}
	if opts.Record > 0 {
		s.rec = make([]Request, opts.Record)
	}
	s.bufs.New = func() any {
		b := make([]byte, 0, 4096)
		return &b
	}
	s.latency.Store(int64(opts.Latency))
	s.handler = http.HandlerFunc(s.serve)
	return s
}

// Start returns a simulated upstream listening on addr ("127.0.0.1:0" for a
// random port; "" means that too). ctx bounds only the listen call: the
// server serves until [Server.Close].
func Start(ctx context.Context, addr string, opts Options) (*Server, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("simupstream: listen %s: %w", addr, err)
	}
	s := New(opts)
	s.ln = ln
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		s.serveErr = s.srv.Serve(ln)
	}()
	return s, nil
}

// Handler returns the HTTP handler serving the simulated APIs and the /_sim
// control endpoints.
func (s *Server) Handler() http.Handler { return s.handler }

// URL returns the server's base URL, "http://127.0.0.1:PORT", which is the
// Anthropic base URL; the OpenAI base URL is URL()+"/v1". It is "" for a
// server made by [New].
func (s *Server) URL() string {
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String()
}

// SetFault switches the fault applied to every later request; [FaultNone]
// restores normal behaviour. A fault that is not one of the constants acts
// as FaultNone.
func (s *Server) SetFault(f Fault) { s.fault.Store(&f) }

// SetLatency switches the time to first byte of later requests.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// currentFault returns the fault set by SetFault.
func (s *Server) currentFault() Fault {
	if p := s.fault.Load(); p != nil {
		return *p
	}
	return FaultNone
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Requests:    s.requests.Load(),
		ByStatus:    make(map[int]int64),
		InFlight:    s.inFlight.Load(),
		MaxInFlight: s.maxInFlight.Load(),
		RateLimited: s.rateLimited.Load(),
		Open:        s.open.Load(),
		MaxOpen:     s.maxOpen.Load(),
		Seconds:     s.tl.seconds(time.Now()),
	}
	st.RateLimitedBy = make(map[string]int64, len(limitNames))
	for i, name := range limitNames {
		st.RateLimitedBy[name] = s.limitedBy[i].Load()
	}
	for code := range s.byStatus {
		if n := s.byStatus[code].Load(); n != 0 {
			st.ByStatus[code] = n
		}
	}
	return st
}

// Requests returns copies of the last Options.Record requests, oldest first.
func (s *Server) Requests() []Request {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	var out []Request
	if s.recFull {
		for _, r := range s.rec[s.recNext:] {
			out = append(out, r.clone())
		}
	}
	for _, r := range s.rec[:s.recNext] {
		out = append(out, r.clone())
	}
	return out
}

// record keeps a copy of r with the given body in the ring.
func (s *Server) record(r *http.Request, body []byte) {
	req := Request{
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Body:     append([]byte(nil), body...),
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.rec[s.recNext] = req
	s.recNext++
	if s.recNext == len(s.rec) {
		s.recNext = 0
		s.recFull = true
	}
}

// shutdownTimeout bounds how long Close waits for connections to go idle
// before closing them.
const shutdownTimeout = 5 * time.Second

// Close stops listening, releases hung handlers (they answer 503) and waits
// for every handler to return. Later requests through Handler get 503.
// Close is idempotent; every call returns the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

// close does the work of Close once.
func (s *Server) close() error {
	s.lifeMu.Lock()
	s.closed = true
	s.lifeMu.Unlock()
	close(s.closing)

	var err error
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if serr := s.srv.Shutdown(ctx); serr != nil {
			err = fmt.Errorf("simupstream: shutdown: %w", serr)
			if cerr := s.srv.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("simupstream: close: %w", cerr))
			}
		}
		<-s.serveDone
		if s.serveErr != nil && !errors.Is(s.serveErr, http.ErrServerClosed) {
			err = errors.Join(err, fmt.Errorf("simupstream: serve: %w", s.serveErr))
		}
	}
	s.active.Wait()
	return err
}

// enter registers a handler with the lifecycle; it reports false once Close
// has begun. A true result must be paired with s.active.Done.
func (s *Server) enter() bool {
	s.lifeMu.RLock()
	defer s.lifeMu.RUnlock()
	if s.closed {
		return false
	}
	s.active.Add(1)
	return true
}
