package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	ooption "github.com/openai/openai-go/v3/option"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/workers/actor"
)

// End-to-end tests of HTTP/2 without TLS (h2c, with prior knowledge) at the
// front door. The other tests serve gateway.Server.Handler from httptest
// servers, which speak HTTP/1.1 only; these serve the gateway with
// gateway.Server.Serve, the http.Server that cmd/relay runs, so the
// Protocols it sets are what the clients meet.

// simTokens is the number of words the simulated upstreams answer with
// (their default Options.OutputTokens, under the max_tokens of
// messageParams and chatParams).
const simTokens = 8

// simText is the text of a complete simulated answer of n tokens.
func simText(n int) string {
	words := make([]string, n)
	for i := range words {
		words[i] = fmt.Sprintf("tok%d", i)
	}
	return strings.Join(words, " ")
}

// h2cClient is an HTTP client that speaks only HTTP/2 without TLS, with
// prior knowledge (it never falls back to HTTP/1.1), over at most one
// connection per host, and counts the connections it dials.
type h2cClient struct {
	*http.Client
	dials atomic.Int64
}

// newH2CClient returns an h2cClient whose connections are closed when the
// test ends.
func newH2CClient(t *testing.T) *h2cClient {
	t.Helper()
	c := &h2cClient{}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	var d net.Dialer
	tr := &http.Transport{
		Protocols:       &protocols,
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	c.Client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// checkHTTP2 fails the test at once unless a GET of url through c is
// answered 200 over HTTP/2. It also opens c's connection and lets it learn
// the server's HTTP/2 settings before a burst of requests.
func (c *h2cClient) checkHTTP2(t *testing.T, url string) {
	t.Helper()
	resp, body := sendWith(t, c.Client, http.MethodGet, url, nil, "")
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("GET %s: %s %d %s, want HTTP/2 200", url, resp.Proto, resp.StatusCode, body)
	}
}

// sendWith makes one request with hc and returns the response, with its
// body read and closed.
func sendWith(t *testing.T, hc *http.Client, method, url string, hdr map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, b
}

// sdkReply is what one SDK call through the relay gave back.
type sdkReply struct {
	text   string         // the text of the answer, streamed or not
	tokens int64          // output tokens, from the answer's usage
	resp   *http.Response // the raw response: headers and protocol
	err    error
}

// problem says what keeps rep from being a complete simulated answer
// received over HTTP/major, or returns "" when nothing does.
func (rep sdkReply) problem(major int) string {
	switch {
	case rep.err != nil:
		return "error: " + rep.err.Error()
	case rep.resp == nil:
		return "no response captured"
	case rep.resp.ProtoMajor != major:
		return fmt.Sprintf("answered over %s, want HTTP/%d", rep.resp.Proto, major)
	case rep.tokens != simTokens || rep.text != simText(simTokens):
		return fmt.Sprintf("text %q with %d output tokens, want %q with %d", rep.text, rep.tokens, simText(simTokens), simTokens)
	}
	return ""
}

// anthropicCall makes one Messages call with c, streamed (accumulating
// every event) or not, and returns what it got.
func anthropicCall(ctx context.Context, c anthropic.Client, p anthropic.MessageNewParams, stream bool) sdkReply {
	var rep sdkReply
	into := aoption.WithResponseInto(&rep.resp)
	var msg anthropic.Message
	if stream {
		s := c.Messages.NewStreaming(ctx, p, into)
		defer s.Close()
		for s.Next() {
			if err := msg.Accumulate(s.Current()); err != nil {
				rep.err = err
				return rep
			}
		}
		rep.err = s.Err()
	} else {
		m, err := c.Messages.New(ctx, p, into)
		if m != nil {
			msg = *m
		}
		rep.err = err
	}
	if len(msg.Content) > 0 {
		rep.text = msg.Content[0].Text
	}
	rep.tokens = msg.Usage.OutputTokens
	return rep
}

// anthropicAsync runs anthropicCall in a goroutine; its reply arrives on
// the channel returned.
func anthropicAsync(ctx context.Context, c anthropic.Client, p anthropic.MessageNewParams, stream bool) <-chan sdkReply {
	ch := make(chan sdkReply, 1)
	go func() { ch <- anthropicCall(ctx, c, p, stream) }()
	return ch
}

// recvSDK waits, as long as the other waits do, for the reply on ch.
func recvSDK(t *testing.T, ch <-chan sdkReply) sdkReply {
	t.Helper()
	var rep sdkReply
	natstest.Eventually(t, waitLimit, "SDK call to return", func() bool {
		select {
		case rep = <-ch:
			return true
		default:
			return false
		}
	})
	return rep
}

// holdSlot takes anthropic-a's only concurrency slot, as an upstream call
// in flight would, so that every claude-sonnet request parks; release
// gives it back and wakes the lanes. It is released when the test ends at
// the latest.
func (r *relay) holdSlot(t *testing.T) (release func()) {
	t.Helper()
	p, err := r.Actors["anthropic-a"].Admit(0, 0)
	if err != nil {
		t.Fatalf("taking the only slot: %v", err)
	}
	release = func() {
		p.Done(actor.Outcome{Kind: actor.Canceled}) // later calls are ignored
		r.Lanes.Kick()
	}
	t.Cleanup(release)
	return release
}

// TestH2CSDKs: the official Anthropic and OpenAI SDKs, given an HTTP
// client that speaks only h2c, get complete answers, streamed and not,
// over HTTP/2, all on one connection.
func TestH2CSDKs(t *testing.T) {
	r := newRelay(t)
	front := &relay{URL: serveFrontDoor(t, r.Gateway)}
	h2 := newH2CClient(t)
	ac := anthropicClient(front, canaryKey, aoption.WithHTTPClient(h2.Client))
	oc := openaiClient(front, canaryKey)
	ctx := t.Context()
	openaiCall := func(model string, stream bool) sdkReply {
		var rep sdkReply
		opts := []ooption.RequestOption{ooption.WithHTTPClient(h2.Client), ooption.WithResponseInto(&rep.resp)}
		p := chatParams(model)
		var cc openai.ChatCompletion
		if stream {
			p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			s := oc.Chat.Completions.NewStreaming(ctx, p, opts...)
			defer s.Close()
			var acc openai.ChatCompletionAccumulator
			for s.Next() {
				acc.AddChunk(s.Current())
			}
			cc, rep.err = acc.ChatCompletion, s.Err()
		} else {
			c, err := oc.Chat.Completions.New(ctx, p, opts...)
			if c != nil {
				cc = *c
			}
			rep.err = err
		}
		if len(cc.Choices) > 0 {
			rep.text = cc.Choices[0].Message.Content
		}
		rep.tokens = cc.Usage.CompletionTokens
		return rep
	}
	cases := []struct {
		name   string
		stream bool
		call   func() sdkReply
	}{
		{"anthropic message", false, func() sdkReply { return anthropicCall(ctx, ac, messageParams("claude-sonnet"), false) }},
		{"anthropic stream", true, func() sdkReply { return anthropicCall(ctx, ac, messageParams("claude-sonnet"), true) }},
		{"openai completion", false, func() sdkReply { return openaiCall("gpt-4o", false) }},
		{"openai stream with usage", true, func() sdkReply { return openaiCall("gpt-4o", true) }},
		{"openai stream translated from anthropic", true, func() sdkReply { return openaiCall("claude-sonnet", true) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := tc.call()
			if prob := rep.problem(2); prob != "" {
				t.Fatal(prob)
			}
			ct := rep.resp.Header.Get("Content-Type")
			if tc.stream != strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("content-type %q for stream=%v", ct, tc.stream)
			}
			if rep.resp.Header.Get("X-Request-Id") == "" {
				t.Errorf("no x-request-id")
			}
		})
	}
	if n := h2.dials.Load(); n != 1 {
		t.Errorf("the h2c client dialed %d connections for %d calls, want 1", n, len(cases))
	}
}

