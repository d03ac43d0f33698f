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
// 40 s and yet moves. So when the bound runs out, the chunk torrent the
// Read waits on is looked at: if more of it arrived since the bound started
// (the library counts it in requests of Config.ChunkSize; the awaited
// piece's requests may sit behind others in the seeder's queue, so the
// whole chunk counts), the bound starts again. A chunk holds finitely many
// bytes, and a peer whose pieces fail their hash is banned (bans.go), so
// a read still ends; one whose chunk gets no byte for StallTimeout fails as
// before.

// awaitedChunk is the chunk torrent a Read waits on, and how many of its
// bytes were missing when the watchdog's bound started.
type awaitedChunk struct {
	t       *torrent.Torrent
	missing int64
}

// beginWait arms the watchdog and marks the stream as reading from the
// swarm.
func (sr *streamReader) beginWait() {
	sr.waitingAt.Store(sr.pos)
	sr.waiting.Store(true)
	sr.rmu.Lock()
	defer sr.rmu.Unlock()
	sr.inRead = true
	sr.armedAt = time.Now()
	sr.awaited = nil
	sr.watchdog.Reset(sr.s.cfg.StallTimeout)
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

// noteAwaited records chunk k as the one the Read waits on. It takes
// Swarm.mu, then the client lock, then rmu, one after the other.
func (sr *streamReader) noteAwaited(k int) {
	sr.s.mu.Lock()
	c := sr.e.chunks[k]
	sr.s.mu.Unlock()
	if c == nil {
		return
	}
	a := &awaitedChunk{t: c.t, missing: c.t.BytesMissing()}
	sr.rmu.Lock()
	defer sr.rmu.Unlock()
	if sr.inRead {
		sr.awaited = a
	}
}

// expire runs when the watchdog's bound ran out: it starts the bound again
// if the awaited chunk moved, and fails the stream otherwise.
func (sr *streamReader) expire() {
	stall := sr.s.cfg.StallTimeout
	sr.rmu.Lock()
	if !sr.inRead {
		sr.rmu.Unlock()
		return // fired as the Read ended
	}
	if left := time.Until(sr.armedAt.Add(stall)); left > 0 {
		// Fired for an earlier wait, just as this one began.
		sr.watchdog.Reset(left)
		sr.rmu.Unlock()
		return
	}
	a := sr.awaited
	sr.rmu.Unlock()
	if a != nil {
		if missing := a.t.BytesMissing(); missing < a.missing {
			sr.rmu.Lock()
			defer sr.rmu.Unlock()
			if sr.inRead && sr.awaited == a {
				sr.s.log.Info("stream waits on a slow chunk that still moves", "digest", sr.e.digest,
					"at", sr.waitingAt.Load(), "chunk bytes arrived", a.missing-missing, "missing", missing)
				sr.awaited = &awaitedChunk{t: a.t, missing: missing}
				sr.armedAt = time.Now()
				sr.watchdog.Reset(stall)
			}
			return
		}
	}
	sr.s.logStall(sr.e, sr.waitingAt.Load())
	sr.cancel(fmt.Errorf("swarm: %w (%s) on %s", oci.ErrStalled, stall, sr.e.digest))
}
