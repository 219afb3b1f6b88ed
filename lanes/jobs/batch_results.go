package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"iter"
	"strconv"
	"time"
)

// BatchResults: an ended batch's results as JSONL lines, in Anthropic's
// shape.

// BatchResults returns key's ended batch id's results: one JSONL line
// (without the newline) per item, in submission order, in Anthropic's
// shape. The batch must have ended (ErrBatchNotEnded otherwise). Item
// records are read batchResultsWindow at a time, so memory does not grow
// with the batch; a store error ends the sequence with that error.
func (s *Service) BatchResults(ctx context.Context, key, id string) (Batch, iter.Seq2[[]byte, error], error) {
	r, _, err := s.loadBatch(ctx, key, id)
	if err != nil {
		return Batch{}, nil, err
	}
	b, err := s.view(ctx, &r)
	if err != nil {
		return Batch{}, nil, err
	}
	if b.ProcessingStatus != BatchEnded {
		return b, nil, ErrBatchNotEnded
	}
	e, err := s.refs(ctx, &r)
	if err != nil {
		return Batch{}, nil, err
	}
	seq := func(yield func([]byte, error) bool) {
		ids := make([]string, 0, batchResultsWindow)
		for lo := 0; lo < len(e.refs); lo += batchResultsWindow {
			hi := min(len(e.refs), lo+batchResultsWindow)
			ids = ids[:0]
			for _, ref := range e.refs[lo:hi] {
				ids = append(ids, ref.JobID)
			}
			js, err := s.loadJobs(ctx, ids)
			if err != nil {
				yield(nil, err)
				return
			}
			for k, j := range js {
				if !yield(resultLine(e.refs[lo+k], j, r.ExpiresAt), nil) {
					return
				}
			}
		}
	}
	return b, seq, nil
}

// resultLine renders one item's result line.
func resultLine(ref batchRef, j *Job, exp time.Time) []byte {
	b := append(make([]byte, 0, 256), `{"custom_id":`...)
	b = appendJSONString(b, ref.CustomID)
	b = append(b, `,"result":`...)
	if j == nil {
		// The batch ended, but this item's record is gone: deleted, or
		// past result_ttl.
		b = append(b, `{"type":"errored","error":`...)
		b = appendErrorEnvelope(b, "not_found_error", "the result of this request is no longer kept", ref.JobID)
		return append(b, `}}`...)
	}
	o, _ := outcomeOf(j, exp, exp)
	switch o {
	case outcomeSucceeded:
		b = append(b, `{"type":"succeeded","message":`...)
		if j.Result != nil && len(j.Result.Body) > 0 {
			b = append(b, j.Result.Body...)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, '}')
	case outcomeErrored:
		b = append(b, `{"type":"errored","error":`...)
		b = appendItemError(b, j)
		b = append(b, '}')
	case outcomeCanceled:
		b = append(b, `{"type":"canceled"}`...)
	default:
		b = append(b, `{"type":"expired"}`...)
	}
	return append(b, '}')
}

// appendItemError appends the Anthropic error envelope of a failed item:
// the upstream's own envelope when it answered with one, else one built
// from the status or the job's error.
func appendItemError(b []byte, j *Job) []byte {
	if j.Result != nil && len(j.Result.Body) > 0 {
		var env struct {
			Type  string          `json:"type"`
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(j.Result.Body, &env) == nil && env.Type == "error" && firstNonSpace(env.Error) == '{' {
			return append(b, j.Result.Body...)
		}
		msg := "the upstream provider answered " + strconv.Itoa(j.Result.StatusCode)
		if j.Error != nil {
			msg = j.Error.Message
		}
		return appendErrorEnvelope(b, errorTypeOf(j.Result.StatusCode), msg, j.ID)
	}
	typ, msg := "api_error", "the request failed"
	if j.Error != nil {
		msg = j.Error.Message
		if j.Error.Type == ErrorOverloaded {
			typ = "overloaded_error"
		}
	}
	return appendErrorEnvelope(b, typ, msg, j.ID)
}

// errorTypeOf returns Anthropic's error.type for an HTTP status.
func errorTypeOf(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 529:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// appendErrorEnvelope appends {"type":"error","error":{...},"request_id"}
// with the job id as request id.
func appendErrorEnvelope(b []byte, typ, msg, requestID string) []byte {
	b = append(b, `{"type":"error","error":{"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `},"request_id":`...)
	b = appendJSONString(b, requestID)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string (HTML characters are not
// escaped, as nothing here is embedded in HTML).
func appendJSONString(b []byte, s string) []byte {
	buf := bytes.NewBuffer(b)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	out := buf.Bytes()
	return out[:len(out)-1] // Encode ends with a newline
}
