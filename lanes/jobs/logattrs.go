package jobs

import "github.com/relaygw/relay/workers/logctx"

// Log attributes naming a job: every line about a job or its callback
// carries job_id, and the request_id of its submission and its batch_id
// when it has them, under the names the gateway's and workers' lines use
// (workers/logctx, a leaf package), so that one request or job can be
// followed through the logs. The package's lines add them themselves
// rather than through a context: the callback workers and most of the
// executor log with no request's context.

// jobRef names a job in log lines.
type jobRef struct{ id, requestID, batchID string }

// attrs returns the attributes naming r, followed by more.
func (r jobRef) attrs(more ...any) []any {
	a := make([]any, 0, 6+len(more))
	a = append(a, logctx.JobID, r.id)
	if r.requestID != "" {
		a = append(a, logctx.RequestID, r.requestID)
	}
	if r.batchID != "" {
		a = append(a, logctx.BatchID, r.batchID)
	}
	return append(a, more...)
}

// ref names j in log lines.
func (j *Job) ref() jobRef { return jobRef{id: j.ID, requestID: j.RequestID, batchID: j.BatchID} }

// ref names m's job in log lines.
func (m *message) ref() jobRef { return jobRef{id: m.ID, requestID: m.RequestID, batchID: m.BatchID} }

// ref names cb's job in log lines.
func (cb *callbackMsg) ref() jobRef {
	return jobRef{id: cb.ID, requestID: cb.RequestID, batchID: cb.BatchID}
}