// TestH2CManyParkedShareOneConnection: many requests, streamed and not,
// parked at once on a lane behind a provider with one slot, all as streams
// of one h2c connection, are all served in full once the slot frees, each
// sent upstream exactly once. The second case's bodies together outgrow
// the server's 1 MiB HTTP/2 connection flow-control window: parked
// requests must not hold it, or the later ones could not even arrive.
//
// n stays under 250, the server's default SETTINGS_MAX_CONCURRENT_STREAMS
// (100 before a client has read the server's settings): past it Go's
// transport opens another connection, MaxConnsPerHost notwithstanding.
func TestH2CManyParkedShareOneConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int // requests
		pad  int // bytes of extra prompt per request
	}{
		{"small bodies", 48, 0},
		{"bodies past the connection window", 24, 96 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRelay(t, laneSetup(0, withFrontDoor())...)
			h2 := newH2CClient(t)
			h2.checkHTTP2(t, r.URL+"/healthz")
			c := anthropicClient(&relay{URL: r.URL}, canaryKey, aoption.WithHTTPClient(h2.Client))
			p := messageParams("claude-sonnet")
			if tc.pad > 0 {
				p.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(strings.Repeat("x", tc.pad)))}
			}
			release := r.holdSlot(t)
			replies := make([]<-chan sdkReply, tc.n)
			for i := range replies {
				replies[i] = anthropicAsync(t.Context(), c, p, i%2 == 1)
			}
			natstest.Eventually(t, waitLimit, fmt.Sprintf("%d parked", tc.n), func() bool { return r.Lanes.Depth("interactive") == tc.n })
			if n := r.Anthropic.Stats().Requests; n != 0 {
				t.Fatalf("upstream saw %d requests while its only slot was held", n)
			}
			release()
			for i, ch := range replies {
				rep := recvSDK(t, ch)
				if prob := rep.problem(2); prob != "" {
					t.Errorf("request %d (stream %v): %s", i, i%2 == 1, prob)
					continue
				}
				if q := rep.resp.Header.Get("X-Relay-Queue-Ms"); q == "" {
					t.Errorf("request %d: no x-relay-queue-ms after parking", i)
				}
			}
			if st := r.Anthropic.Stats(); st.Requests != int64(tc.n) || st.MaxInFlight != 1 {
				t.Errorf("upstream: %d requests, %d at once; want %d, 1", st.Requests, st.MaxInFlight, tc.n)
			}
			if got := r.metric(t, `relay_lane_dispatched_total{lane="interactive"}`); got != float64(tc.n) {
				t.Errorf(`relay_lane_dispatched_total{lane="interactive"} = %v, want %d`, got, tc.n)
			}
			if n := h2.dials.Load(); n != 1 {
				t.Errorf("the h2c client dialed %d connections for %d requests, want 1", n, tc.n)
			}
		})
	}
}

