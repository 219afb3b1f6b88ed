package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
)

// Tests of the memory request bodies may take: bodies grow with the bytes
// that arrive, never with the Content-Length promised, and are charged to
// the body memory budget (Config.BodyMemoryBytes), which a slow client
// cannot hold past the body read timeout.

// promised is the Content-Length the promising clients announce: the
// largest body accepted by default (max_body_bytes).
const promised = 32 << 20

// bodyChunk is the gateway's first body buffer and budget step.
const bodyChunk = 16 << 10

// promiseH1 opens an HTTP/1.1 connection to base and sends an
// authenticated POST path announcing contentLength bytes of which it
// sends only body. The returned function closes the connection.
func promiseH1(t *testing.T, base, path string, contentLength int, body string) (net.Conn, func()) {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nX-Api-Key: %s\r\nAnthropic-Version: 2023-06-01\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, host, canaryKey, contentLength, body)
	if err != nil {
		t.Fatal(err)
	}
	return conn, func() { _ = conn.Close() }
}

// rawH2 is a minimal HTTP/2 client with prior knowledge that writes its
// frames by hand and never reads: Go's own transport would hold a 512 KiB
// scratch buffer per stream whose body it is still sending, which would
// drown the relay's own heap growth in the test's.
type rawH2 struct {
	conn net.Conn
	host string
	next uint32 // the next stream id
}

// dialRawH2 opens an h2c connection to base and sends the preface.
func dialRawH2(t *testing.T, base string) *rawH2 {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawH2{conn: conn, host: host, next: 1}
	if _, err := io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.frame(t, 0x4, 0, 0, nil) // SETTINGS, all defaults
	return c
}

// frame writes one HTTP/2 frame.
func (c *rawH2) frame(t *testing.T, typ, flags byte, stream uint32, payload []byte) {
	t.Helper()
	n := len(payload)
	hdr := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags,
		byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}
	if _, err := c.conn.Write(append(hdr, payload...)); err != nil {
		t.Fatal(err)
	}
}

// promise opens a stream POSTing /v1/messages, authenticated, that
// announces contentLength bytes and sends only body.
func (c *rawH2) promise(t *testing.T, contentLength int, body string) {
	t.Helper()
	var block []byte
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", c.host}, {":path", "/v1/messages"},
		{"x-api-key", canaryKey}, {"anthropic-version", "2023-06-01"}, {"content-type", "application/json"},
		{"content-length", strconv.Itoa(contentLength)},
	} {
		// HPACK literal header field without indexing, new name, no
		// Huffman coding: every string here is shorter than 127 bytes.
		block = append(block, 0)
		block = append(append(block, byte(len(f[0]))), f[0]...)
		block = append(append(block, byte(len(f[1]))), f[1]...)
	}
	id := c.next
	c.next += 2
	c.frame(t, 0x1, 0x4, id, block) // HEADERS, END_HEADERS
	c.frame(t, 0x0, 0, id, []byte(body))
}

