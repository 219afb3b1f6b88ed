package main

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// pipeline is one shell command line: commands joined by `|`, each a list
// of words after quote removal.
type pipeline [][]string

// shellLines splits a POSIX-shell snippet, as README code blocks hold,
// into pipelines. It knows what the README uses: words, single quotes
// (which may span lines), double quotes with backslash escapes,
// backslash-newline continuation, `|`, and `#` comments at a word's
// start. Anything fancier (redirections, `$()`, `;`) is an error, so a
// README example the test cannot read fails loudly instead of being
// skipped.
func shellLines(src string) ([]pipeline, error) {
	var (
		out  []pipeline
		cur  pipeline
		cmd  []string
		word strings.Builder
		in   bool // a word has started (possibly empty, as in '')
	)
	endWord := func() {
		if in {
			cmd = append(cmd, word.String())
			word.Reset()
			in = false
		}
	}
	endCmd := func() {
		endWord()
		if len(cmd) > 0 {
			cur = append(cur, cmd)
			cmd = nil
		}
	}
	endLine := func() {
		endCmd()
		if len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\\' && i+1 < len(src) && src[i+1] == '\n':
			i++
		case c == '\\' && i+1 < len(src):
			word.WriteByte(src[i+1])
			in = true
			i++
		case c == '\'':
			j := strings.IndexByte(src[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated single quote at byte %d", i)
			}
			word.WriteString(src[i+1 : i+1+j])
			in = true
			i += j + 1
		case c == '"':
			n, err := doubleQuoted(src[i+1:], &word)
			if err != nil {
				return nil, fmt.Errorf("at byte %d: %w", i, err)
			}
			in = true
			i += n + 1
		case c == '#' && !in:
			for i < len(src) && src[i] != '\n' {
				i++
			}
			endLine()
		case c == '\n':
			endLine()
		case c == ' ' || c == '\t':
			endWord()
		case c == '|':
			endCmd()
		case strings.IndexByte(";&<>$`(){}", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q at byte %d is not supported", c, i)
		default:
			word.WriteByte(c)
			in = true
		}
	}
	endLine()
	return out, nil
}

// doubleQuoted copies the body of a double-quoted string that starts at
// s[0] (just after the opening quote) to w and returns the index of the
// closing quote.
func doubleQuoted(s string, w *strings.Builder) (int, error) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return i, nil
		case c == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`\n", s[i+1]) >= 0:
			if s[i+1] != '\n' {
				w.WriteByte(s[i+1])
			}
			i++
		case c == '$' || c == '`':
			return 0, fmt.Errorf("expansion %q inside double quotes is not supported", c)
		default:
			w.WriteByte(c)
		}
	}
	return 0, fmt.Errorf("unterminated double quote")
}

func TestShellLines(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []pipeline
		err  bool
	}{
		{"words", "curl -s localhost:8080/x\n", []pipeline{{{"curl", "-s", "localhost:8080/x"}}}, false},
		{"comment line and trailing", "# hi\ncurl a # b\n", []pipeline{{{"curl", "a"}}}, false},
		{"continuation", "curl a \\\n  -H 'x: y'\n", []pipeline{{{"curl", "a", "-H", "x: y"}}}, false},
		{"quote over lines", "curl -d '{\"a\":\n 1}'\n", []pipeline{{{"curl", "-d", "{\"a\":\n 1}"}}}, false},
		{"pipe", "curl a | grep ^relay_\n", []pipeline{{{"curl", "a"}, {"grep", "^relay_"}}}, false},
		{"double quotes", `echo "a \"b\" 'c'"`, []pipeline{{{"echo", `a "b" 'c'`}}}, false},
		{"empty word", "echo ''\n", []pipeline{{{"echo", ""}}}, false},
		{"hash inside word", "echo a#b\n", []pipeline{{{"echo", "a#b"}}}, false},
		{"unterminated", "echo 'a\n", nil, true},
		{"redirect", "echo a > b\n", nil, true},
		{"expansion", "echo $HOME\n", nil, true},
		{"expansion in double quotes", `echo "$HOME"`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := shellLines(tt.src)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error: %v", err, tt.err)
			}
			if !tt.err && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
