package tracker

import (
	"hash/maphash"
	"sync"
	"time"
)

// Bounds of the seen-set: 64Ki hashes are ~2 MB, and a message's gossip
// ends within seconds, well inside the two minutes it is remembered.
const (
	seenLimit = 1 << 16
	seenTTL   = 2 * time.Minute
)

// seenSet remembers the hashes of the announcements this member passed on,
// so each is gossiped once per member, as serf does. It keeps two
// generations: when the current one is older than ttl or holds limit/2
// hashes it becomes the previous one and the older previous is dropped.
// So memory stays under limit hashes, and a hash is remembered for at
// least ttl unless limit/2 newer ones came in meanwhile. A message that comes back after it was forgotten is passed on once more,
// which only costs bytes: every copy is still sent a bounded number of times.
type seenSet struct {
	mu        sync.Mutex
	seed      maphash.Seed
	cur, prev map[uint64]struct{}
	since     time.Time // when cur started
	ttl       time.Duration
	half      int
}

func newSeenSet(limit int, ttl time.Duration) *seenSet {
	return &seenSet{
		seed: maphash.MakeSeed(),
		cur:  make(map[uint64]struct{}),
		prev: make(map[uint64]struct{}),
		ttl:  ttl,
		half: max(1, limit/2),
	}
}

// add reports whether msg is new, and remembers it.
func (s *seenSet) add(msg []byte, now time.Time) bool {
	h := maphash.Bytes(s.seed, msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.since.IsZero() {
		s.since = now
	}
	if len(s.cur) >= s.half || now.Sub(s.since) >= s.ttl {
		s.prev, s.cur = s.cur, make(map[uint64]struct{}, len(s.cur))
		s.since = now
	}
	if _, ok := s.cur[h]; ok {
		return false
	}
	if _, ok := s.prev[h]; ok {
		return false
	}
	s.cur[h] = struct{}{}
	return true
}

// len is the number of hashes held.
func (s *seenSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.cur) + len(s.prev)
}