// newH2CTransport returns a transport that speaks only h2c, opening as
// many connections as the server's stream limit needs.
func newH2CTransport(t *testing.T) *http.Transport {
	t.Helper()
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// heapInUse returns the Go heap's bytes in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// seriesValue returns the value of the series named exactly in a
// /metrics text, or -1 when absent.
func seriesValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// TestBodyMemoryPromisedNotReceived: 300 authenticated requests that
// announce 32 MiB bodies and send one byte, over HTTP/1.1 or h2c, cost
// the relay a first buffer each, not what they promised: the Go heap
// grows by less than 64 MiB (it grew by 300 x 32 MiB before), the budget
// holds 300 first chunks, and the relay serves a normal request meanwhile.
// Once the clients go, the budget is back to zero.
func TestBodyMemoryPromisedNotReceived(t *testing.T) {
	const n = 300
	const maxGrowth = 64 << 20
	for _, tc := range []struct {
		name  string
		major int
	}{
		{"HTTP/1.1", 1},
		{"h2c", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRelay(t, withQuietLogs())
			front := serveFrontDoor(t, r.Gateway)
			client := http.DefaultClient
			if tc.major == 2 {
				client = newH2CClient(t).Client
			}
			good := `{"model":"claude-sonnet","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
			// Warm up: the first requests allocate what every later one reuses.
			if resp, b := sendWith(t, client, http.MethodPost, front+"/v1/messages", anthropicHeaders(canaryKey), good); resp.StatusCode != http.StatusOK {
				t.Fatalf("warm-up: %d %s", resp.StatusCode, b)
			}
			before := heapInUse()
			closers := make([]func(), 0, n)
			defer func() {
				for _, c := range closers {
					c()
				}
			}()
			var h2 *rawH2
			for i := range n {
				switch {
				case tc.major == 1:
					_, c := promiseH1(t, front, "/v1/messages", promised, "{")
					closers = append(closers, c)
				case i%150 == 0:
					// 150 streams a connection, under the server's limit of 250.
					h2 = dialRawH2(t, front)
					conn := h2.conn
					closers = append(closers, func() { _ = conn.Close() })
					fallthrough
				default:
					h2.promise(t, promised, "{")
				}
			}
			natstest.Eventually(t, waitLimit, fmt.Sprintf("%d bodies being read", n), func() bool { return r.Gateway.BodyBytesInUse() == n*bodyChunk })
			during := heapInUse()
			growth := int64(during) - int64(before)
			t.Logf("%s: heap in use %d MiB before, %d MiB with %d bodies promised (%d MiB each) and one byte sent: growth %.1f MiB",
				tc.name, before>>20, during>>20, n, promised>>20, float64(growth)/(1<<20))
			if growth > maxGrowth {
				t.Errorf("heap grew by %d MiB, want < %d MiB", growth>>20, maxGrowth>>20)
			}
			if v := seriesValue(t, r.metricsText(t), "relay_body_bytes_in_use"); v != n*bodyChunk {
				t.Errorf("relay_body_bytes_in_use = %v, want %d", v, n*bodyChunk)
			}
			resp, b := sendWith(t, client, http.MethodPost, front+"/v1/messages", anthropicHeaders(canaryKey), good)
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != tc.major {
				t.Errorf("normal request meanwhile: %s %d %s", resp.Proto, resp.StatusCode, b)
			}
			for _, c := range closers {
				c()
			}
			closers = nil
			natstest.Eventually(t, waitLimit, "budget back to zero", func() bool { return r.Gateway.BodyBytesInUse() == 0 })
			if v := seriesValue(t, r.metricsText(t), "relay_body_budget_rejections_total"); v != 0 {
				t.Errorf("relay_body_budget_rejections_total = %v, want 0", v)
			}
		})
	}
}

// TestBodyBudgetFull: while one slow body holds the whole budget, new
// requests wait up to a second for room, then get 503 with retry-after in
// their own format (Anthropic overloaded_error, OpenAI
// service_unavailable), counted in relay_body_budget_rejections_total.
// Once the slow body goes, requests are served again, and a body larger
// than the whole budget gets 413.
func TestBodyBudgetFull(t *testing.T) {
	const budget = 64 << 10
	r := newRelay(t, withBodyMemory(budget))
	// 48 KiB sent: the relay has charged three chunks for them and a
	// fourth to read into.
	_, release := promiseH1(t, r.URL, "/v1/messages", 1<<20, strings.Repeat(" ", 48<<10))
	defer release()
	natstest.Eventually(t, waitLimit, "the slow body holding the budget", func() bool { return r.Gateway.BodyBytesInUse() == budget })

	claude := `{"model":"claude-sonnet","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
	gpt := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	cases := []struct {
		name, path, body string
		hdr              map[string]string
		f                apiFormat
		wantType         string
	}{
		{"anthropic messages", "/v1/messages", claude, anthropicHeaders(canaryKey), formats[0], "overloaded_error"},
		{"anthropic count_tokens", "/v1/messages/count_tokens", claude, anthropicHeaders(canaryKey), formats[0], "overloaded_error"},
		{"openai chat completions", "/v1/chat/completions", gpt, openaiHeaders(canaryKey), formats[1], "service_unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			rep := r.send(tc.path, tc.hdr, tc.body)
			if rep.err != nil {
				t.Fatal(rep.err)
			}
			if rep.status != http.StatusServiceUnavailable {
				t.Fatalf("status %d, want 503: %s", rep.status, rep.body)
			}
			if took := time.Since(start); took < 900*time.Millisecond {
				t.Errorf("answered after %v, want after waiting about 1s for room", took)
			}
			if got := retryAfterSecs(t, rep.header); got != 1 {
				t.Errorf("retry-after %d, want 1", got)
			}
			if got := errorType(rep.body); got != tc.wantType {
				t.Errorf("error %q, want %q: %s", got, tc.wantType, rep.body)
			}
			parseError(t, tc.f, rep.body)
		})
	}
	if v := seriesValue(t, r.metricsText(t), "relay_body_budget_rejections_total"); v != float64(len(cases)) {
		t.Errorf("relay_body_budget_rejections_total = %v, want %d", v, len(cases))
	}
	release()
	natstest.Eventually(t, waitLimit, "budget back to zero", func() bool { return r.Gateway.BodyBytesInUse() == 0 })
	if rep := r.send("/v1/messages", anthropicHeaders(canaryKey), claude); rep.status != http.StatusOK {
		t.Errorf("after the slow body left: %d %s", rep.status, rep.body)
	}
	big := `{"model":"claude-sonnet","max_tokens":16,"messages":[{"role":"user","content":"` + strings.Repeat("x", 2*budget) + `"}]}`
	rep := r.send("/v1/messages", anthropicHeaders(canaryKey), big)
	if rep.status != http.StatusRequestEntityTooLarge || errorType(rep.body) != "request_too_large" {
		t.Errorf("body larger than the budget: %d %s, want 413 request_too_large", rep.status, rep.body)
	}
	natstest.Eventually(t, waitLimit, "budget back to zero", func() bool { return r.Gateway.BodyBytesInUse() == 0 })
}

// TestBodyReadTimeoutFreesBudget: a client that trickles its body a byte
// at a time holds its budget only until the body read timeout, over
// HTTP/1.1 (answered 400) and over h2c (its stream is reset); the
// connection-level keep-alive of the trickle does not extend it.
func TestBodyReadTimeoutFreesBudget(t *testing.T) {
	const timeout = 500 * time.Millisecond
	for _, tc := range []struct {
		name  string
		major int
	}{
		{"HTTP/1.1", 1},
		{"h2c", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRelay(t, withBodyReadTimeout(timeout), withQuietLogs())
			front := serveFrontDoor(t, r.Gateway)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			defer func() {
				close(stop)
				wg.Wait()
			}()
			start := time.Now()
			var answer <-chan string
			if tc.major == 1 {
				conn, closeConn := promiseH1(t, front, "/v1/messages", 1<<20, "{")
				defer closeConn()
				wg.Add(1)
				go func() {
					defer wg.Done()
					trickle(stop, func() error { _, err := conn.Write([]byte(" ")); return err })
				}()
				ch := make(chan string, 1)
				answer = ch
				go func() { ch <- answerText(http.ReadResponse(bufio.NewReader(conn), nil)) }()
			} else {
				pr, pw := io.Pipe()
				defer pw.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					trickle(stop, func() error { _, err := pw.Write([]byte(" ")); return err })
				}()
				answer = roundTripAsync(newH2CTransport(t), front, pr)
			}
			natstest.Eventually(t, waitLimit, "the trickled body charged", func() bool { return r.Gateway.BodyBytesInUse() > 0 })
			natstest.Eventually(t, waitLimit, "budget back to zero", func() bool { return r.Gateway.BodyBytesInUse() == 0 })
			if took := time.Since(start); took < timeout || took > timeout+5*time.Second {
				t.Errorf("budget held for %v, want about %v", took, timeout)
			}
			got := <-answer
			if tc.major == 1 && (!strings.HasPrefix(got, "400 ") || !strings.Contains(got, "not received within "+timeout.String())) {
				t.Errorf("answer %q, want 400 saying the body was not received in time", got)
			}
			t.Logf("%s: answer %.120q", tc.name, got)
		})
	}
}

// trickle calls write every 20 ms until stop closes or write fails.
func trickle(stop <-chan struct{}, write func() error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			if write() != nil {
				return
			}
		}
	}
}

// roundTripAsync posts body (announcing 1 MiB) to /v1/messages through
// tr; the status and body, or the error, arrive on the channel.
func roundTripAsync(tr *http.Transport, base string, body io.ReadCloser) <-chan string {
	ch := make(chan string, 1)
	req, err := http.NewRequest(http.MethodPost, base+"/v1/messages", body)
	if err != nil {
		ch <- err.Error()
		return ch
	}
	req.ContentLength = 1 << 20
	for k, v := range anthropicHeaders(canaryKey) {
		req.Header.Set(k, v)
	}
	go func() { ch <- answerText(tr.RoundTrip(req)) }()
	return ch
}

// answerText is a response's status and body ("503 {...}"), or the error.
func answerText(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "read body: " + err.Error()
	}
	return strconv.Itoa(resp.StatusCode) + " " + string(b)
}
