package simupstream

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// maxEchoWords bounds an echo reply (and a tool result summary) whatever
// the request's max_tokens.
const maxEchoWords = 256

// maxArgText bounds the text put into a tool call's string arguments.
const maxArgText = 1000

// systemReminder starts the context blocks Claude Code adds to a user
// message; echo mode skips them when it reads the user's text.
const systemReminder = "<system-reminder>"

// stopKind is why an answer ends.
type stopKind uint8

const (
	stopEnd       stopKind = iota // end_turn / stop
	stopMaxTokens                 // max_tokens / length
	stopToolUse                   // tool_use / tool_calls
)

// answer is an Echo-mode reply. pieces are the JSON-escaped contents of the
// streamed deltas (without quotes): words with their leading space for a
// text answer, fragments of the arguments JSON for a tool call. Their
// concatenation is the whole escaped text or arguments, and their number
// is the output token count.
type answer struct {
	pieces [][]byte
	stop   stopKind
	tool   string // the called tool's name; "" for a text answer
	args   []byte // the tool call's arguments JSON
}

// toolSpec is a tool offered by a request.
type toolSpec struct {
	name   string
	schema gjson.Result // the JSON schema of its input
}

// buildAnswer reads the conversation in body (already validated as JSON)
// and returns the Echo-mode answer in the endpoint's format.
func buildAnswer(body []byte, format apiFormat, maxTokens int64) *answer {
	root := gjson.ParseBytes(body)
	msgs := root.Get("messages").Array()
	if format == formatAnthropic {
		return anthropicAnswer(root, msgs, maxTokens)
	}
	return openAIAnswer(root, msgs, maxTokens)
}

// anthropicAnswer answers a Messages request: tool results in the last user
// message are reported, else a tool is called when asked for, else the
// user's text is echoed.
func anthropicAnswer(root gjson.Result, msgs []gjson.Result, maxTokens int64) *answer {
	var last gjson.Result
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Get("role").Str == "user" {
			last = msgs[i]
			break
		}
	}
	content := last.Get("content")
	var results []string
	content.ForEach(func(_, b gjson.Result) bool {
		if b.Get("type").Str == "tool_result" {
			id := b.Get("tool_use_id").Str
			results = append(results, toolReport(anthropicToolName(msgs, id), id, b.Get("content")))
		}
		return true
	})
	if len(results) > 0 {
		return textAnswer(strings.Join(results, "\n"), maxTokens)
	}
	text := userText(content)
	var tools []toolSpec
	root.Get("tools").ForEach(func(_, t gjson.Result) bool {
		if typ := t.Get("type").Str; (typ == "" || typ == "custom") && t.Get("name").Str != "" {
			tools = append(tools, toolSpec{name: t.Get("name").Str, schema: t.Get("input_schema")})
		}
		return true
	})
	choice := root.Get("tool_choice")
	if a := toolAnswer(text, tools, anthropicChoice(choice.Get("type").Str, choice.Get("name").Str)); a != nil {
		return a
	}
	return textAnswer("You said: "+text, maxTokens)
}

// anthropicChoice maps an Anthropic tool_choice onto toolAnswer's choice.
func anthropicChoice(typ, name string) string {
	switch typ {
	case "any":
		return choiceAny
	case "none":
		return choiceNone
	case "tool":
		return name
	}
	return choiceAuto
}

// anthropicToolName finds the name of the tool_use block with the given id
// in the assistant messages; "" when there is none.
func anthropicToolName(msgs []gjson.Result, id string) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Get("role").Str != "assistant" {
			continue
		}
		var name string
		msgs[i].Get("content").ForEach(func(_, b gjson.Result) bool {
			if b.Get("type").Str == "tool_use" && b.Get("id").Str == id {
				name = b.Get("name").Str
				return false
			}
			return true
		})
		if name != "" {
			return name
		}
	}
	return ""
}

// openAIAnswer answers a Chat Completions request: trailing role "tool"
// messages are reported, else a tool is called when asked for, else the
// last user message is echoed.
func openAIAnswer(root gjson.Result, msgs []gjson.Result, maxTokens int64) *answer {
	var results []string
	for i := len(msgs) - 1; i >= 0 && msgs[i].Get("role").Str == "tool"; i-- {
		id := msgs[i].Get("tool_call_id").Str
		results = append([]string{toolReport(openAIToolName(msgs[:i], id), id, msgs[i].Get("content"))}, results...)
	}
	if len(results) > 0 {
		return textAnswer(strings.Join(results, "\n"), maxTokens)
	}
	var text string
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Get("role").Str == "user" {
			text = userText(msgs[i].Get("content"))
			break
		}
	}
	var tools []toolSpec
	root.Get("tools").ForEach(func(_, t gjson.Result) bool {
		if f := t.Get("function"); t.Get("type").Str == "function" && f.Get("name").Str != "" {
			tools = append(tools, toolSpec{name: f.Get("name").Str, schema: f.Get("parameters")})
		}
		return true
	})
	if a := toolAnswer(text, tools, openAIChoice(root.Get("tool_choice"))); a != nil {
		return a
	}
	return textAnswer("You said: "+text, maxTokens)
}

// openAIChoice maps an OpenAI tool_choice onto toolAnswer's choice.
func openAIChoice(c gjson.Result) string {
	switch c.Str {
	case "required":
		return choiceAny
	case "none":
		return choiceNone
	}
	if name := c.Get("function.name").Str; name != "" {
		return name
	}
	return choiceAuto
}

// openAIToolName finds the function name of the tool call with the given
// id in the assistant messages; "" when there is none.
func openAIToolName(msgs []gjson.Result, id string) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		for _, c := range msgs[i].Get("tool_calls").Array() {
			if c.Get("id").Str == id {
				return c.Get("function.name").Str
			}
		}
	}
	return ""
}

