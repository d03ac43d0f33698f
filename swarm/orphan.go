package swarm

import (
	"errors"
	"fmt"
	"time"

	"github.com/dregistry/dregistry/registry/oci"
)

// Orphaned downloads. A download starts because the tracker names a
// complete seeder, but that seeder may go a moment later (its containerd
// dropped the blob, or the node left). When the tracker names no complete
// seeder of the download any more (nor the owner of a followed blob), and
// no byte of it arrives for Config.OrphanTimeout, nothing is coming: the
// partial peers left, if any, lack what it misses too. Then the reads
// that wait fail (oci.ErrStalled) instead of waiting for StallTimeout.
// A response that sent nothing yet goes to the registry's next source (the
// egress; registry/blob.go); one that did is cut, and containerd's Range
// retry finds the next source, since Blob answers "no complete seeder" at
// once. The download itself stays: a
// peer that comes back resumes it, and the abandon timer drops it
// otherwise.

// errNoPeer is the cause a waiting read of an orphaned download fails with.
var errNoPeer = errors.New("no peer holds the blob any more, and nothing arrives")

// orphanClock tells, at each peer refresh of a download, how long it has
// had no complete peer and no progress. Only the download's refreshPeers
// goroutine uses it.
type orphanClock struct {
	since time.Time
	done  int64 // mayProgress's bytes at the last tick
}

// tick records whether the download may still progress and reports
// whether it has not for at least timeout.
func (o *orphanClock) tick(alive bool, now time.Time, timeout time.Duration) bool {
	if alive {
		o.since = time.Time{}
		return false
	}
	if o.since.IsZero() {
		o.since = now
	}
	return now.Sub(o.since) >= timeout
}

// mayProgress reports whether e can still get bytes: a complete seeder,
// or the owner of a followed blob, is named, or bytes of e arrived since
// the last call (partial peers pass pieces on). done carries the bytes e's
// chunks held at the last call; -1 before the first. It takes s.mu, then
// the client lock per chunk, not under s.mu.
func (s *Swarm) mayProgress(e *entry, named []Peer, owner bool, done *int64) bool {
	if owner || anyComplete(named) {
		*done = -1
		return true
	}
	var have int64
	for _, c := range s.chunksOf(e) {
		have += c.info.length() - c.t.BytesMissing()
	}
	moved := *done < 0 || have > *done
	*done = have
	return moved
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
	s.log.Warn("download has no complete peer and gets no byte: its waiting streams fail so containerd retries elsewhere",
		"digest", e.digest, "streams", len(waiting), "for", orphanFor)
	for _, sr := range waiting {
		sr.cancel(fmt.Errorf("swarm: %w: %w for %s on %s", oci.ErrStalled, errNoPeer, orphanFor, e.digest))
	}
}
