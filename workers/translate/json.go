package translate

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/relaygw/relay/workers/wire"
)

// ErrInvalidBody is wrapped by every error a conversion returns because its
// input is not the JSON it expects: not JSON at all, not an object, or missing
// a required structure. Callers typically answer 400 for a client body and 502
// for an upstream one.
var ErrInvalidBody = errors.New("invalid JSON body")

// parseObject validates body and parses it as a JSON object. The body is copied
// into one string so that every value read afterwards is a substring of it
// rather than a fresh allocation. Nesting deeper than maxDepth is refused
// (wrapping both ErrInvalidBody and the *wire.DepthError) before the
// validator, which recurses once per level, sees the body.
func parseObject(body []byte, maxDepth int) (gjson.Result, error) {
	if err := wire.CheckDepth(body, maxDepth); err != nil {
		return gjson.Result{}, fmt.Errorf("%w: %w", ErrInvalidBody, err)
	}
	s := string(body)
	if !gjson.Valid(s) {
		return gjson.Result{}, ErrInvalidBody
	}
	r := gjson.Parse(s)
	if !r.IsObject() {
		return gjson.Result{}, ErrInvalidBody
	}
	return r, nil
}

// appendString appends s as a JSON string literal.
func appendString(b []byte, s string) []byte { return wire.AppendString(b, s) }

// appendEscaped appends s JSON-escaped, without quotes.
func appendEscaped(b []byte, s string) []byte { return wire.AppendEscaped(b, s) }

// appendStr appends r as a JSON string. A string value is copied as it was
// written; anything else is converted to its string form first.
func appendStr(b []byte, r gjson.Result) []byte {
	if r.Type == gjson.String && isQuoted(r.Raw) {
		return append(b, r.Raw...)
	}
	return appendString(b, r.String())
}

// appendStrInner appends the escaped contents of r as a JSON string, without
// quotes, so that several values can be joined into one string literal.
func appendStrInner(b []byte, r gjson.Result) []byte {
	if r.Type == gjson.String && isQuoted(r.Raw) {
		return append(b, r.Raw[1:len(r.Raw)-1]...)
	}
	return appendEscaped(b, r.String())
}

func isQuoted(raw string) bool {
	return len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"'
}

// appendModel appends the model string: upstream when set, else the body's own.
func appendModel(b []byte, upstream string, model gjson.Result) []byte {
	if upstream != "" {
		return appendString(b, upstream)
	}
	return appendStr(b, model)
}

// appendJoinedText appends the text of content without quotes: a string as is,
// or the text of every text block (or text part) in an array joined by sep.
func appendJoinedText(b []byte, content gjson.Result, sep string) []byte {
	if content.Type == gjson.String {
		return appendStrInner(b, content)
	}
	if !content.IsArray() {
		return b
	}
	n := 0
	content.ForEach(func(_, part gjson.Result) bool {
		var text gjson.Result
		switch {
		case part.Type == gjson.String:
			text = part
		case part.Get("type").Str == "text":
			text = part.Get("text")
		case part.Get("type").Str == "refusal":
			text = part.Get("refusal")
		default:
			return true
		}
		if text.Type != gjson.String || text.Str == "" {
			return true
		}
		if n > 0 {
			b = appendEscaped(b, sep)
		}
		b = appendStrInner(b, text)
		n++
		return true
	})
	return b
}

// appendNumber appends ,"key":r when r is a JSON number.
func appendNumber(b []byte, key string, r gjson.Result) []byte {
	if r.Type != gjson.Number {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return append(b, r.Raw...)
}

// appendInt appends ,"key":v.
func appendInt(b []byte, key string, v int64) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

// appendToolInput appends a tool call's arguments string as a JSON object: the
// arguments themselves when they are a JSON object, {} when empty, and
// {"raw": arguments} otherwise (Anthropic tool input must be an object).
// Arguments nested deeper than maxDepth count as not JSON: they were a
// string, so no depth check of the enclosing body has seen their nesting.
func appendToolInput(b []byte, args gjson.Result, maxDepth int) []byte {
	s := args.String()
	if args.IsObject() {
		return append(b, args.Raw...)
	}
	if isBlank(s) {
		return append(b, '{', '}')
	}
	if wire.CheckDepth([]byte(s), maxDepth) == nil && gjson.Valid(s) {
		if p := gjson.Parse(s); p.IsObject() {
			return append(b, p.Raw...)
		}
	}
	b = append(b, `{"raw":`...)
	b = appendString(b, s)
	return append(b, '}')
}

// appendArguments appends a tool input object as an OpenAI arguments string.
func appendArguments(b []byte, input gjson.Result) []byte {
	if !input.Exists() || input.Type == gjson.Null {
		return append(b, `"{}"`...)
	}
	if input.Type == gjson.String {
		return appendStr(b, input)
	}
	return appendString(b, input.Raw)
}

func isBlank(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r':
		default:
			return false
		}
	}
	return true
}

// splitDataURL splits "data:<media>;base64,<data>" and reports whether u had
// that form.
func splitDataURL(u string) (media, data string, ok bool) {
	rest, ok := strings.CutPrefix(u, "data:")
	if !ok {
		return "", "", false
	}
	media, data, ok = strings.Cut(rest, ";base64,")
	if !ok {
		return "", "", false
	}
	return media, data, true
}
