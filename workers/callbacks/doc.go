// Package callbacks delivers the final state of asynchronous jobs to the
// callback_url a client gave, as a signed Standard Webhooks POST
// (https://www.standardwebhooks.com), without letting that URL reach the
// relay's own network.
//
// The package has three parts:
//
//   - Signer and Verify implement Standard Webhooks signing: the
//     webhook-signature header holds "v1,<base64 HMAC-SHA256>" of
//     "<webhook-id>.<webhook-timestamp>.<body>" for every configured secret,
//     so secrets can be rotated without failed verifications.
//   - Checker and CheckURL refuse callback URLs whose scheme is not http or
//     https, that carry credentials, or whose host is, spells or resolves to
//     a loopback, private, link-local, shared, multicast, reserved,
//     documentation or cloud metadata address. NewClient returns an
//     http.Client that checks the address again at dial time (defeating DNS
//     rebinding), never follows redirects and never uses a proxy.
//   - Deliverer makes one delivery attempt at a time and classifies it as
//     delivered, retry, gone or failed, computing when the next attempt is
//     due with full-jitter exponential backoff, and reporting the
//     receiver's Retry-After. The durable retry schedule belongs to the
//     caller (the jobs store, which follows callbacks.retry_schedule and
//     uses only the outcome and Retry-After): this package keeps no state
//     between attempts and starts no goroutines.
//
// Errors that callers branch on are the sentinels ErrBadURL and
// ErrForbiddenAddress (URL policy; their messages are safe to show a
// client), ErrInvalidSecret, ErrInvalidHeaders, ErrTimestampOutOfRange and
// ErrNoMatchingSignature (signing). No error, String or log value of this
// package holds a signing secret.
package callbacks
