package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/translate"
	"github.com/relaygw/relay/workers/wire"
	"github.com/tidwall/gjson"
)

// attempt makes one upstream call to t under permit (nil when the target
// has no admission control). It returns a Response for any answer the
// client should see, or a Failure worth trying elsewhere; either way the
// permit learns the outcome (a Stream reports it when it ends).
func (r *Router) attempt(ctx context.Context, req *Request, t *target, permit *actor.Permit) (*Response, *Failure) {
	body, err := r.upstreamBody(req, t)
	if err != nil {
		// The client's body could not be expressed in the target's format.
		r.finish(permit, actor.Outcome{Kind: actor.Canceled})
		return nil, &Failure{Provider: t.ProviderName, Kind: FailInvalidRequest, Err: err}
	}
	callCtx, cancel := context.WithTimeout(ctx, t.Timeout)
	start := time.Now()
	resp, err := t.Provider.Call(callCtx, &Call{Body: body, Stream: req.Fields.Stream, Header: upstreamHeader(ctx, req.Header)})
	if err != nil {
		cancel()
		return nil, r.callFailure(ctx, callCtx, t, permit, start, err)
	}
	status := resp.StatusCode
	switch {
	case status >= 200 && status < 300:
		if req.Fields.Stream {
			return r.streamAnswer(ctx, req, t, permit, resp, cancel, start)
		}
		defer cancel()
		return r.bodyAnswer(ctx, callCtx, req, t, permit, resp, start)
	case status == http.StatusUnauthorized:
		drain(resp)
		cancel()
		return nil, r.keyRefused(t, permit, resp, start, "")
	case status == http.StatusForbidden:
		defer cancel()
		return r.forbiddenAnswer(ctx, callCtx, req, t, permit, resp, start)
	case retryableStatus(status):
		ra := retryAfter(resp.Header)
		drain(resp)
		cancel()
		r.finish(permit, actor.Outcome{Kind: statusOutcome(status), RetryAfter: ra, Header: resp.Header})
		r.metrics.attempt(t.ProviderName, strconv.Itoa(status), time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailStatus, Status: status, RetryAfter: ra,
			Err: fmt.Errorf("upstream status %d", status)}
	default:
		defer cancel()
		return r.clientErrorAnswer(ctx, callCtx, req, t, permit, resp, start)
	}
}

// statusOutcome classifies a retryable upstream status for the actor.
func statusOutcome(status int) actor.OutcomeKind {
	switch status {
	case http.StatusTooManyRequests:
		return actor.RateLimited
	case 529:
		return actor.Overloaded
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return actor.Timeout
	}
	return actor.ServerError
}

// upstreamBody expresses the client's body in t's format with t's model.
func (r *Router) upstreamBody(req *Request, t *target) ([]byte, error) {
	model := t.upstreamModel(req.Fields.Model)
	switch {
	case t.Format == req.Format && t.Format == FormatOpenAI && req.Fields.Stream && !req.Fields.HasStreamOptions:
		// Ask for the usage chunk the token accounting needs; the Stream
		// drops it, as the client did not ask for it.
		return wire.AskUsage(nil, wire.RewriteModel(nil, req.Body, req.Fields, model), req.Fields), nil
	case t.Format == req.Format:
		return wire.RewriteModel(nil, req.Body, req.Fields, model), nil
	case req.Format == FormatAnthropic:
		return translate.AnthropicToOpenAIRequest(req.Body, model, r.maxDepth)
	default:
		return translate.OpenAIToAnthropicRequest(req.Body, model, r.maxDepth)
	}
}

func (r *Router) callFailure(ctx, callCtx context.Context, t *target, permit *actor.Permit, start time.Time, err error) *Failure {
	f := &Failure{Provider: t.ProviderName, Kind: FailUnreachable, Err: err}
	outcome, kind := "unreachable", actor.ConnError
	switch {
	case ctx.Err() != nil:
		outcome, kind = "canceled", actor.Canceled
	case errors.Is(callCtx.Err(), context.DeadlineExceeded):
		f.Kind = FailTimeout
		f.Err = fmt.Errorf("upstream timed out after %s", t.Timeout)
		outcome, kind = "timeout", actor.Timeout
	case errors.Is(err, ErrFirstByteTimeout):
		// A hung upstream: the same failure as a timeout, found sooner.
		f.Kind = FailTimeout
		outcome, kind = "timeout", actor.Timeout
	}
	r.finish(permit, actor.Outcome{Kind: kind})
	r.metrics.attempt(t.ProviderName, outcome, time.Since(start))
	return f
}

