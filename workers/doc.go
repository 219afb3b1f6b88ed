// Package workers calls upstream AI providers on behalf of the gateway.
//
// A Provider is one upstream endpoint with one API key and its own pooled
// HTTP transport. A Router maps the model a client asks for onto weighted
// provider targets (smooth weighted round-robin, as nginx does), tries
// another target or a fallback route when one fails before any byte has
// reached the client, and returns the upstream answer in the client's own
// API format, translating between the Anthropic Messages and OpenAI Chat
// Completions formats when a route crosses them.
//
// workers never sees an echo.Context and never writes to a client: the
// gateway turns a Response into HTTP.
package workers

// Format is an API wire format.
type Format uint8

// The API formats the relay speaks.
const (
	// FormatAnthropic is the Anthropic Messages API.
	FormatAnthropic Format = iota + 1
	// FormatOpenAI is the OpenAI Chat Completions API.
	FormatOpenAI
)

// String returns the format's name as used in configuration.
func (f Format) String() string {
	switch f {
	case FormatAnthropic:
		return "anthropic"
	case FormatOpenAI:
		return "openai"
	}
	return "unknown"
}

// ParseFormat returns the Format named s ("anthropic" or "openai").
func ParseFormat(s string) (Format, bool) {
	switch s {
	case "anthropic":
		return FormatAnthropic, true
	case "openai":
		return FormatOpenAI, true
	}
	return 0, false
}
