package jobs

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"sync"
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
// milliseconds since the Unix epoch, then 80 random bits, in Crockford
// base32), so ids sort by creation time and TimeOf recovers it. Ids made in
// the same millisecond by this process also sort in the order they were
// made: the second and later take the previous id's random part plus one,
// as the ULID spec's monotonic generator does, so a key's jobs listed
// newest first keep their order even when submitted together.
func NewID(now time.Time) string {
	ms := uint64(now.UnixMilli()) & (1<<48 - 1)
	hi, lo := idClock.next(ms)
	// 128 bits → 26 base32 digits, the first holding the top 3 bits.
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return IDPrefix + string(out[:])
}

// idClock is the process's monotonic ULID state.
var idClock monotonic

// monotonic remembers the last id's millisecond and random part.
type monotonic struct {
	mu     sync.Mutex
	ms     uint64
	hi, lo uint64 // hi: 16 random bits, lo: 64
}

// next returns the 128 bits of an id for ms: ms in the top 48, then fresh
// random bits, or the last random part plus one when ms is the last id's
// millisecond (fresh bits again in the unlikely case that overflows).
func (m *monotonic) next(ms uint64) (hi, lo uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ms == m.ms && (m.lo != math.MaxUint64 || m.hi != 1<<16-1) {
		m.lo++
		if m.lo == 0 {
			m.hi++
		}
	} else {
		var b [10]byte
		_, _ = rand.Read(b[:])
		m.ms = ms
		m.hi = uint64(binary.BigEndian.Uint16(b[:2]))
		m.lo = binary.BigEndian.Uint64(b[2:])
	}
	return ms<<16 | m.hi, m.lo
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