// bodyAnswer reads a 2xx non-streaming answer and checks it is a JSON
// object nested no deeper than the limit; anything else is garbage.
func (r *Router) bodyAnswer(ctx, callCtx context.Context, req *Request, t *target, permit *actor.Permit, resp *http.Response, start time.Time) (*Response, *Failure) {
	data, err := readBody(resp)
	if err != nil {
		return nil, r.callFailure(ctx, callCtx, t, permit, start, fmt.Errorf("read upstream body: %w", err))
	}
	var garbage error
	if err := wire.CheckDepth(data, r.maxDepth); err != nil {
		garbage = fmt.Errorf("upstream answered with a body that is not usable JSON: %w", err)
	} else if !gjson.ValidBytes(data) || !gjson.ParseBytes(data).IsObject() {
		garbage = errors.New("upstream answered with a body that is not a JSON object")
	}
	if garbage != nil {
		r.finish(permit, actor.Outcome{Kind: actor.ServerError, Header: resp.Header})
		r.metrics.attempt(t.ProviderName, "garbage", time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailGarbage, Status: resp.StatusCode, Err: garbage}
	}
	var usage wire.Usage
	if t.Format == FormatAnthropic {
		usage = wire.AnthropicUsage(data)
	} else {
		usage = wire.OpenAIUsage(data)
	}
	r.finish(permit, actor.Outcome{Kind: actor.Success, Header: resp.Header,
		InputTokens: usage.Input, OutputTokens: usage.Output, UsageKnown: usage.Known})
	if t.Format != req.Format {
		if req.Format == FormatAnthropic {
			data, err = translate.OpenAIToAnthropicResponse(data, r.maxDepth)
		} else {
			data, err = translate.AnthropicToOpenAIResponse(data, r.maxDepth)
		}
		if err != nil {
			r.metrics.attempt(t.ProviderName, "garbage", time.Since(start))
			return nil, &Failure{Provider: t.ProviderName, Kind: FailGarbage, Status: resp.StatusCode,
				Err: fmt.Errorf("translate upstream answer: %w", err)}
		}
	}
	r.metrics.attempt(t.ProviderName, strconv.Itoa(resp.StatusCode), time.Since(start))
	return &Response{
		StatusCode:    resp.StatusCode,
		Header:        passHeaders(resp.Header, t.Format == req.Format),
		Body:          data,
		Provider:      t.ProviderName,
		UpstreamModel: t.upstreamModel(req.Fields.Model),
		Usage:         usage,
	}, nil
}

// keyRefused settles a call whose upstream refused the provider's key: the
// provider is set aside (the actor refuses it with provider_auth) and the
// request moves on. how says how the refusal was established.
func (r *Router) keyRefused(t *target, permit *actor.Permit, resp *http.Response, start time.Time, how string) *Failure {
	r.finish(permit, actor.Outcome{Kind: actor.ProviderAuth, Header: resp.Header})
	r.metrics.attempt(t.ProviderName, "provider_auth", time.Since(start))
	return &Failure{Provider: t.ProviderName, Kind: FailProviderAuth, Status: resp.StatusCode,
		Err: fmt.Errorf("upstream refused the provider's key (status %d%s)", resp.StatusCode, how)}
}

// forbiddenAnswer handles an upstream 403. It sets the provider aside only
// when the body blames the key (keyProblem) and a key probe, shared with
// every other request that got a 403 meanwhile, is refused as well; the
// request then moves on to another target. Otherwise the 403 was the
// request's own (a model or feature the key may not use, a policy) and
// goes to this caller only, while the provider keeps serving the others.
func (r *Router) forbiddenAnswer(ctx, callCtx context.Context, req *Request, t *target, permit *actor.Permit, resp *http.Response, start time.Time) (*Response, *Failure) {
	data, err := readBody(resp)
	if err != nil {
		return nil, r.callFailure(ctx, callCtx, t, permit, start, fmt.Errorf("read upstream error body: %w", err))
	}
	if kp, ok := t.Provider.(KeyProber); ok && keyProblem(t.Format, data) {
		v := kp.ProbeKey(callCtx)
		if ctx.Err() != nil {
			return nil, r.callFailure(ctx, callCtx, t, permit, start, fmt.Errorf("key probe: %w", ctx.Err()))
		}
		r.log.LogAttrs(ctx, slog.LevelInfo, "upstream 403 on the provider key probed",
			slog.String("provider", t.ProviderName), slog.String("verdict", v.String()))
		if v == KeyRefused {
			return nil, r.keyRefused(t, permit, resp, start, ", confirmed by a key probe")
		}
	}
	return r.passError(req, t, permit, resp, data, start), nil
}

