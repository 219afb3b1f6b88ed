package jobs

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
	"time"
)

// Job ids: "job_" and a ULID, so an id tells when its job was created.

// IDPrefix starts every job id.
const IDPrefix = "job_"

// crockford is the Crockford base32 alphabet ULIDs use.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// errBadID means a string is not a job id.
var errBadID = errors.New("not a job id")

// NewID returns a new job id: "job_" and a 26-character ULID (48 bits of
// milliseconds since the Unix epoch, then 80 crypto-random bits, in
// Crockford base32), so ids sort by creation time and TimeOf recovers it.
func NewID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	binary.BigEndian.PutUint64(b[:8], ms<<16)
	_, _ = rand.Read(b[6:])
	// 128 bits → 26 base32 digits, the first holding the top 3 bits.
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return IDPrefix + string(out[:])
}

// TimeOf returns the creation time encoded in a job id, to the millisecond.
func TimeOf(id string) (time.Time, error) {
	if !ValidID(id) {
		return time.Time{}, errBadID
	}
	var ms uint64
	for _, c := range id[len(IDPrefix) : len(IDPrefix)+10] {
		ms = ms<<5 | uint64(strings.IndexByte(crockford, byte(c)))
	}
	return time.UnixMilli(int64(ms)), nil
}

// ValidID reports whether id has the form NewID returns.
func ValidID(id string) bool {
	if len(id) != len(IDPrefix)+26 || !strings.HasPrefix(id, IDPrefix) {
		return false
	}
	if id[len(IDPrefix)] > '7' { // 128 bits leave 3 in the first digit
		return false
	}
	for i := len(IDPrefix); i < len(id); i++ {
		if strings.IndexByte(crockford, id[i]) < 0 {
			return false
		}
	}
	return true
}