// TestH2CCancelWhileParked: a client that cancels a request parked over
// h2c resets only that HTTP/2 stream. The relay takes the request off its
// lane and never sends it upstream, while the connection keeps serving:
// a request parked beside it, a new one while it waits, and one after.
func TestH2CCancelWhileParked(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool
	}{
		{"message", false},
		{"stream", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRelay(t, laneSetup(0, withFrontDoor())...)
			h2 := newH2CClient(t)
			h2.checkHTTP2(t, r.URL+"/healthz")
			c := anthropicClient(&relay{URL: r.URL}, canaryKey, aoption.WithHTTPClient(h2.Client),
				aoption.WithHeader("x-relay-lane", "batch"))
			p := messageParams("claude-sonnet")
			release := r.holdSlot(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			gone := anthropicAsync(ctx, c, p, tc.stream)
			stays := anthropicAsync(t.Context(), c, p, tc.stream)
			natstest.Eventually(t, waitLimit, "2 parked", func() bool { return r.Lanes.Depth("batch") == 2 })
			cancel()
			if rep := recvSDK(t, gone); !errors.Is(rep.err, context.Canceled) {
				t.Errorf("canceled request: err %v, want context.Canceled", rep.err)
			}
			natstest.Eventually(t, waitLimit, "removed from the lane", func() bool { return r.Lanes.Depth("batch") == 1 })
			natstest.Eventually(t, waitLimit, `relay_lane_rejected_total{reason="canceled"}`, func() bool {
				return r.metric(t, `relay_lane_rejected_total{lane="batch",reason="canceled"}`) == 1
			})
			// The connection still takes new streams while one request is
			// parked on it and another was reset.
			resp, body := sendWith(t, h2.Client, http.MethodGet, r.URL+"/v1/models", anthropicHeaders(canaryKey), "")
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || !strings.Contains(string(body), "claude-sonnet") {
				t.Errorf("GET /v1/models beside the parked request: %s %d %s", resp.Proto, resp.StatusCode, body)
			}
			release()
			if prob := recvSDK(t, stays).problem(2); prob != "" {
				t.Errorf("request parked beside the canceled one: %s", prob)
			}
			if prob := anthropicCall(t.Context(), c, p, tc.stream).problem(2); prob != "" {
				t.Errorf("request after: %s", prob)
			}
			if n := r.Anthropic.Stats().Requests; n != 2 {
				t.Errorf("upstream saw %d requests, want 2 (the canceled one never sent)", n)
			}
			if got := r.metric(t, `relay_lane_dispatched_total{lane="batch"}`); got != 1 {
				t.Errorf(`relay_lane_dispatched_total{lane="batch"} = %v, want 1`, got)
			}
			if n := h2.dials.Load(); n != 1 {
				t.Errorf("the h2c client dialed %d connections, want 1: the cancel closed the connection", n)
			}
		})
	}
}

