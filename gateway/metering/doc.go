// Package metering records what every finished upstream call used:
// synchronous requests, jobs and message batch items alike, by key name,
// route, provider and upstream model. One call to Meter.Record per
// finished call does everything:
//
//   - Prometheus: relay_tokens_total{key,route,provider,direction} and
//     relay_cost_usd_total{key,route} (cost from the prices table; an
//     unpriced model costs 0 and counts in relay_usage_unpriced_total);
//   - a usage event on NATS, subject relay.usage.<key> on stream
//     RELAY_USAGE, published with Nats-Msg-Id set to the event's unique
//     id, so a publish retried after a lost acknowledgement is stored
//     once, and a durable consumer sees each event exactly once
//     (publish.go). Publishing never blocks nor fails a request: events
//     wait in a bounded queue, and are retried; what cannot be queued or
//     published is counted in relay_usage_events_dropped_total;
//   - counters per key, UTC day and upstream model, aggregated in memory
//     and added to a replicated KV bucket every second with
//     compare-and-set, so several relays add up (counters.go). GET
//     /v1/usage and /admin/usage answer from them (report.go).
//
// Token kinds are disjoint everywhere the package shows them: input is
// the input that neither read nor wrote the prompt cache, cache_read and
// cache_write the input that did, output the output. Their sum is every
// token the call used. (wire.Usage.Input, by contrast, counts all input.)
//
// Key names only ever appear: never a secret.
package metering
