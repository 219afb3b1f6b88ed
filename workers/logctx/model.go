package logctx

import "unicode/utf8"

// MaxModel bounds a model id in a log line: pattern routes pass ids of
// any length through from clients.
const MaxModel = 200

// Model returns a model id fit for a log line: cut to at most MaxModel
// bytes, on a UTF-8 boundary.
func Model(s string) string {
	n := MaxModel
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
