// Package translate converts requests, responses, error bodies and
// server-sent event streams between the Anthropic Messages API and the OpenAI
// Chat Completions API.
//
// The gateway uses it when a route sends a request to a provider that speaks
// the other format, for example a claude-sonnet route falling back to gpt-4o:
// the client still sees its own format, streaming included, so the official
// SDKs work unchanged.
//
// Everything here is pure: no network, no goroutines, no shared state. The
// conversion functions are safe for concurrent use. A StreamConverter holds the
// state of one stream and must not be used by more than one goroutine at a time.
//
// Fields that have an equivalent on the other side are mapped; fields that have
// none (Anthropic thinking and top_k, OpenAI n, seed and penalties, and so on)
// are dropped.
package translate
