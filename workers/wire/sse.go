package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
)

// MaxEventBytes bounds one server-sent event, as the official SDKs bound a line.
const MaxEventBytes = 32 << 20

// ErrEventTooLarge is returned by EventReader.Next for an event over MaxEventBytes.
var ErrEventTooLarge = errors.New("server-sent event too large")

// Event is one server-sent event.
type Event struct {
	// Raw is the event exactly as received, including its terminating blank
	// line. It is only valid until the next call to Next.
	Raw []byte
	// Name is the "event:" field, or "" when there is none.
	Name string
	// Data is the "data:" payload, several data lines joined by "\n". It is
	// only valid until the next call to Next.
	Data []byte
}

// EventReader splits a text/event-stream body into events. It is not safe
// for concurrent use.
type EventReader struct {
	r    *bufio.Reader
	raw  []byte
	data []byte
}

// readerPool recycles the buffered readers of finished streams.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

// NewEventReader returns an EventReader reading from r. Call Release when
// done with it to recycle its buffer.
func NewEventReader(r io.Reader) *EventReader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &EventReader{r: br}
}

// Release returns the reader's buffer for reuse. The EventReader, and any
// Event it returned, must not be used afterwards.
func (er *EventReader) Release() {
	if er.r == nil {
		return
	}
	er.r.Reset(nil)
	readerPool.Put(er.r)
	er.r = nil
}

// Next returns the next event. It returns io.EOF after the last complete
// event, and io.ErrUnexpectedEOF when the stream ends inside an event.
// Comment-only blocks (": keepalive") are returned as events with no name
// and no data, so a relay can forward them.
func (er *EventReader) Next() (Event, error) {
	er.raw = er.raw[:0]
	er.data = er.data[:0]
	var ev Event
	hasData := false
	for {
		line, err := er.readLine()
		if err != nil {
			if err == io.EOF && len(er.raw) > 0 {
				if len(bytes.TrimSpace(er.raw)) == 0 {
					return Event{}, io.EOF
				}
				return Event{}, io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		er.raw = append(er.raw, line...)
		if len(er.raw) > MaxEventBytes {
			return Event{}, ErrEventTooLarge
		}
		content := trimEOL(line)
		if len(content) == 0 {
			if len(er.raw) == len(line) {
				// A blank line with no event before it: skip it.
				er.raw = er.raw[:0]
				continue
			}
			ev.Raw = er.raw
			ev.Data = er.data
			return ev, nil
		}
		field, value := splitField(content)
		switch string(field) {
		case "event":
			ev.Name = string(value)
		case "data":
			if hasData {
				er.data = append(er.data, '\n')
			}
			hasData = true
			er.data = append(er.data, value...)
		}
	}
}

// Buffered returns the number of bytes read from the stream but not yet
// returned as events.
func (er *EventReader) Buffered() int { return er.r.Buffered() }

// readLine reads one line including its terminator. The returned slice is
// only valid until the next read.
func (er *EventReader) readLine() ([]byte, error) {
	line, err := er.r.ReadSlice('\n')
	if err == nil {
		return line, nil
	}
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(long) > MaxEventBytes {
				return nil, ErrEventTooLarge
			}
			line, err = er.r.ReadSlice('\n')
			long = append(long, line...)
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read event stream: %w", err)
		}
		if err == io.EOF && len(long) > 0 {
			return long, nil
		}
		return long, err
	}
	if err == io.EOF && len(line) > 0 {
		// The last line has no terminator; treat it as complete.
		return line, nil
	}
	return nil, err
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// splitField splits "name: value" per the event-stream spec: one optional
// space after the colon is dropped; a line starting with ':' is a comment.
func splitField(line []byte) (field, value []byte) {
	i := bytes.IndexByte(line, ':')
	switch {
	case i == 0:
		return nil, nil
	case i < 0:
		return line, nil
	}
	field, value = line[:i], line[i+1:]
	if len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	return field, value
}

// AppendEvent appends ev in event-stream form: an "event:" line when Name is
// set, one "data:" line per line of Data, and a blank line.
func AppendEvent(dst []byte, name string, data []byte) []byte {
	if name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, '\n')
	}
	for {
		i := bytes.IndexByte(data, '\n')
		dst = append(dst, "data: "...)
		if i < 0 {
			dst = append(dst, data...)
			break
		}
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		data = data[i+1:]
	}
	return append(dst, '\n', '\n')
}
