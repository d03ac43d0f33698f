package swarm

import (
	"crypto/sha1" //nolint:gosec // BitTorrent v1 piece hashes are SHA-1 by protocol.
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
)

// Growth is the owner's side of a blob whose file grows in order (the egress
// spool): its pieces are hashed as bytes land, and each chunk torrent is
// published (seeded over its section of the file, its metainfo served to
// followers) once all of its bytes are in. Those bytes are not checked
// against the blob's digest yet: every follower holds back the blob's tail
// until the whole digest matches, and the blob is no complete seed here
// (Stats.Seeding, the peer blob endpoint) until Complete.
type Growth struct {
	s    *Swarm
	e    *entry
	file io.ReaderAt

	written  atomic.Int64
	wake     chan struct{} // one pending wake-up for the hasher
	complete chan struct{}
	failed   chan struct{}
	done     chan struct{} // the hasher ended
	endOnce  sync.Once
	failErr  error // set before failed is closed
	promoted atomic.Bool
}

// Grow starts seeding dgst (size bytes) from file as it grows. It fails if
// this node already has the digest (seeded, growing or downloading).
func (s *Swarm) Grow(dgst digest.Digest, size int64, file io.ReaderAt) (*Growth, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("swarm: grow %q: %w", dgst, err)
	}
	if size <= 0 || file == nil {
		return nil, fmt.Errorf("swarm: grow %s: need a file of positive size, got %d", dgst, size)
	}
	e := newEntry(dgst, s.layout(size))
	e.growing = true
	g := &Growth{s: s, e: e, file: file, wake: make(chan struct{}, 1),
		complete: make(chan struct{}), failed: make(chan struct{}), done: make(chan struct{})}
	e.grown = &g.written
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if s.torrents[dgst] != nil {
		return nil, fmt.Errorf("swarm: grow %s: this node has it already", dgst)
	}
	s.torrents[dgst] = e
	s.holdingsChanged()
	s.wg.Add(1)
	go g.hash()
	s.log.Debug("growing", "digest", dgst, "size", size, "chunks", len(e.chunks))
	return g, nil
}

