package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// This file owns reading request bodies and the body memory budget.
//
// Request bodies are read by one helper, bodyReader, on every endpoint
// that reads one (messages, count_tokens, chat/completions, jobs, message
// batches). Memory follows the bytes that actually arrive, never the
// Content-Length a client promises: a buffer starts at bodyChunk (pooled)
// and grows as bytes come in, and every byte read is first charged to the
// server's body memory budget (Config.BodyMemoryBytes), in steps of at
// least bodyChunk. Past the budget a read waits up to Options.BodyBudgetWait
// for bytes to be given back, then the request is answered 503 with
// retry-after. A body larger than the whole budget is answered 413.
//
// What the budget counts: bodies being read, and bodies held by requests
// being served directly (their buffer is needed for retries). A request
// parked on a lane gives its charge back when it parks: it keeps an
// exact-size copy of a body that arrived in full, and those copies are
// bounded by the lanes' max_depth times max_body_bytes, not by the budget.

// bodyChunk is the first buffer size and smallest budget step of a body.
const bodyChunk = 16 << 10

// maxPooledBody is the largest body buffer kept in the pool.
const maxPooledBody = 1 << 20

// defaultBodyMemoryBytes is the body memory budget when Config leaves it 0.
const defaultBodyMemoryBytes = 512 << 20

// defaultBodyBudgetWait is how long a read waits for budget by default.
const defaultBodyBudgetWait = time.Second

// errBudgetFull is returned by bodyBudget.reserve when no bytes were
// given back in time.
var errBudgetFull = errors.New("body memory budget exhausted")

// bodyBudget bounds the bytes of request bodies held at once. It is safe
// for concurrent use.
type bodyBudget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	waiters int
	freed   chan struct{} // closed (and replaced) when bytes are given back to waiters
}

func newBodyBudget(limit int64) *bodyBudget {
	return &bodyBudget{limit: limit, freed: make(chan struct{})}
}

// setLimit changes the budget; bytes held beyond a lowered limit are kept
// until released.
func (b *bodyBudget) setLimit(limit int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = limit
	b.wake()
}

// inUse returns the bytes held now.
func (b *bodyBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// fits reports whether n bytes could ever be held at once, and the
// limit.
func (b *bodyBudget) fits(n int64) (bool, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return n <= b.limit, b.limit
}

// reserve takes n bytes, waiting until the time until at the latest for
// others to give bytes back. It returns errBudgetFull when none came in
// time, or ctx's error when ctx ended first.
func (b *bodyBudget) reserve(ctx context.Context, n int64, until time.Time) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b.mu.Lock()
		if b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		wait := time.Until(until)
		if wait <= 0 {
			b.mu.Unlock()
			return errBudgetFull
		}
		b.waiters++
		freed := b.freed
		b.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		var err error
		select {
		case <-freed:
		case <-timer.C:
			until = time.Time{}
		case <-ctx.Done():
			err = ctx.Err()
		}
		b.mu.Lock()
		b.waiters--
		b.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// release gives n bytes back.
func (b *bodyBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	b.wake()
}

// wake tells the waiters, if any, that bytes were given back. b.mu is
// held.
func (b *bodyBudget) wake() {
	if b.waiters > 0 {
		close(b.freed)
		b.freed = make(chan struct{})
	}
}

// registerBodyMetrics registers the budget's gauge and returns the
// rejection counter.
func registerBodyMetrics(reg prometheus.Registerer, b *bodyBudget) prometheus.Counter {
	inUse := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_body_bytes_in_use",
		Help: "Bytes of request bodies charged to the body memory budget (body_memory_bytes) now.",
	}, func() float64 { return float64(b.inUse()) })
	rejected := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "relay_body_budget_rejections_total",
		Help: "Requests answered 503 because the body memory budget (body_memory_bytes) stayed full.",
	})
	reg.MustRegister(inUse, rejected)
	return rejected
}

// bodyBuf is a pooled request body buffer and the budget bytes charged
// for it. Give it back with putBody, which releases the charge.
type bodyBuf struct {
	b      []byte
	held   int64
	budget *bodyBudget
}

// bodyPool recycles request body buffers.
var bodyPool = sync.Pool{New: func() any { return &bodyBuf{b: make([]byte, 0, bodyChunk)} }}

// getBody returns a pooled body buffer; give it back with putBody.
func getBody() *bodyBuf { return bodyPool.Get().(*bodyBuf) }

// putBody releases the buffer's budget charge and returns it to the pool,
// unless it grew too large to keep.
func putBody(bb *bodyBuf) {
	if bb.budget != nil {
		bb.budget.release(bb.held)
		bb.held, bb.budget = 0, nil
	}
	if cap(bb.b) <= maxPooledBody {
		bb.b = bb.b[:0]
		bodyPool.Put(bb)
	}
}

