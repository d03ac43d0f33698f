package swarm

import (
	"errors"
	"fmt"
	"time"
)

// Abandoned downloads. A download is kept while a stream reads it; when its
// last stream closes (containerd got the blob, gave up, or its response was
// cut) its chunk downloads stop keeping piece buffers for a reader, and a
// timer starts. A download no stream opened again within AbandonTimeout is
// dropped with its files, unless peers fetched pieces from it meanwhile:
// the daemon announces every download as a partial seed, and one the
// cluster is still downloading from serves it as long as it does (the
// check repeats every AbandonTimeout). A download that containerd
// committed is replaced before that by the seed of containerd's copy (Seed).

// errAbandoned is what a late waiter on an abandoned download sees.
var errAbandoned = errors.New("swarm: download abandoned: no stream read it")

// readerOpened counts a stream of download e: it keeps piece buffers for
// it again and stops the idle timer.
func (s *Swarm) readerOpened(e *entry, sr *streamReader) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.readers++
	if e.streams == nil {
		e.streams = map[*streamReader]struct{}{}
	}
	e.streams[sr] = struct{}{}
	if e.readers > 1 {
		return
	}
	if e.idle != nil {
		e.idle.Stop()
	}
	s.setIdleLocked(e, false) // nothing is held while idle but pieces in flight
}

// readerClosed uncounts a stream of e; the last one frees e's piece
// buffers and starts the idle timer.
func (s *Swarm) readerClosed(e *entry, sr *streamReader) {
	uploaded := s.uploadedOf(e) // before s.mu: it takes the client lock per chunk
	s.mu.Lock()
	defer s.mu.Unlock()
	e.readers--
	delete(e.streams, sr)
	if e.readers > 0 || e.gone != nil {
		return
	}
	s.setIdleLocked(e, true)
	s.armIdleLocked(e, uploaded)
}

// armIdleLocked starts (or restarts) e's idle timer, remembering its
// uploads so far. Caller holds s.mu.
func (s *Swarm) armIdleLocked(e *entry, uploaded int64) {
	e.uploaded = uploaded
	if e.idle == nil {
		e.idle = time.AfterFunc(s.cfg.AbandonTimeout, func() { s.idleExpired(e) })
		return
	}
	e.idle.Reset(s.cfg.AbandonTimeout)
}

// setIdleLocked tells each chunk download of e whether a stream reads it.
// Caller holds s.mu (chunks are added under it, see addDownloadChunkLocked).
func (s *Swarm) setIdleLocked(e *entry, idle bool) {
	for _, c := range e.chunks {
		if c != nil {
			s.downloads.setIdle(c.info.infoHash, idle)
		}
	}
}

// idleExpired drops e if no stream opened it and no peer fetched from it
// since the timer was armed.
func (s *Swarm) idleExpired(e *entry) {
	s.mu.Lock()
	ended := s.closed || e.gone != nil
	s.mu.Unlock()
	if ended {
		return
	}
	uploaded := s.uploadedOf(e)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || e.readers > 0 || e.gone != nil || s.torrents[e.digest] != e {
		return
	}
	if uploaded > e.uploaded {
		s.log.Debug("idle download kept: peers fetch from it", "digest", e.digest, "uploaded", uploaded-e.uploaded)
		s.armIdleLocked(e, uploaded)
		return
	}
	s.log.Info("abandoned download dropped: no stream read it and no peer fetched from it",
		"digest", e.digest, "size", e.size(), "after", s.cfg.AbandonTimeout)
	if err := s.dropLocked(e, fmt.Errorf("%w for %s", errAbandoned, s.cfg.AbandonTimeout)); err != nil {
		s.log.Warn("drop abandoned download", "digest", e.digest, "err", err)
	}
}

// uploadedOf is the piece bytes e's chunk torrents sent to peers.
func (s *Swarm) uploadedOf(e *entry) int64 {
	var n int64
	for _, c := range s.chunksOf(e) {
		n += s.received.uploaded.of(c.t)
	}
	return n
}
