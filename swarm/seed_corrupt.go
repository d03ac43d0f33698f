package swarm

import "github.com/opencontainers/go-digest"

// seedCorrupted stops seeding content found not to match its piece hashes
// (changed on disk after it was hashed) and forgets its cached metainfo, so
// seeding it again rehashes it and refuses it. seed points at the entry the
// report is about (set under s.mu once the torrent was added); a newer seed
// of the digest is left alone. It runs on its own goroutine: the storage
// reports from inside the library's calls.
func (s *Swarm) seedCorrupted(dgst digest.Digest, seed **entry, piece int) {
	s.log.Error("seeded content does not match its piece hash: no longer seeded", "digest", dgst, "piece", piece)
	s.meta.remove(dgst)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.torrents[dgst]; e != nil && e == *seed {
		if err := s.dropLocked(dgst, e); err != nil {
			s.log.Warn("unseed corrupted content", "digest", dgst, "err", err)
		}
	}
}