// toolReport describes one tool result.
func toolReport(name, id string, content gjson.Result) string {
	if name == "" {
		name = id
	}
	return "Tool " + name + " returned: " + userText(content)
}

// userText returns the text of a message content: a string, or the text
// of its text blocks (OpenAI text parts) joined by newlines. Blocks that
// start with <system-reminder> are skipped.
func userText(content gjson.Result) string {
	if content.Type == gjson.String {
		return content.Str
	}
	var parts []string
	content.ForEach(func(_, b gjson.Result) bool {
		t := b.Get("text")
		if b.Type == gjson.String {
			t = b
		}
		if t.Type == gjson.String && !strings.HasPrefix(strings.TrimSpace(t.Str), systemReminder) {
			parts = append(parts, t.Str)
		}
		return true
	})
	return strings.Join(parts, "\n")
}

// textAnswer returns a text answer of the words of s, at most maxEchoWords
// and max_tokens of them.
func textAnswer(s string, maxTokens int64) *answer {
	words := strings.Fields(s)
	a := &answer{}
	if len(words) > maxEchoWords {
		words = words[:maxEchoWords]
	}
	if maxTokens > 0 && int64(len(words)) > maxTokens {
		words = words[:maxTokens]
		a.stop = stopMaxTokens
	}
	a.pieces = make([][]byte, len(words))
	for i, w := range words {
		var p []byte
		if i > 0 {
			p = append(p, ' ')
		}
		a.pieces[i] = appendJSONChars(p, w)
	}
	return a
}

// Tool choices of toolAnswer besides a tool's name. They contain a space, so
// no tool name equals them.
const (
	choiceAuto = "auto choice" // call a tool when the text asks for one
	choiceAny  = "any choice"  // call a tool
	choiceNone = "none choice" // call none
)

// toolAnswer returns a tool call when tools are offered and text asks for
// one (or choice forces one), else nil. Text asks with "use NAME" (a tool's
// name, ASCII letters in any case; that tool is called, and the rest of the text is its
// argument text) or with the word "tool" or "tools" (the first tool is
// called with the whole text). A choice naming an offered tool calls that
// tool; choiceAny calls one (the first unless the text names one).
func toolAnswer(text string, tools []toolSpec, choice string) *answer {
	if len(tools) == 0 || choice == choiceNone {
		return nil
	}
	pick, arg := -1, text
	lower := lowerASCII(text) // same length and offsets as text
	for i, t := range tools {
		if at := indexWord(lower, "use "+lowerASCII(t.name)); at >= 0 {
			pick = i
			if rest := strings.TrimLeft(text[at+len("use ")+len(t.name):], ": \t\n"); rest != "" {
				arg = rest
			}
			break
		}
	}
	if forced := slices.IndexFunc(tools, func(t toolSpec) bool { return t.name == choice }); forced >= 0 && forced != pick {
		pick, arg = forced, text
	}
	if pick < 0 {
		asked := indexWord(lower, "tool") >= 0 || indexWord(lower, "tools") >= 0
		if !asked && choice == choiceAuto {
			return nil
		}
		pick = 0
	}
	args := toolArgs(tools[pick].schema, truncateUTF8(arg, maxArgText))
	return &answer{pieces: splitArgs(args), stop: stopToolUse, tool: tools[pick].name, args: args}
}

// toolArgs builds an arguments object for a JSON schema: each required
// property gets its enum's first value, or by type 0, false, [], {}, and
// for strings (or no type) the text.
func toolArgs(schema gjson.Result, text string) []byte {
	b := []byte{'{'}
	props := schema.Get("properties")
	n := 0
	schema.Get("required").ForEach(func(_, r gjson.Result) bool {
		if r.Type != gjson.String {
			return true
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendJSONString(b, r.Str)
		b = append(b, ':')
		p := props.Get(gjson.Escape(r.Str))
		if e := p.Get("enum.0"); e.Exists() {
			b = append(b, e.Raw...)
			return true
		}
		switch p.Get("type").Str {
		case "integer", "number":
			b = append(b, '0')
		case "boolean":
			b = append(b, "false"...)
		case "array":
			b = append(b, "[]"...)
		case "object":
			b = append(b, "{}"...)
		case "null":
			b = append(b, "null"...)
		default:
			b = appendJSONString(b, text)
		}
		return true
	})
	return append(b, '}')
}

// splitArgs splits an arguments JSON into escaped stream pieces, each
// ending after a space or a comma (ASCII, so UTF-8 sequences stay whole).
func splitArgs(args []byte) [][]byte {
	var pieces [][]byte
	start := 0
	for i, c := range args {
		if c == ' ' || c == ',' || i == len(args)-1 {
			pieces = append(pieces, appendJSONChars(nil, string(args[start:i+1])))
			start = i + 1
		}
	}
	return pieces
}

// indexWord returns the byte offset in s of the first occurrence of word
// that is not inside a longer word, or -1.
func indexWord(s, word string) int {
	for off := 0; off+len(word) <= len(s); {
		i := strings.Index(s[off:], word)
		if i < 0 {
			return -1
		}
		i += off
		before, _ := utf8.DecodeLastRuneInString(s[:i])
		after, _ := utf8.DecodeRuneInString(s[i+len(word):])
		if (i == 0 || !isWordRune(before)) && (i+len(word) == len(s) || !isWordRune(after)) {
			return i
		}
		off = i + 1
	}
	return -1
}

// lowerASCII returns s with its ASCII letters in lower case; the length
// and every other byte are kept.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// isWordRune reports whether r can be part of a word or tool name.
func isWordRune(r rune) bool {
	return r == '_' || r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