// clientErrorAnswer passes an upstream 4xx caused by the request on to the
// client, in the client's format.
func (r *Router) clientErrorAnswer(ctx, callCtx context.Context, req *Request, t *target, permit *actor.Permit, resp *http.Response, start time.Time) (*Response, *Failure) {
	data, err := readBody(resp)
	if err != nil {
		return nil, r.callFailure(ctx, callCtx, t, permit, start, fmt.Errorf("read upstream error body: %w", err))
	}
	return r.passError(req, t, permit, resp, data, start), nil
}

// passError settles a call answered with a 4xx caused by the request and
// returns that answer, body data, in the client's format.
func (r *Router) passError(req *Request, t *target, permit *actor.Permit, resp *http.Response, data []byte, start time.Time) *Response {
	r.finish(permit, actor.Outcome{Kind: actor.ClientError, Header: resp.Header})
	r.metrics.attempt(t.ProviderName, strconv.Itoa(resp.StatusCode), time.Since(start))
	h := passHeaders(resp.Header, t.Format == req.Format)
	if t.Format != req.Format {
		if req.Format == FormatAnthropic {
			data = translate.OpenAIToAnthropicError(resp.StatusCode, data, r.maxDepth)
		} else {
			data = translate.AnthropicToOpenAIError(resp.StatusCode, data, r.maxDepth)
		}
		h.Set("Content-Type", "application/json")
	}
	return &Response{
		StatusCode:    resp.StatusCode,
		Header:        h,
		Body:          data,
		Provider:      t.ProviderName,
		UpstreamModel: t.upstreamModel(req.Fields.Model),
	}
}

// streamAnswer accepts a 2xx streaming answer. Nothing has been read from
// the body yet; the Stream owns it, cancel and the permit.
func (r *Router) streamAnswer(ctx context.Context, req *Request, t *target, permit *actor.Permit, resp *http.Response, cancel context.CancelFunc, start time.Time) (*Response, *Failure) {
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		drain(resp)
		cancel()
		r.finish(permit, actor.Outcome{Kind: actor.ServerError, Header: resp.Header})
		r.metrics.attempt(t.ProviderName, "garbage", time.Since(start))
		return nil, &Failure{Provider: t.ProviderName, Kind: FailGarbage, Status: resp.StatusCode,
			Err: fmt.Errorf("upstream answered a stream request with content type %q", ct)}
	}
	r.metrics.attempt(t.ProviderName, strconv.Itoa(resp.StatusCode), -1)
	s := newStream(resp.Body, cancel, req.Format, t.Format, req.Fields.IncludeUsage, r.maxDepth)
	s.dropUsage = t.Format == FormatOpenAI && req.Format == FormatOpenAI && !req.Fields.HasStreamOptions
	upHeader := resp.Header
	s.onDone = func(u wire.Usage, broken bool) {
		kind := actor.Success
		switch {
		case ctx.Err() != nil:
			kind = actor.Canceled
		case broken:
			kind = actor.ConnError
		}
		r.finish(permit, actor.Outcome{Kind: kind, Header: upHeader,
			InputTokens: u.Input, OutputTokens: u.Output, UsageKnown: u.Known})
		r.metrics.upstreamDone(t.ProviderName, time.Since(start))
	}
	h := passHeaders(resp.Header, t.Format == req.Format)
	h.Set("Content-Type", "text/event-stream")
	return &Response{
		StatusCode:    resp.StatusCode,
		Header:        h,
		Stream:        s,
		Provider:      t.ProviderName,
		UpstreamModel: t.upstreamModel(req.Fields.Model),
	}, nil
}

// retryableStatus reports whether another target may succeed where an
// upstream answered status.
func retryableStatus(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests ||
		status >= 500
}

// retryAfter reads retry-after-ms or retry-after (seconds or an HTTP date).
func retryAfter(h http.Header) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// passHeaders selects the upstream response headers a client may see.
// Rate-limit headers describe the provider's key, not the client's, so
// they stay behind.
func passHeaders(up http.Header, sameFormat bool) http.Header {
	h := make(http.Header, 3)
	if ct := up.Get("Content-Type"); ct != "" {
		h["Content-Type"] = []string{ct}
	}
	if v := up.Get("Request-Id"); v != "" && sameFormat {
		h["Request-Id"] = []string{v}
	}
	if v := up.Get("X-Request-Id"); v != "" {
		h["X-Upstream-Request-Id"] = []string{v}
	}
	return h
}

// readBody reads a bounded response body and closes it.
func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	n := resp.ContentLength
	if n < 0 || n > maxResponseBytes {
		n = 4096
	}
	buf := make([]byte, 0, n+1)
	lr := io.LimitReader(resp.Body, maxResponseBytes+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if len(buf) > maxResponseBytes {
		return nil, fmt.Errorf("upstream body over %d bytes", maxResponseBytes)
	}
	return buf, nil
}

// drain reads a little of an unwanted body so the connection can be
// reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}
