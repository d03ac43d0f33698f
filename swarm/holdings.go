package swarm

import "github.com/opencontainers/go-digest"

// Holdings returns every blob of this node: true for what the peer
// endpoints serve (TorrentStats.Seeding), false for the rest (downloads,
// growths), which trade pieces but are not served whole. It takes only
// Swarm.mu, never the library's client lock, so the daemon can read it on
// every change (Changes) where Stats would walk every torrent.
func (s *Swarm) Holdings() map[digest.Digest]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[digest.Digest]bool, len(s.torrents))
	for d, e := range s.torrents {
		out[d] = e.servesPeers()
	}
	return out
}

// Changes receives after Holdings may have changed: a blob joined or left
// the table, or a growth became a seed. Sends never block and coalesce,
// so the one reader (the daemon's announcer) reads Holdings afterwards
// rather than counting signals.
func (s *Swarm) Changes() <-chan struct{} { return s.changes }

// holdingsChanged signals Changes. It never blocks: callers hold Swarm.mu.
func (s *Swarm) holdingsChanged() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}