// bodyReader reads one request body: at most limit bytes (413 past it),
// within the body read timeout, each byte charged to the budget before
// it is read. Its Read serves streaming decoders; readBody fills a buffer
// with it. done ends it and releases what it still holds.
type bodyReader struct {
	s     *Server
	c     echo.Context
	r     io.Reader
	limit int64
	read  int64         // bytes read
	held  int64         // bytes charged, >= read
	wait  time.Duration // what is left of the wait for budget, over all reads
	aerr  *apiError     // why the budget refused a read
}

// newBodyReader starts reading c's body: it sets the body read deadline.
// The caller must call done. (A value, so that readBody's stays on the
// stack.)
func (s *Server) newBodyReader(c echo.Context, limit int64) bodyReader {
	rc := http.NewResponseController(c.Response().Writer)
	_ = rc.SetReadDeadline(time.Now().Add(s.opts.BodyReadTimeout))
	return bodyReader{s: s, c: c, limit: limit, wait: s.opts.BodyBudgetWait,
		r: http.MaxBytesReader(c.Response().Writer, c.Request().Body, limit)}
}

// Read reads into p no more than has been charged, charging another step
// first when nothing is left.
func (br *bodyReader) Read(p []byte) (int, error) {
	if br.aerr != nil {
		return 0, br.aerr
	}
	if br.held == br.read {
		if aerr := br.charge(); aerr != nil {
			br.aerr = aerr
			return 0, aerr
		}
	}
	if room := br.held - br.read; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := br.r.Read(p)
	br.read += int64(n)
	return n, err
}

// charge takes the next step from the budget: an eighth of what is held,
// at least bodyChunk, no further than one byte past limit (enough to tell
// a body over it).
func (br *bodyReader) charge() *apiError {
	return br.chargeWith(br.c.Request().Context())
}

// chargeWith is charge, waiting for budget until ctx ends at the latest.
func (br *bodyReader) chargeWith(ctx context.Context) *apiError {
	step := max(int64(bodyChunk), br.held/8)
	step = min(step, br.limit+1-br.held)
	b := br.s.budget
	if ok, total := b.fits(br.held + step); !ok {
		if br.held+1 > total {
			return errTooLarge(total)
		}
		step = total - br.held
	}
	start := time.Now()
	err := b.reserve(ctx, step, start.Add(br.wait))
	br.wait -= time.Since(start)
	if err != nil {
		if errors.Is(err, errBudgetFull) {
			br.s.bodyRejected.Inc()
			e := errBodyBudget()
			e.cause = err
			return e
		}
		e := errBadRequest("could not read request body")
		e.cause = err
		return e
	}
	br.held += step
	return nil
}

// done clears the read deadline and releases the bytes still held.
func (br *bodyReader) done() {
	rc := http.NewResponseController(br.c.Response().Writer)
	_ = rc.SetReadDeadline(time.Time{})
	br.s.budget.release(br.held)
	br.held = 0
}

// keep moves the reader's charge to bb, to be released by putBody.
func (br *bodyReader) keep(bb *bodyBuf) {
	if bb.budget == nil {
		bb.budget = br.s.budget
	}
	bb.held += br.held
	br.held = 0
}

// retryAfterBudget is the retry-after of an answer refused for budget.
const retryAfterBudget = time.Second

// readErr maps an error reading a body to its answer.
func (br *bodyReader) readErr(err error) *apiError {
	var ae *apiError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &mbe):
		return errTooLarge(br.limit)
	}
	msg := "could not read request body"
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		msg = "request body not received within " + br.s.opts.BodyReadTimeout.String()
	}
	e := errBadRequest(msg)
	e.cause = err
	return e
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// readBody reads the request body into bb, bounded by limit, by the body
// read timeout and by the body memory budget. The buffer grows with the
// bytes that arrive; Content-Length only refuses a body promised larger
// than limit at once. The budget charge stays with bb until putBody.
func (s *Server) readBody(c echo.Context, limit int64, bb *bodyBuf) ([]byte, *apiError) {
	if r := c.Request(); r.ContentLength > limit {
		return nil, errTooLarge(limit)
	}
	br := s.newBodyReader(c, limit)
	defer br.done()
	buf := bb.b[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := br.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			bb.b = buf[:0]
			return nil, br.readErr(err)
		}
	}
	bb.b = buf
	br.keep(bb)
	if len(buf) == 0 {
		return nil, errBadRequest("request body is empty")
	}
	return buf, nil
}
