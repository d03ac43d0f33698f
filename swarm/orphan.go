package swarm

import (
	"errors"
	"fmt"
	"time"

	"github.com/anacrolix/torrent"

	"github.com/dregistry/dregistry/registry/oci"
)

// Orphaned downloads. A download starts because the tracker names a
// complete seeder, but that seeder may go a moment later (its containerd
// dropped the blob, or the node left). When the tracker names no peer of
// the download any more and none of its chunk torrents is connected to
// one, nothing can arrive: after Config.OrphanTimeout the reads that wait
// fail (the response is cut, oci.ErrStalled) instead of waiting for
// StallTimeout. containerd's retry then takes the next source, since Blob
// answers "no complete seeder" at once. The download itself stays: a peer
// that comes back resumes it, and the abandon timer drops it otherwise.

// errNoPeer is the cause a waiting read of an orphaned download fails with.
var errNoPeer = errors.New("no peer holds the blob any more")

// orphanClock tells, at each peer refresh of a download, how long it has
// had no peer. Only the download's refreshPeers goroutine uses it.
type orphanClock struct{ since time.Time }

// tick records whether the download has a peer now and reports whether it
// has had none for at least timeout.
func (o *orphanClock) tick(hasPeer bool, now time.Time, timeout time.Duration) bool {
	if hasPeer {
		o.since = time.Time{}
		return false
	}
	if o.since.IsZero() {
		o.since = now
	}
	return now.Sub(o.since) >= timeout
}

// hasPeer reports whether e has a peer: one the tracker (or a followed
// blob's owner) names, or a connection of one of its chunk torrents. It
// takes s.mu, then the client lock (per chunk, not under s.mu).
func (s *Swarm) hasPeer(e *entry, named []torrent.PeerInfo) bool {
	if len(named) > 0 {
		return true
	}
	for _, c := range s.chunksOf(e) {
		if len(c.t.PeerConns()) > 0 {
			return true
		}
	}
	return false
}

// failWaiting fails the reads of e's streams that wait for the swarm now,
// with cause errNoPeer. A stream not waiting (its consumer is slow, or it
// reads pieces already here) goes on; its next wait may fail in turn.
func (s *Swarm) failWaiting(e *entry, orphanFor time.Duration) {
	s.mu.Lock()
	var waiting []*streamReader
	for sr := range e.streams {
		if sr.waiting.Load() {
			waiting = append(waiting, sr)
		}
	}
	s.mu.Unlock()
	if len(waiting) == 0 {
		return
	}
	s.log.Warn("download has no peer: its waiting streams fail so containerd retries elsewhere",
		"digest", e.digest, "streams", len(waiting), "for", orphanFor)
	for _, sr := range waiting {
		sr.cancel(fmt.Errorf("swarm: %w: %w for %s on %s", oci.ErrStalled, errNoPeer, orphanFor, e.digest))
	}
}
