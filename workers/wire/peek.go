// Package wire reads and rewrites the relay's two API wire formats without
// decoding whole bodies: it peeks at the few top-level fields the relay routes
// on, splices a new model name into a body, splits server-sent event streams
// into events, and extracts token usage from responses and stream events.
// CheckDepth bounds JSON nesting with a linear, non-recursive scan, to run
// before anything that recurses once per level (gjson's validator,
// encoding/json) sees untrusted JSON; Peek runs it itself.
//
// Everything here is pure and safe for concurrent use; functions never keep
// references to the byte slices they are given unless they say so.
package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
)

// Errors returned by Peek, besides a *DepthError. They are safe to show
// to clients.
var (
	// ErrInvalidJSON means the body is not valid JSON.
	ErrInvalidJSON = errors.New("request body is not valid JSON")
	// ErrNotObject means the body is JSON but not an object.
	ErrNotObject = errors.New("request body must be a JSON object")
	// ErrNoModel means the body has no "model" string.
	ErrNoModel = errors.New("model: field required")
)

// Fields are the top-level request fields the relay routes and accounts on.
type Fields struct {
	// Model is the "model" string.
	Model string
	// Stream is the "stream" boolean.
	Stream bool
	// MaxTokens is "max_tokens", or OpenAI's "max_completion_tokens"; 0 when absent.
	MaxTokens int
	// IncludeUsage is OpenAI's "stream_options.include_usage".
	IncludeUsage bool
	// HasStreamOptions reports whether the body has "stream_options".
	HasStreamOptions bool

	// modelStart and modelEnd bound the raw "model" value (quotes included).
	modelStart, modelEnd int
}

// Peek validates body as a JSON object and reads its routing fields in one
// pass over the top level, without decoding nested values. A body whose
// "model" appears twice is refused, so the relay and the upstream can never
// disagree on which model was asked for.
//
// Arrays and objects nested deeper than maxDepth levels (0 or less:
// FallbackMaxDepth) are refused with a *DepthError before anything
// recursive reads the body.
func Peek(body []byte, maxDepth int) (Fields, error) {
	var f Fields
	if err := CheckDepth(body, maxDepth); err != nil {
		return f, err
	}
	s := bytesToString(body)
	if !gjson.Valid(s) {
		return f, ErrInvalidJSON
	}
	root := gjson.Parse(s)
	if !root.IsObject() {
		return f, ErrNotObject
	}
	var err error
	models := 0
	root.ForEach(func(key, value gjson.Result) bool {
		switch key.Str {
		case "model":
			models++
			if models > 1 {
				err = errors.New("model: field given more than once")
				return false
			}
			if value.Type != gjson.String {
				err = errors.New("model: must be a string")
				return false
			}
			start := value.Index
			if start <= 0 || start+len(value.Raw) > len(body) || !bytes.Equal(body[start:start+len(value.Raw)], []byte(value.Raw)) {
				// Index is unknown only for pathological input; find it the slow way.
				start = -1
			}
			f.Model = strings.Clone(value.Str)
			f.modelStart, f.modelEnd = start, start+len(value.Raw)
		case "stream":
			f.Stream = value.Type == gjson.True
		case "max_tokens", "max_completion_tokens":
			if value.Type == gjson.Number && value.Num > 0 && value.Num < 1<<31 {
				f.MaxTokens = int(value.Num)
			}
		case "stream_options":
			f.HasStreamOptions = true
			f.IncludeUsage = value.Get("include_usage").Type == gjson.True
		}
		return true
	})
	if err != nil {
		return Fields{}, err
	}
	if f.Model == "" {
		return Fields{}, ErrNoModel
	}
	if f.modelStart < 0 {
		return Fields{}, fmt.Errorf("model: cannot locate value in body: %w", ErrInvalidJSON)
	}
	return f, nil
}

// RewriteModel returns body with its "model" value replaced by model,
// appended to dst[:0]. Everything else is kept byte for byte. f must come
// from Peek(body). When model equals f.Model, body itself is returned.
func RewriteModel(dst, body []byte, f Fields, model string) []byte {
	if model == f.Model {
		return body
	}
	dst = dst[:0]
	dst = append(dst, body[:f.modelStart]...)
	dst = AppendString(dst, model)
	dst = append(dst, body[f.modelEnd:]...)
	return dst
}

// AskUsage returns body, an OpenAI streaming request without
// "stream_options", with "stream_options":{"include_usage":true} added as
// its first field, appended to dst[:0], so the upstream reports the usage
// the relay accounts tokens with. Other bodies are returned unchanged.
func AskUsage(dst, body []byte, f Fields) []byte {
	if !f.Stream || f.HasStreamOptions {
		return body
	}
	i := bytes.IndexByte(body, '{')
	if i < 0 {
		return body
	}
	dst = append(dst[:0], body[:i+1]...)
	dst = append(dst, `"stream_options":{"include_usage":true},`...)
	return append(dst, body[i+1:]...)
}

// AppendString appends s to dst as a JSON string literal.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = AppendEscaped(dst, s)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// AppendEscaped appends the JSON-escaped form of s without quotes. Invalid
// UTF-8 becomes U+FFFD, as encoding/json does, and U+2028/U+2029 are
// escaped, so the result is valid JSON and safe in JavaScript.
func AppendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

// bytesToString views b as a string without copying. The caller must not
// modify b while the string is in use, and must copy anything kept.
func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
