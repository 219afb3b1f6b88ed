package translate

import (
	"bytes"
	"fmt"

	"github.com/tidwall/gjson"

	"github.com/relaygw/relay/workers/wire"
)

// Event is one server-sent event: Name is the "event:" field ("" if none);
// Data is the "data:" payload (several data lines joined by "\n").
type Event struct {
	Name string
	Data []byte
}

// StreamConverter converts one upstream event stream into the client's
// format. Feed it the upstream events in order, then call Finish when the
// upstream ended cleanly. A StreamConverter is not safe for concurrent use.
// The Data of returned events is never reused by the converter.
type StreamConverter interface {
	// Convert returns the client-format events for one upstream event (zero
	// or more). It returns an error wrapping ErrInvalidBody when the event's
	// data is not JSON, or nests deeper than the converter's limit; the
	// stream may continue afterwards.
	Convert(ev Event) ([]Event, error)
	// Finish returns the events still owed once the upstream has ended
	// cleanly, such as the closing events the upstream omitted; it returns
	// nothing when the stream was already complete or ended in an error.
	Finish() []Event
}

// doneData is the payload of the last OpenAI stream event.
const doneData = "[DONE]"

// parseEvent trims an event's data and parses it. skip reports an empty or
// keep-alive payload; done reports OpenAI's [DONE]. Data nested deeper than
// maxDepth is refused (wrapping ErrInvalidBody and a *wire.DepthError)
// before the validator, which recurses once per level, sees it.
func parseEvent(ev Event, maxDepth int) (root gjson.Result, skip, done bool, err error) {
	data := bytes.TrimSpace(ev.Data)
	if len(data) == 0 {
		return gjson.Result{}, true, false, nil
	}
	if string(data) == doneData {
		return gjson.Result{}, false, true, nil
	}
	if err := wire.CheckDepth(data, maxDepth); err != nil {
		return gjson.Result{}, false, false, fmt.Errorf("%w: %w", ErrInvalidBody, err)
	}
	s := string(data)
	if !gjson.Valid(s) {
		return gjson.Result{}, false, false, ErrInvalidBody
	}
	root = gjson.Parse(s)
	if !root.IsObject() {
		return gjson.Result{}, false, false, ErrInvalidBody
	}
	return root, false, false, nil
}
