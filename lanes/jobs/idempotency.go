package jobs

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// Idempotency keys: claiming a key for a job id in RELAY_JOB_IDEM, and the
// fingerprint that refuses a reused key with another request.

// fingerprint is the hex SHA-256 of what a submission asks for: its
// endpoint, lane, callback URL, metadata and body, byte for byte. It is
// stored with the idempotency claim (as "<job id> <fingerprint>"), so that
// a reused Idempotency-Key with another request is refused rather than
// silently answered with the first job, as Stripe does. Claims written
// before fingerprints existed hold only the id and are not checked.
func fingerprint(sub *Submission) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(sub.Endpoint), []byte(sub.Lane), []byte(sub.CallbackURL), sub.Metadata, sub.Body} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// idemKey is the RELAY_JOB_IDEM key of an Idempotency-Key.
func idemKey(key, idem string) string {
	sum := sha256.Sum256([]byte(key + "\x00" + idem))
	return hex.EncodeToString(sum[:])
}