// TestH2CFrontDoorKeepsHTTP1: with h2c on, the front door answers HTTP/1.1
// clients as before, streams included: a default client, one that allows
// both protocols (Go's transport then keeps to HTTP/1.1 for http://), and
// one that asks to upgrade to h2c (what curl --http2 sends), which the
// server ignores and whose hop-by-hop headers never reach the upstream.
// An h2c client on the same front door, for contrast, gets HTTP/2.
func TestH2CFrontDoorKeepsHTTP1(t *testing.T) {
	r := newRelay(t)
	front := serveFrontDoor(t, r.Gateway)
	var both http.Protocols
	both.SetHTTP1(true)
	both.SetUnencryptedHTTP2(true)
	bothTr := &http.Transport{Protocols: &both}
	t.Cleanup(bothTr.CloseIdleConnections)
	upgrade := anthropicHeaders(canaryKey)
	upgrade["Connection"] = "Upgrade, HTTP2-Settings"
	upgrade["Upgrade"] = "h2c"
	upgrade["HTTP2-Settings"] = "AAMAAABkAAQCAAAAAAIAAAAA"
	cases := []struct {
		name   string
		client *http.Client
		hdr    map[string]string
		major  int
	}{
		{"default client", http.DefaultClient, anthropicHeaders(canaryKey), 1},
		{"transport allowing HTTP/1.1 and h2c", &http.Client{Transport: bothTr}, anthropicHeaders(canaryKey), 1},
		{"upgrade to h2c asked", http.DefaultClient, upgrade, 1},
		{"h2c client", newH2CClient(t).Client, anthropicHeaders(canaryKey), 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, stream := range []bool{false, true} {
				body := `{"model":"claude-sonnet","max_tokens":16,"stream":` + fmt.Sprint(stream) +
					`,"messages":[{"role":"user","content":"hi"}]}`
				resp, b := sendWith(t, tc.client, http.MethodPost, front+"/v1/messages", tc.hdr, body)
				if resp.StatusCode != http.StatusOK || resp.ProtoMajor != tc.major {
					t.Fatalf("stream=%v: %s %d, want HTTP/%d 200: %s", stream, resp.Proto, resp.StatusCode, tc.major, b)
				}
				var complete bool
				if stream {
					complete = strings.Contains(string(b), "event: message_stop") &&
						strings.Count(string(b), "event: content_block_delta") == simTokens
				} else {
					complete = strings.Contains(string(b), `"text":"`+simText(simTokens)+`"`)
				}
				if !complete {
					t.Errorf("stream=%v: incomplete answer %s", stream, b)
				}
				reqs := r.Anthropic.Requests()
				last := reqs[len(reqs)-1]
				for _, h := range []string{"Upgrade", "Http2-Settings", "Connection"} {
					if v := last.Header.Get(h); v != "" {
						t.Errorf("stream=%v: %s: %q reached the upstream", stream, h, v)
					}
				}
			}
		})
	}
}
