// Package jobs runs asynchronous ("fire-and-forget") jobs durably: a client
// submits a Messages or Chat Completions request, gets an id at once, and
// the result is kept for GET, published on NATS and POSTed, signed, to the
// client's callback_url.
//
// # Storage
//
// Everything lives in JetStream, file storage, declared idempotently by
// Open (CreateOrUpdateStream / CreateOrUpdateKeyValue):
//
//   - stream RELAY_JOBS (WorkQueue, subjects relay.jobs.<lane>): one message
//     per accepted job holding the whole submission, Nats-Msg-Id = job id;
//     durable pull consumer "relay-jobs".
//   - KV bucket RELAY_JOB_STATE: the job records (JSON, the Job type), TTL
//     result_ttl from the last write. Writes use compare-and-set on the
//     revision, so Cancel and the executor never both win. Beside them,
//     "k.<key-token>.<lane-token>.<job-id>": the per-key list index
//     (list.go), and "d.<job-id>": a marker while the job's callback is a
//     dead letter (callback_schedule.go).
//   - KV bucket RELAY_JOB_IDEM: hex sha256(key name + "\x00" +
//     Idempotency-Key) → job id, claimed with Create (the first wins), TTL
//     result_ttl.
//   - stream RELAY_RESULTS (Limits, subjects relay.results.>, MaxAge
//     result_ttl, duplicates window min(result_ttl, 24h)): one message per
//     finished job on relay.results.<key-name>.<job-id> (the key name with
//     characters other than letters, digits, '-' and '_' replaced by '_'),
//     Nats-Msg-Id = job id, headers Content-Type: application/json,
//     Relay-Job-Id, Relay-Status (and Relay-Provider), payload the job's
//     final JSON, as GET /v1/jobs/{id} shows it without the "callback"
//     field (which is only known later).
//   - stream RELAY_CALLBACKS (WorkQueue): one message per pending callback
//     delivery, Nats-Msg-Id = job id (a re-send: "<job-id>.resend.<n>");
//     durable pull consumer "relay-callbacks". The message stays
//     unacknowledged until the delivery ends.
//
// Job ids are "job_" and a ULID (millisecond time + 80 random bits), so a
// GET after the record expired can still say "expired" (TimeOf).
//
// # Lifecycle
//
// Submit claims the idempotency key, publishes the job message and awaits
// its PubAck, then creates the queued record; it returns only then
// (see Submit for why each crash point is safe, and how a publish whose
// outcome is unknown is settled by a "not accepted" record). Run pulls messages with a
// bounded pool of workers (Options.Workers, each pulling one message at a
// time, so nothing waits unacknowledged in a client buffer). For each
// delivery a worker creates the record if missing, acknowledges at once if
// the job is already terminal (after re-publishing its result and callback,
// which are de-duplicated), and otherwise calls the Runner, sending
// InProgress every AckWait/3 so a long wait or generation is never
// redelivered. The job stays queued (and cancelable) while the Runner
// waits on its lane for capacity; the runner's start call moves it to running
// (attempts+1) only when capacity is granted, just before the upstream
// call. Then:
//
//   - 2xx → succeeded, with the upstream body;
//   - a 4xx or other non-2xx answer → failed, with the upstream body;
//   - a retryable error (no capacity, every target failed) → back to
//     queued and NakWithDelay with full-jitter backoff (RetryBase doubling
//     to RetryMax, at least the Outcome's RetryAfter), until the lane's
//     max_wait since creation has passed; then failed (overloaded_error).
//     The max_wait is read at each decision, so one changed by
//     SetLaneWaits (a reload) applies to queued jobs; a job on a lane no
//     longer configured is not retried;
//   - shutdown while running → back to queued, Nak, run again on the next
//     start.
//
// A terminal job is written once (compare-and-set; relay_jobs_total counts
// that write), published to RELAY_RESULTS, its callback enqueued, and only
// then its job message acknowledged. A crash between any two steps makes
// JetStream redeliver the message; the worker finds the record terminal
// and repeats the publications, which JetStream drops as duplicates.
//
// Redelivery is unbounded at the JetStream level (MaxDeliver -1) because
// waiting for capacity is itself a redelivery. Poison jobs are bounded
// here instead: a delivery that finds its job already "running" means the
// previous run was lost (a crash, or a hang past the ack wait; a job that
// was only waiting for capacity is still queued and does not count); after
// Options.MaxInterrupted such losses the job ends failed with error type
// "dead_letter" (the job record is the dead-letter record; also logged
// and counted in relay_jobs_dead_letters_total).
//
// Cancel moves a queued job (also one waiting between retries) to
// canceled, which is terminal like the others: the result is published on
// NATS and the callback sent, as Anthropic's batches report canceled
// requests as results. Running and finished jobs cannot be canceled.
//
// Callback workers deliver with Options.Callbacks (cmd/relay plugs in
// workers/callbacks' Deliverer, which signs; this package knows neither
// HTTP nor providers): webhook-id is the job id, the body is identical on
// every attempt. The retry schedule (Options.CallbackSchedule,
// callbacks.retry_schedule, each delay ±CallbackJitter, never before the
// receiver's Retry-After) is kept in the job record, not in JetStream:
// each attempt records its number, time and outcome and the next
// attempt's due time in the job's "callback" field, and every delivery of
// the message first reads the record and, when the attempt is not due,
// goes back with NakWithDelay until it is. Why not JetStream's own
// redelivery (NumDelivered as the attempt, NakWithDelay or a consumer
// BackOff as the schedule)? The delivery count and a nak's delay are the
// server's, not ours: a consumer recreated by RepairStore, or a message
// re-enqueued after the duplicates window, restarts the count, and a
// restart that loses a pending nak delay would redeliver every waiting
// callback at once after the ack wait. Reading the record costs one KV
// get per delivery and makes the count, the due times and the injected
// clock of tests authoritative. A callback undelivered after the last
// attempt, or failed for good, is a dead letter (outcome "dead_letter",
// a "d.<id>" marker for the gauge); ResendCallback enqueues a new round
// (CallbackState.Resends) with a fresh schedule. Attempts are counted in
// relay_callbacks_total{outcome}.
//
// # Guarantee
//
// A job is accepted (Submit returns, the client gets 202) only once
// JetStream has stored its message in file storage. After a process crash
// (kill -9) at any moment, no accepted job is lost and each job ends with
// exactly one terminal record, one NATS result message id and one
// webhook-id (the job id): an upstream call in flight at the crash may be
// repeated, and a callback or result publication may be repeated with the
// same id (receivers deduplicate on webhook-id / Nats-Msg-Id; JetStream
// itself drops republished results within its duplicates window). A job
// already claimed as running when the crash hit is run again on restart.
//
// Power loss is different: JetStream acknowledges a write once it is in
// the operating system, and fsyncs every nats.sync interval (the server
// default is 2 minutes). With nats.sync: always every write is fsynced
// before the PubAck and the guarantee above holds for power loss too; with
// an interval, jobs accepted within the last interval before a power loss
// may be lost.
//
// Without an Idempotency-Key, a client that retries a submission whose
// 202 it never received creates a second job; with one, it gets the same
// job (even when the first attempt crashed midway).
//
// # When the store fails
//
// A Health loop (health.go; its owner runs it with Run and stops it with
// its ctx) checks, every 2 s and at once after a store error in Submit
// or in the executor, what storing jobs needs, in order: the NATS
// connection, JetStream taking writes (on the embedded server: not
// disabled, and no store write error logged since it started), then
// CheckStore (the streams, buckets and consumers) and the lanes' mirror.
// It repairs what it can: RepairStore declares everything again with
// Open's configuration (a deleted stream, bucket or consumer comes back;
// the executor's pulls pick a recreated consumer up by themselves); the
// embedded server's JetStream is restarted once its store directory
// takes writes again (a nats-server stream refuses every write after one
// failed, e.g. on a full disk, until JetStream restarts; stored messages
// and consumer state are kept). Until the store is back, Health.Err
// says why, for /readyz, and relay_job_store_up is 0.
//
// A job whose run ended while the store was failing keeps its outcome in
// memory and retries writing it (with the message kept in progress)
// until the store is back, so it is not run again; only a shutdown
// meanwhile leaves it to run again at the next start. Jobs in a deleted
// RELAY_JOBS are lost with it.
//
// # Heartbeats and ack wait (several relays)
//
// Two heartbeats, for two questions. The job message's ack wait answers
// "is anyone still working on this job?": a running job's message is
// kept in progress (InProgress every AckWait/3, AckWait 3 s by default),
// so JetStream redelivers it only when no InProgress came for AckWait.
// The executor's liveness key answers "is the process that claimed it
// still alive?": its record names the executor instance running it
// (Owner, a random id per process), and every running Service puts its
// instance id in the KV bucket RELAY_EXECUTORS every 500 ms; the bucket's
// TTL (3 s) removes the key of a process that stopped putting it. When a
// message is redelivered and its record is "running":
//
//   - under an owner whose key exists, the job is still running there
//     (its InProgress were late or lost: a slow process, a partition, a
//     consumer leader election): the delivery is Nak'ed until the
//     owner's key would expire (the key's time plus the TTL, between
//     100 ms and 1 s) and nothing changes, so a live run is never doubled;
//   - under an owner whose key is gone (or none), the owner died: the job
//     goes back to queued and runs here (relay_jobs_repeated_runs_total:
//     its upstream call may have been made twice).
//
// A store error while checking liveness counts as alive (wait rather than
// run twice).
//
// Timings. A relay killed at T sent its last InProgress in (T-1 s, T]
// and its last beat in (T-0.5 s, T]: its jobs are redelivered in
// (T+2 s, T+3 s] and its key is gone in (T+2.5 s, T+3 s] (the server
// expires keys within 250 ms), so its running jobs restart elsewhere
// about 3 s after the kill, plus a few store round trips each. A job it
// had pulled but not started is still queued: redelivered after the ack
// wait, it runs at once. The two timeouts are aligned on purpose: a
// longer TTL than the ack wait would only delay recovery, a shorter one
// would not speed it up (the redelivery waits for the ack wait anyway).
// What makes a double run possible is a live process that neither sent
// InProgress for 3 s nor landed a beat for 2.5 s (five in a row; each
// put may take up to 1.5 s): a stall of the whole process or of its NATS
// connection. Then its job runs twice, both runs write the same terminal
// record by compare-and-set (the first wins) and the result and callback
// carry the job id, so the caller still sees one result; only the
// upstream call is repeated.
//
// On an embedded cluster a relay's death also stops its NATS node: a
// stream or consumer whose raft leader it was answers nothing until the
// other nodes elect a new one, after nats-server's election timeout (4 to
// 9 s, not configurable). When that is the job consumer, no redelivery
// happens before the election, and a dead relay's jobs restart 4-9 s
// plus the above after the kill; when it is RELAY_JOB_STATE, the
// takeover's record writes wait for the election.
//
// With Options.MaxWaiting, the executor pulls no new job while that many
// pulled jobs wait for capacity; with Options.HandBack, a job not started
// within it is given back (Nak, still queued, no attempt counted), so a
// saturated relay does not hold queued jobs that others could run, and
// its heartbeats never pin a job to it.
//
// # Message batches
//
// Anthropic's Message Batches API (batch.go) is built on jobs: each
// request of a batch is one /v1/messages job with BatchID and CustomID
// set, on the batch's lane, so it runs on any route (the router
// translates for OpenAI-compatible providers) under the same priorities
// and limits as everything else. Each finished item is published on
// RELAY_RESULTS like any job (relay.results.<key>.<job-id>, payload with
// batch_id and custom_id); nothing is published per batch. A batch's
// callback_url is given to every item: one signed callback per request
// as it finishes, none for the batch as a whole.
//
// Storage: KV bucket RELAY_BATCHES (file storage, TTL batch window +
// result_ttl): "b.<key-token>.<batch-id>" holds the small mutable record
// (key, lane, created_at, expires_at = created_at + Options.BatchWindow,
// default 24h, cancel_initiated_at, and once ended ended_at and the final
// request_counts); "i.<batch-id>.<n>" hold the items in order (custom_id,
// job id), 500 per value, written once. SubmitBatch writes the items, then
// the record, then the jobs (32 at a time, each stored as Submit stores
// one), and returns only when all are stored.
//
// Counts: an item's outcome is its job's status at expires_at: succeeded,
// errored (failed), canceled, or expired when it had not finished by then
// (a run still in flight at expiry that finishes later stays expired).
// processing counts the rest (queued and running). The batch is
// canceling after CancelBatch until no item is processing, then ended;
// it is ended at expires_at at the latest. Until it ends, GetBatch reads
// the job record of every item whose outcome is not yet final (final
// outcomes are cached in memory, up to 400,000 items across batches), so
// a GET costs O(unfinished items) KV reads; the first GET that finds
// every item final records ended_at and the counts, and later GETs read
// the record alone. ListBatches lists the key's record keys (O(batches of
// the key)) and computes each listed batch as GetBatch does.
//
// The executor checks a batch item's record before running it: an item
// whose batch expired ends canceled with Error.Type "expired", one whose
// batch was canceled (or no longer exists) ends canceled; neither runs.
// CancelBatch also cancels every still-queued item at once (O(items)).
// DeleteBatch (only once ended) removes the record, the items and the
// items' job records. BatchResults streams one JSONL line per item, in
// order, reading 256 job records at a time.
//
// Limits, as Anthropic's: 1 to Options.MaxBatchRequests (default 100,000)
// requests, custom_id matching ^[a-zA-Z0-9_-]{1,64}$ and unique in the
// batch, params a JSON object with a model and without "stream": true
// (the HTTP layer parses each params' model and stream, bounding its
// nesting, and passes them in BatchItem; it also bounds the body at
// 256 MB and checks the models' routes).
//
// # Files
//
// Each part has one job: service.go (Options, Open, Run, SetLaneWaits),
// streams.go (declaring and naming streams, buckets, consumers), store.go
// (reading and writing records: the one compare-and-set loop, casUpdate,
// used by jobs and batches), submit.go and idempotency.go (Submit and its
// idempotency claim), lookup.go (Get, Cancel), executor.go (running a
// delivered job to its end), results.go (publishing finished jobs),
// callbacks.go (the callback queue; the CallbackSender and URLChecker
// seams), callback_schedule.go (the delivery workers, the retry schedule,
// dead letters and re-sends), list.go (the per-key index and ListJobs),
// health.go (the store's health
// loop), and for batches batch.go (types, submission), batch_view.go
// (counts, GetBatch, ListBatches), batch_cancel.go (CancelBatch, the
// executor's gate, DeleteBatch), batch_results.go and batch_cache.go.
// job.go holds the Job record and the Runner seam.
//
// Options take no defaults for what the relay's configuration sets
// (ResultTTL, Workers, the lanes' max_wait): configs owns those and
// cmd/relay passes them; Open refuses zero.
//
// # Concurrency
//
// A Service is safe for concurrent use. Run starts Workers +
// CallbackWorkers goroutines (plus one heartbeat goroutine per running
// job) and returns only after all have exited.
package jobs
