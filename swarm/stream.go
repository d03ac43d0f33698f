package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// streamReader streams a downloading blob in order, chunk by chunk, from
// torrent readers of its chunk torrents: it returns only pieces that passed
// their hash check (never SetResponsive), and it withholds the blob's final
// bytes until the whole digest matches, so a bad blob ends in an error,
// never in a complete response. A chunk whose metainfo is not known yet (a
// followed blob still growing on its owner) is waited for, under the same
// stall watchdog as a piece (watchdog.go).
type streamReader struct {
	s         *Swarm
	e         *entry
	ctx       context.Context
	cancel    context.CancelCauseFunc
	watchdog  *time.Timer
	waitingAt atomic.Int64 // pos when the watchdog was armed, for its log
	waiting   atomic.Bool  // a Read waits for the swarm (orphan.go)
	pos, size int64
	// r reads chunk k; nil before the first read. rmu guards r, k, inRead,
	// closed and the watchdog's fields: Close may come from another goroutine
	// than Read, and then leaves closing r to the Read that uses it (the
	// library's reader must not be closed under its Read), and the
	// watchdog fires on its own goroutine. Under rmu only the library's
	// reader is closed (its client lock); see the lock order in doc.go.
	rmu    sync.Mutex
	r      torrent.Reader
	k      int
	inRead bool
	closed bool
	// Of the watchdog (watchdog.go): the chunk the Read waits on, when its
	// current bound started, when it fires next, and the chunk's progress
	// noted once the Read waited a while.
	waitK   int
	armedAt time.Time
	due     time.Time
	awaited *awaitedChunk
	// digester hashes the stream itself when it starts at 0; a stream that
	// starts later is checked against the stored pieces at the end.
	digester digest.Digester
	start    int64
	// fromSeed, once set, is where the rest of the blob comes from: the
	// download was replaced by a local seed of the same digest (the egress
	// spool or containerd's copy), which closed its torrents under us.
	fromSeed io.Reader
	err      error
}

func newStreamReader(ctx context.Context, s *Swarm, e *entry, offset int64) *streamReader {
	ctx, cancel := context.WithCancelCause(ctx)
	sr := &streamReader{s: s, e: e, ctx: ctx, cancel: cancel, pos: offset, start: offset, size: e.size()}
	if offset == 0 && !e.isVerified() {
		sr.digester = e.digest.Algorithm().Digester()
	}
	// The watchdog runs only while a Read waits, so a slow consumer is not
	// mistaken for a stalled swarm.
	sr.watchdog = time.AfterFunc(s.cfg.StallTimeout, sr.expire)
	sr.watchdog.Stop()
	s.readerOpened(e, sr)
	return sr
}

func (sr *streamReader) Read(p []byte) (int, error) {
	if sr.err != nil {
		return 0, sr.err
	}
	if sr.pos == sr.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), sr.size-sr.pos)]
	var n int
	var err error
	if sr.fromSeed != nil {
		n, err = sr.fromSeed.Read(p)
	} else {
		k := sr.e.lay.chunkOf(sr.pos)
		off, length := sr.e.lay.span(k)
		p = p[:min(int64(len(p)), off+length-sr.pos)] // one chunk per read
		sr.beginWait(k)
		var r torrent.Reader
		if r, err = sr.reader(k, sr.pos-off); err == nil {
			n, err = r.Read(p)
		}
		sr.endWait()
		if errors.Is(err, io.EOF) && sr.pos+int64(n) == off+length {
			err = nil // end of the chunk, not of the blob
		}
	}
	if n > 0 {
		if sr.digester != nil {
			sr.digester.Hash().Write(p[:n])
		}
		sr.pos += int64(n)
	}
	if sr.pos == sr.size {
		if verr := sr.verify(); verr != nil {
			sr.err = verr
			return 0, verr
		}
		return n, nil
	}
	if err != nil && sr.fromSeed == nil && sr.switchToSeed() {
		if n > 0 {
			return n, nil
		}
		return sr.Read(p)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if cause := context.Cause(sr.ctx); cause != nil {
			if sr.fromSeed == nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, oci.ErrStalled) {
				// The caller's own stall bound ended a wait for the
				// swarm (the egress pipeline's): log what the chunk's
				// torrent was doing, as the watchdog does.
				sr.s.logStall(sr.e, sr.pos)
			}
			err = cause
		} else if gone := sr.s.goneCause(sr.e); gone != nil && !errors.Is(err, gone) {
			err = fmt.Errorf("%w: %w", gone, err)
		}
		sr.err = fmt.Errorf("swarm: blob %s at byte %d: %w", sr.e.digest, sr.pos, err)
		return n, sr.err
	}
	return n, nil
}

// reader returns a reader of chunk k at offset at (in the chunk), waiting
// for the chunk's metainfo if need be. Moving to a chunk also adds the next
// ones (window.go), so the window the stream needs is always downloading.
func (sr *streamReader) reader(k int, at int64) (torrent.Reader, error) {
	sr.rmu.Lock()
	cur, curK := sr.r, sr.k
	sr.rmu.Unlock()
	if cur != nil && curK == k {
		return cur, nil
	}
	sr.s.reachChunk(sr.e, k)
	c, err := sr.s.waitChunk(sr.ctx, sr.e, k)
	if err != nil {
		return nil, err
	}
	if err := sr.s.widenWindow(sr.e); err != nil {
		return nil, err
	}
	r := c.t.NewReader()
	r.SetContext(sr.ctx)
	// Only the piece the stream waits for, and one piece's length after
	// its position, are raised above the window's priority (window.go);
	// the rest of the chunk is wanted already.
	r.SetReadahead(sr.e.lay.pieceLength)
	if at > 0 {
		if _, err := r.Seek(at, io.SeekStart); err != nil {
			r.Close()
			return nil, fmt.Errorf("swarm: seek chunk %d of %s to %d: %w", k, sr.e.digest, at, err)
		}
	}
	sr.rmu.Lock()
	defer sr.rmu.Unlock()
	if sr.closed {
		r.Close()
		return nil, context.Canceled
	}
	if sr.r != nil {
		sr.r.Close()
	}
	sr.r, sr.k = r, k
	return r, nil
}

