package callbacks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every Standard Webhooks signing secret; the rest is
// the standard base64 encoding of the HMAC key.
const SecretPrefix = "whsec_"

// DefaultTolerance is how far a webhook-timestamp may lie from the
// verifier's clock, in either direction, when Verify is given no tolerance.
// It is the Standard Webhooks recommendation.
const DefaultTolerance = 5 * time.Minute

// Errors returned by NewSigner and Verify. They never hold a secret.
var (
	// ErrInvalidSecret reports a secret that is not "whsec_" followed by
	// non-empty standard base64.
	ErrInvalidSecret = errors.New("invalid webhook signing secret")
	// ErrInvalidHeaders reports a missing message id, timestamp or
	// signature, or a timestamp that is not an integer.
	ErrInvalidHeaders = errors.New("invalid webhook headers")
	// ErrUnsigned reports a delivery attempted without a Signer: callbacks
	// are always signed, so nothing is sent.
	ErrUnsigned = errors.New("callbacks: no signing secret: callbacks are always signed")
	// ErrTimestampOutOfRange reports a webhook-timestamp further from now
	// than the tolerance.
	ErrTimestampOutOfRange = errors.New("webhook timestamp outside tolerance")
	// ErrNoMatchingSignature reports that no v1 signature in the header
	// matches the message.
	ErrNoMatchingSignature = errors.New("no matching webhook signature")
)

// Signer computes Standard Webhooks signatures with one or more secrets.
// Every secret signs, so during a rotation the receiver can verify with
// either the old or the new secret. A Signer is immutable and safe for
// concurrent use. Its String, GoString and LogValue never show the keys.
type Signer struct {
	keys [][]byte
}

// NewSigner returns a Signer for the given "whsec_<base64>" secrets, in the
// order their signatures appear in the header. It needs at least one
// secret.
func NewSigner(secrets ...string) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("%w: no secret given", ErrInvalidSecret)
	}
	keys := make([][]byte, 0, len(secrets))
	for i, s := range secrets {
		k, err := decodeSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	return &Signer{keys: keys}, nil
}

// Sign returns the webhook-signature header value for a message: one
// space-separated "v1,<base64 HMAC-SHA256(key, msgID.unixSeconds.body)>"
// per secret. ts is truncated to whole seconds, as webhook-timestamp is.
func (s *Signer) Sign(msgID string, ts time.Time, body []byte) string {
	var b strings.Builder
	for i, k := range s.keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac(k, msgID, ts.Unix(), body)))
	}
	return b.String()
}

// String describes the Signer without its keys.
func (s Signer) String() string {
	return "callbacks.Signer{keys: " + strconv.Itoa(len(s.keys)) + " redacted}"
}

// GoString describes the Signer without its keys, for %#v.
func (s Signer) GoString() string { return s.String() }

// LogValue describes the Signer without its keys, for log/slog.
func (s Signer) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Verify checks a Standard Webhooks message the way a receiver does: the
// timestamp (unix seconds) must lie within tolerance of now (DefaultTolerance
// when tolerance <= 0), and at least one of the space-separated "v1,<sig>"
// entries of signatureHeader must match the HMAC-SHA256 of
// "msgID.timestamp.body" under secret ("whsec_<base64>"). The comparison is
// constant time. Errors wrap ErrInvalidSecret, ErrInvalidHeaders,
// ErrTimestampOutOfRange or ErrNoMatchingSignature.
func Verify(secret, msgID, timestamp, signatureHeader string, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := decodeSecret(secret)
	if err != nil {
		return err
	}
	if msgID == "" || timestamp == "" || signatureHeader == "" {
		return fmt.Errorf("%w: webhook-id, webhook-timestamp and webhook-signature are required", ErrInvalidHeaders)
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: webhook-timestamp is not unix seconds", ErrInvalidHeaders)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts := time.Unix(sec, 0)
	if now.Sub(ts) > tolerance || ts.Sub(now) > tolerance {
		return fmt.Errorf("%w: %s", ErrTimestampOutOfRange, tolerance)
	}
	want := mac(key, msgID, sec, body)
	for entry := range strings.FieldsSeq(signatureHeader) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrNoMatchingSignature
}

// decodeSecret returns the HMAC key of a "whsec_<base64>" secret. Its errors
// never include the secret.
func decodeSecret(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: must start with %s", ErrInvalidSecret, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(key) == 0 {
		return nil, fmt.Errorf("%w: must be %s followed by non-empty standard base64", ErrInvalidSecret, SecretPrefix)
	}
	return key, nil
}

// mac returns HMAC-SHA256(key, msgID + "." + unixSeconds + "." + body).
func mac(key []byte, msgID string, unixSeconds int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msgID))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, unixSeconds, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}
