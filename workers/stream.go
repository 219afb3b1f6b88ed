package workers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/relaygw/relay/workers/translate"
	"github.com/relaygw/relay/workers/wire"
)

// Stream yields the events of a streaming upstream answer in the client's
// format, one event per Next call, and tracks the token usage the events
// carry. It is not safe for concurrent use: one goroutine reads it and
// closes it (Close may be called more than once). Cancelling the context
// of the request that produced it also ends the upstream call.
type Stream struct {
	body   io.ReadCloser
	cancel context.CancelFunc
	er     *wire.EventReader
	conv   translate.StreamConverter // nil when the formats match
	upFmt  Format
	usage  wire.Usage
	out    []byte
	tail   [][]byte // translated events waiting to be returned
	ended  bool
	broken bool // the upstream stream failed before its end
	// dropUsage drops the usage-only chunk (choices: []) the relay asked an
	// OpenAI upstream for on the client's behalf.
	dropUsage bool
	onDone    func(u wire.Usage, broken bool)
	once      sync.Once
	maxDepth  int // events nested deeper break the stream
}

func newStream(body io.ReadCloser, cancel context.CancelFunc, client, upstream Format, includeUsage bool, maxDepth int) *Stream {
	s := &Stream{body: body, cancel: cancel, er: wire.NewEventReader(body), upFmt: upstream, maxDepth: maxDepth}
	switch {
	case client == upstream:
	case client == FormatAnthropic:
		s.conv = translate.NewOpenAIToAnthropicStream(maxDepth)
	default:
		s.conv = translate.NewAnthropicToOpenAIStream(includeUsage, maxDepth)
	}
	return s
}

// Next returns the next event's bytes, ready to write to the client. The
// slice is valid until the next call. It returns io.EOF when the upstream
// stream ended cleanly, and another error when it broke, or sent an event
// whose data nests deeper than the limit (garbage, whatever the formats).
func (s *Stream) Next() ([]byte, error) {
	for {
		if len(s.tail) > 0 {
			b := s.tail[0]
			s.tail = s.tail[1:]
			return b, nil
		}
		if s.ended {
			return nil, io.EOF
		}
		ev, err := s.er.Next()
		if errors.Is(err, io.EOF) {
			s.ended = true
			if s.conv != nil {
				s.queue(s.conv.Finish())
			}
			continue
		}
		if err != nil {
			s.broken = true
			return nil, err
		}
		if err := wire.CheckDepth(ev.Data, s.maxDepth); err != nil {
			s.broken = true
			return nil, fmt.Errorf("upstream stream event: %w", err)
		}
		s.observe(ev)
		if s.conv == nil {
			if s.dropUsage && usageOnly(ev.Data) {
				continue
			}
			return ev.Raw, nil
		}
		if ev.Name == "" && len(ev.Data) == 0 {
			continue // a comment; the converter has nothing to say
		}
		out, err := s.conv.Convert(translate.Event{Name: ev.Name, Data: ev.Data})
		if err != nil {
			return nil, err
		}
		s.queue(out)
	}
}

func (s *Stream) queue(evs []translate.Event) {
	s.out = s.out[:0]
	for _, e := range evs {
		start := len(s.out)
		s.out = wire.AppendEvent(s.out, e.Name, e.Data)
		s.tail = append(s.tail, s.out[start:len(s.out):len(s.out)])
	}
}

func (s *Stream) observe(ev wire.Event) {
	if s.upFmt == FormatAnthropic {
		if ev.Name == "message_start" || ev.Name == "message_delta" {
			s.usage.ObserveAnthropic(ev.Name, ev.Data)
		}
		return
	}
	s.usage.ObserveOpenAI(ev.Data)
}

// Buffered reports whether more of the stream has already arrived, so a
// writer may hold its flush until the burst has been written: events are
// still sent as soon as the upstream sent them, with fewer syscalls.
func (s *Stream) Buffered() bool { return len(s.tail) > 0 || s.er.Buffered() > 0 }

// Usage returns the usage seen so far: final once Next has returned io.EOF.
func (s *Stream) Usage() wire.Usage { return s.usage }

// Close ends the upstream call and releases its connection.
func (s *Stream) Close() error {
	var err error
	s.once.Do(func() {
		err = s.body.Close()
		s.cancel()
		s.er.Release()
		if s.onDone != nil {
			s.onDone(s.usage, s.broken || !s.ended)
		}
	})
	return err
}

var emptyChoices = []byte(`"choices":[]`)

// usageOnly reports whether an OpenAI chunk is the include_usage chunk.
func usageOnly(data []byte) bool {
	return bytes.Contains(data, emptyChoices) && bytes.Contains(data, []byte(`"usage"`))
}