// reachChunk records that a stream of e reads chunk k: the window
// (window.go) starts at the furthest chunk read and ends at most
// 2·windowChunks past it, so memory and the download stay bounded when the
// reader is slow. The chunks
// before k, when this is e's only stream, keep no piece for a reader any
// more: each chunk bounds its kept pieces on its own, and those a reader
// never read through (a read shaped like a peer's request keeps its piece)
// would otherwise stay until the download ends — 2.5 GiB of RSS for a
// 4 GiB layer in 128 chunks (TestBigArtifact).
func (s *Swarm) reachChunk(e *entry, k int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k > e.reading || k >= e.windowEnd {
		e.reading = max(e.reading, k)
		e.windowEnd = max(e.windowEnd, k+1) // keepWindow widens it
		e.signalLocked()
	}
	if e.readers > 1 {
		return
	}
	for _, c := range e.chunks[:min(k, len(e.chunks))] {
		if c != nil {
			s.downloads.setIdle(c.info.infoHash, true)
		}
	}
}

// waitChunk returns chunk k of e once its torrent is added.
func (s *Swarm) waitChunk(ctx context.Context, e *entry, k int) (*chunk, error) {
	for {
		c, err := s.ensureChunk(e, k)
		if err != nil || c != nil {
			return c, err
		}
		s.mu.Lock()
		changed := e.changed
		c, gone := e.chunks[k], e.gone
		s.mu.Unlock()
		switch {
		case gone != nil:
			return nil, gone
		case c != nil:
			return c, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// goneCause is why e left the table, or nil.
func (s *Swarm) goneCause(e *entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return e.gone
}

// switchToSeed moves a failed stream onto a local seed of its digest, if
// one replaced the download and the switch keeps every byte checked: either
// nothing was served from the download yet, or the stream hashes the whole
// blob itself (it started at 0) and still checks it at the end. A stream
// whose client went away does not switch.
func (sr *streamReader) switchToSeed() bool {
	if cause := context.Cause(sr.ctx); cause != nil && !errors.Is(cause, oci.ErrStalled) {
		return false
	}
	if sr.pos != sr.start && sr.digester == nil {
		return false
	}
	seed := sr.s.seeded(sr.e.digest)
	if seed == nil || seed == sr.e || seed.size() != sr.size {
		return false
	}
	sr.fromSeed = io.NewSectionReader(seed.seed, sr.pos, sr.size-sr.pos)
	sr.s.log.Debug("stream continues from the local seed that replaced its download", "digest", sr.e.digest, "at", sr.pos)
	return true
}

// verify checks the whole blob's digest before its last bytes are released.
func (sr *streamReader) verify() error {
	if sr.fromSeed != nil {
		// A seed is verified content; what came from the download before
		// the switch is covered by the stream's own digester, if any.
		if sr.digester != nil && sr.digester.Digest() != sr.e.digest {
			return fmt.Errorf("swarm: blob %s: %w (got %s)", sr.e.digest, errDigestMismatch, sr.digester.Digest())
		}
		return nil
	}
	if sr.e.isVerified() {
		return nil
	}
	want := sr.e.digest
	var got digest.Digest
	if sr.digester != nil {
		got = sr.digester.Digest()
	} else {
		var err error
		if got, err = sr.hashStored(); err != nil {
			return fmt.Errorf("swarm: verify %s: %w", want, err)
		}
	}
	if got != want {
		err := fmt.Errorf("swarm: blob %s: %w (got %s); download discarded", want, errDigestMismatch, got)
		sr.s.discard(sr.e, err)
		return err
	}
	sr.s.verified(sr.e)
	return nil
}

// hashStored hashes the blob from the start, chunk by chunk, through
// readers of its own: the chunks after the stream's start are stored by
// now, those before it are fetched like any others.
func (sr *streamReader) hashStored() (digest.Digest, error) {
	d := sr.e.digest.Algorithm().Digester()
	for k := range sr.e.lay.numChunks() {
		c, err := sr.s.waitChunk(sr.ctx, sr.e, k)
		if err != nil {
			return "", err
		}
		r := c.t.NewReader()
		r.SetContext(sr.ctx)
		n, err := io.Copy(d.Hash(), io.LimitReader(r, c.info.length()))
		r.Close()
		if err == nil && n != c.info.length() {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return "", err
		}
	}
	return d.Digest(), nil
}

func (sr *streamReader) Close() error {
	sr.watchdog.Stop()
	sr.cancel(context.Canceled)
	sr.rmu.Lock()
	if sr.closed {
		sr.rmu.Unlock()
		return nil
	}
	sr.closed = true
	var err error
	if sr.r != nil && !sr.inRead {
		err = sr.r.Close()
		sr.r = nil
	}
	sr.rmu.Unlock()
	sr.s.readerClosed(sr.e, sr)
	return err
}
