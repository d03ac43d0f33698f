package tracker

import (
	"hash/maphash"
	"sync"
)

// seenSet remembers the hashes of the last announcements passed on, so each
// is gossiped once per member. It forgets the oldest first; a message that
// comes back after that is passed on again, which only costs bytes.
type seenSet struct {
	mu   sync.Mutex
	seed maphash.Seed
	set  map[uint64]struct{}
	ring []uint64
	next int
}

func newSeenSet(size int) seenSet {
	return seenSet{seed: maphash.MakeSeed(), set: make(map[uint64]struct{}, size), ring: make([]uint64, 0, size)}
}

// add reports whether msg is new, and remembers it.
func (s *seenSet) add(msg []byte) bool {
	h := maphash.Bytes(s.seed, msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.set[h]; ok {
		return false
	}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, h)
	} else {
		delete(s.set, s.ring[s.next])
		s.ring[s.next] = h
		s.next = (s.next + 1) % len(s.ring)
	}
	s.set[h] = struct{}{}
	return true
}
