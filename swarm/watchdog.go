package swarm

import (
	"fmt"
	"time"

	"github.com/anacrolix/torrent"

	"github.com/dregistry/dregistry/registry/oci"
)

// The stall watchdog. A stream's Read that waits for the swarm fails once
// nothing of what it waits for has arrived for StallTimeout, so containerd
// retries rather than hang. A stream gets a piece only once all of it is
// here and verified, so delivered bytes alone are not the measure: a 2 MiB
// piece coming from a saturated seeder at 50 KiB/s delivers nothing for
// 40 s and yet moves. So a Read that has waited sampleDelay notes how much
// of the chunk torrent it waits on is missing, and when the bound runs out
// the bound starts again if more of the chunk arrived since. The library
// counts arrivals in requests of Config.ChunkSize, and the awaited piece's
// requests may sit behind others in the seeder's queue, so the whole chunk
// counts. A chunk holds finitely many bytes, and a peer whose pieces fail
// their hash is banned (bans.go), so a read still ends; one whose chunk
// gets no byte for StallTimeout fails as before. A Read whose chunk is not
// published yet (a followed blob) waits on the owner's upstream fetch: the
// bound starts again when the chunk got published since, or the owner's
// fetch grew while this node held what it had published (ownerWaited).

// awaitedChunk is the chunk torrent a Read waits on (nil while its
// metainfo is not known), and how many of its bytes were missing when the
// watchdog's bound started, and the entry's ownerWaited then.
type awaitedChunk struct {
	t       *torrent.Torrent
	missing int64
	owner   int64
}

// sampleDelay is how long a Read waits before the watchdog notes how much
// of its chunk is missing: most Reads return sooner and cost nothing.
func sampleDelay(stall time.Duration) time.Duration { return min(time.Second, stall/4) }

// beginWait arms the watchdog for a Read of chunk k and marks the stream
// as reading from the swarm.
func (sr *streamReader) beginWait(k int) {
	sr.waitingAt.Store(sr.pos)
	sr.waiting.Store(true)
	sr.rmu.Lock()
	defer sr.rmu.Unlock()
	sr.inRead = true
	sr.waitK = k
	sr.armedAt = time.Now()
	sr.awaited = nil
	sr.armLocked(sr.armedAt.Add(sampleDelay(sr.s.cfg.StallTimeout)))
}

// armLocked sets the watchdog to fire at due. Caller holds rmu.
func (sr *streamReader) armLocked(due time.Time) {
	sr.due = due
	sr.watchdog.Reset(time.Until(due))
}

// endWait stops the watchdog, and closes the chunk reader if Close came
// while the Read used it.
func (sr *streamReader) endWait() {
	sr.waiting.Store(false)
	sr.rmu.Lock()
	defer sr.rmu.Unlock()
	sr.watchdog.Stop()
	sr.inRead = false
	sr.awaited = nil
	if sr.closed && sr.r != nil {
		sr.r.Close()
		sr.r = nil
	}
}

// expire runs when the watchdog fires. The first time in a wait it notes
// how much of the chunk is missing; when the bound has run out it starts
// the bound again if the chunk moved since, and fails the stream
// otherwise. It takes rmu, Swarm.mu and the client lock one after the
// other, never together.
func (sr *streamReader) expire() {
	stall := sr.s.cfg.StallTimeout
	sr.rmu.Lock()
	if !sr.inRead {
		sr.rmu.Unlock()
		return // fired as the Read ended
	}
	if left := time.Until(sr.due); left > 0 {
		// Fired for an earlier wait, just as this one began.
		sr.watchdog.Reset(left)
		sr.rmu.Unlock()
		return
	}
	a, k, armed := sr.awaited, sr.waitK, sr.armedAt
	sr.rmu.Unlock()
	if a == nil {
		sr.rearm(armed, armed, sr.noteAwaited(k), armed.Add(stall))
		return
	}
	if a.t == nil {
		if now := sr.noteAwaited(k); now.t != nil || now.owner > a.owner {
			sr.s.log.Info("stream waits on the owner's upstream fetch, which still moves", "digest", sr.e.digest,
				"at", sr.waitingAt.Load(), "published", now.t != nil, "owner fetched while awaited", now.owner-a.owner)
			at := time.Now()
			sr.rearm(armed, at, now, at.Add(stall))
			return
		}
	}
	if a.t != nil {
		if missing := a.t.BytesMissing(); missing < a.missing {
			sr.s.log.Info("stream waits on a slow chunk that still moves", "digest", sr.e.digest,
				"at", sr.waitingAt.Load(), "chunk bytes arrived", a.missing-missing, "missing", missing)
			now := time.Now()
			sr.rearm(armed, now, &awaitedChunk{t: a.t, missing: missing}, now.Add(stall))
			return
		}
	}
	sr.s.logStall(sr.e, sr.waitingAt.Load())
	sr.cancel(fmt.Errorf("swarm: %w (%s) on %s", oci.ErrStalled, stall, sr.e.digest))
}

// noteAwaited notes chunk k's torrent and what it misses, or, when it is not
// added yet, the owner's fetch. It takes Swarm.mu, then the client lock.
func (sr *streamReader) noteAwaited(k int) *awaitedChunk {
	a := &awaitedChunk{t: sr.s.chunkTorrent(sr.e, k), owner: sr.e.ownerWaited.Load()}
	if a.t != nil {
		a.missing = a.t.BytesMissing()
	}
	return a
}

// rearm sets the watchdog of the wait armed at armed (if it still runs)
// to fire at due, the bound now starting at start with a noted.
func (sr *streamReader) rearm(armed, start time.Time, a *awaitedChunk, due time.Time) {
	sr.rmu.Lock()
	defer sr.rmu.Unlock()
	if !sr.inRead || !sr.armedAt.Equal(armed) {
		return // the wait ended, or another began
	}
	sr.armedAt, sr.awaited = start, a
	sr.armLocked(due)
}

// chunkTorrent returns the torrent of chunk k of e, or nil while it is not
// added.
func (s *Swarm) chunkTorrent(e *entry, k int) *torrent.Torrent {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := e.chunks[k]; c != nil {
		return c.t
	}
	return nil
}