// Advance records that bytes [0,n) of the file are written. It never
// blocks: the hashing runs on the growth's own goroutine.
func (g *Growth) Advance(n int64) {
	n = min(n, g.e.size())
	for {
		old := g.written.Load()
		if n <= old || g.written.CompareAndSwap(old, n) {
			break
		}
	}
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// Complete says the whole blob is written and its digest matched: the rest
// is hashed and published, and the chunk torrents become a normal seed of
// the file (a later Seed of the same digest and size keeps it; Replace
// moves it onto other content). It returns once that is done.
func (g *Growth) Complete() {
	g.Advance(g.e.size())
	g.endOnce.Do(func() { close(g.complete) })
	<-g.done
}

// Fail drops every chunk torrent of the blob and forgets it: the download
// failed or did not match. Followers see the owner forget it and fail.
// Idempotent; after Complete it does nothing.
func (g *Growth) Fail(err error) {
	if err == nil {
		err = errors.New("growth failed")
	}
	g.endOnce.Do(func() {
		g.failErr = err
		close(g.failed)
	})
	<-g.done
	if g.promoted.Load() {
		return
	}
	s := g.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.torrents[g.e.digest] == g.e {
		s.log.Warn("growing blob dropped", "digest", g.e.digest, "err", g.failErr)
		s.dropLocked(g.e, fmt.Errorf("swarm: growth of %s failed: %w", g.e.digest, g.failErr))
	}
}

// hash hashes the pieces as they are written and publishes each chunk once
// its last piece is hashed. It is the only writer of the growth's chunks.
func (g *Growth) hash() {
	s, e := g.s, g.e
	defer s.wg.Done()
	defer close(g.done)
	lay := e.lay
	total := int(numPieces(lay.size, lay.pieceLength))
	pieces := make([]byte, 0, total*sha1.Size)
	buf := make([]byte, lay.pieceLength)
	h := sha1.New() //nolint:gosec
	next, k := 0, 0
	for {
		written := g.written.Load()
		for next < total {
			off := int64(next) * lay.pieceLength
			end := min(off+lay.pieceLength, lay.size)
			if end > written || g.ended() {
				break
			}
			if n, err := g.file.ReadAt(buf[:end-off], off); n < int(end-off) {
				if err == nil || errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				s.log.Error("growing blob unreadable", "digest", e.digest, "at", off, "err", err)
				return // Fail, which the egress calls on its error, drops it
			}
			pieces = appendHash(pieces, h, buf[:end-off])
			next++
			if first, last := lay.pieces(k); next == last {
				if err := g.publish(k, pieces[first*sha1.Size:last*sha1.Size]); err != nil {
					s.log.Error("chunk not published", "digest", e.digest, "chunk", k, "err", err)
					return
				}
				k++
			}
		}
		if next == total {
			select {
			case <-g.complete:
				g.promote(pieces)
				return
			case <-g.failed:
				return
			case <-s.stop:
				return
			}
		}
		select {
		case <-g.wake:
		case <-g.failed:
			return
		case <-s.stop:
			return
		}
	}
}

func (g *Growth) ended() bool {
	select {
	case <-g.failed:
		return true
	case <-g.s.stop:
		return true
	default:
		return false
	}
}

// publish adds chunk k's torrent over its section of the file and wakes
// the followers waiting for its metainfo.
func (g *Growth) publish(k int, pieces []byte) error {
	s, e := g.s, g.e
	ci, err := newChunkInfo(e.digest, e.lay, k, pieces)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.gone != nil || s.closed {
		return nil
	}
	src := new(atomic.Pointer[grownSource])
	src.Store(&grownSource{content: io.NewSectionReader(g.file, ci.off, ci.length())})
	t, err := s.addTorrent(ci, grownStorage{src: src})
	if err != nil {
		return err
	}
	e.chunks[k] = &chunk{info: ci, t: t, src: src}
	e.signalLocked()
	s.log.Debug("chunk published", "digest", e.digest, "chunk", k, "of", len(e.chunks))
	return nil
}

// promote turns the grown blob into a seed of the file: same chunk
// torrents (peers stay connected), first-read checks armed, its metainfo
// cached like any seed's.
func (g *Growth) promote(pieces []byte) {
	s, e := g.s, g.e
	b, err := newBlobInfo(e.digest, e.size(), pieces)
	if err != nil {
		s.log.Error("grown blob not seeded", "digest", e.digest, "err", err)
		return
	}
	s.mu.Lock()
	if s.torrents[e.digest] != e || e.gone != nil {
		s.mu.Unlock()
		return
	}
	seed := newEntry(e.digest, e.lay)
	seed.info, seed.seed = b, g.file
	seed.chunks = e.chunks
	seed.markVerified()
	// From now on a seed like any other: each piece is hashed again on its
	// next read, so a spool changed on disk is caught (seedCorrupted).
	for k, c := range seed.chunks {
		first, _ := seed.lay.pieces(k)
		c.src.Store(&grownSource{
			content: io.NewSectionReader(g.file, c.info.off, c.info.length()),
			check:   newSeedCheck(&c.info.info, func(piece int) { go s.seedCorrupted(seed, first+piece) }, g.file),
		})
	}
	s.torrents[e.digest] = seed
	s.holdingsChanged()
	// Pollers waiting on the growing entry look the digest up again.
	e.gone = errPromoted
	e.signalLocked()
	close(e.stop)
	g.promoted.Store(true)
	s.mu.Unlock()
	if err := s.meta.store(b); err != nil {
		s.log.Warn("metainfo not cached", "digest", e.digest, "err", err)
	}
	s.log.Debug("grown blob seeded", "digest", e.digest, "size", e.size())
}

// errPromoted marks a growing entry that became a seed.
var errPromoted = errors.New("swarm: growing blob became a seed")
