package swarm

import (
	"time"

	"github.com/anacrolix/torrent"
)

// corruptDropDelay is how long a corrupt seed's torrent stays in the
// library after the swarm stopped serving it. anacrolix/torrent v1.61.0
// panics (peerconn.go, servePeerRequest) when a piece read it has in flight
// fails after the torrent was dropped: it then neither rejects nor serves
// the request. The read that found the corruption fails by design, and the
// library handles that failure under its client lock a moment later; from
// then on it knows the piece is incomplete (Completion says so) and peers
// stop asking. Dropping the torrent well after that keeps the crash away;
// meanwhile it serves no byte that is not verified.
const corruptDropDelay = 30 * time.Second

// seedCorrupted stops seeding content found not to match its piece hashes
// (changed on disk after it was hashed) and forgets its cached metainfo, so
// seeding it again rehashes it and refuses it. A newer seed of the digest is
// left alone. It runs on its own goroutine: the storage reports from inside
// the library's calls.
func (s *Swarm) seedCorrupted(seed *entry, piece int) {
	dgst := seed.digest
	s.log.Error("seeded content does not match its piece hash: no longer seeded", "digest", dgst, "piece", piece)
	s.meta.remove(dgst)
	s.mu.Lock()
	if s.torrents[dgst] != seed || seed.gone != nil {
		s.mu.Unlock()
		return
	}
	// Gone from the peer endpoints, the stats (so the daemon withdraws
	// it) and the registry at once; the library's torrents go later.
	delete(s.torrents, dgst)
	s.holdingsChanged()
	seed.gone = errSeedCorrupt
	seed.signalLocked()
	close(seed.stop)
	var ts []*torrent.Torrent
	for _, c := range seed.chunks {
		if c != nil {
			ts = append(ts, c.t)
		}
	}
	s.mu.Unlock()
	time.AfterFunc(corruptDropDelay, func() {
		for _, t := range ts {
			t.Drop()
		}
	})
}
