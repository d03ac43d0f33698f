package swarm

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// seedStorage serves a torrent's pieces straight from content that is
// already complete and verified (containerd's content file or its gRPC
// ReaderAt): nothing is copied, and every piece reports itself complete so
// the library seeds at once without rehashing on each restart.
type seedStorage struct {
	content io.ReaderAt
	// file is the whole blob's content when that is a file: a change of
	// its modification time makes the first-read check hash every piece
	// again (nil: only the first read is checked).
	file io.ReaderAt
	// corrupt, when set, turns on the first-read check: each piece is
	// hashed the first time a peer asks for it, and a piece whose bytes no
	// longer match (the file changed on disk since it was hashed) is
	// refused and reported here. Nil serves the content unchecked.
	corrupt func(piece int)
}

var (
	errReadOnly = errors.New("swarm: seeded content is read-only")
	// errSeedCorrupt is a seeded piece that no longer matches its hash.
	errSeedCorrupt = errors.New("swarm: seeded content does not match its piece hash")
)

func (s seedStorage) OpenTorrent(_ context.Context, info *metainfo.Info, _ metainfo.Hash) (storage.TorrentImpl, error) {
	var check *seedCheck
	if s.corrupt != nil {
		check = newSeedCheck(info, s.corrupt, s.file)
	}
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl {
			return seedPiece{section: io.NewSectionReader(s.content, p.Offset(), p.Length()), index: p.Index(), check: check}
		},
		Close: func() error { return nil },
	}, nil
}

// grownStorage serves a chunk of a growing blob from the spool. While the
// blob grows its pieces are served unchecked (they were hashed from this
// very file a moment ago); once it is complete, promote arms a seed's
// first-read check afresh, so the grown seed is checked like any Seed of
// the spool from then on, pieces uploaded during the growth included.
// Replace later points it at containerd's copy, with a check of its own.
// The library asks for a piece's storage on every use, so a new source
// takes effect at the next read, and content and check change together.
type grownStorage struct {
	src *atomic.Pointer[grownSource]
}

// grownSource is what a grown chunk is read from, and how it is checked
// (nil: unchecked).
type grownSource struct {
	content io.ReaderAt // the chunk's bytes, from offset 0
	check   *seedCheck
}

func (s grownStorage) OpenTorrent(_ context.Context, _ *metainfo.Info, _ metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl {
			src := s.src.Load()
			return seedPiece{section: io.NewSectionReader(src.content, p.Offset(), p.Length()), index: p.Index(), check: src.check}
		},
		Close: func() error { return nil },
	}, nil
}

func newSeedCheck(info *metainfo.Info, corrupt func(piece int), content io.ReaderAt) *seedCheck {
	c := &seedCheck{info: info, state: make([]atomic.Uint32, info.NumPieces()), corrupt: corrupt}
	if f, ok := content.(interface{ Stat() (fs.FileInfo, error) }); ok {
		c.modTime = func() int64 {
			fi, err := f.Stat()
			if err != nil {
				return -1
			}
			return fi.ModTime().UnixNano()
		}
		c.seen.Store(c.modTime())
	}
	return c
}

type seedPiece struct {
	section *io.SectionReader
	index   int
	check   *seedCheck // nil: unchecked
}

func (p seedPiece) ReadAt(b []byte, off int64) (int, error) {
	if p.check != nil {
		if err := p.check.verify(p.index, p.section); err != nil {
			return 0, err
		}
	}
	return p.section.ReadAt(b, off)
}

func (seedPiece) WriteAt([]byte, int64) (int, error) { return 0, errReadOnly }

func (seedPiece) MarkComplete() error { return nil }

// MarkNotComplete is called only if the library finds a seeded piece wrong,
// which means the content changed under us; refuse, so it is logged.
func (seedPiece) MarkNotComplete() error { return errReadOnly }

func (p seedPiece) Completion() storage.Completion {
	return storage.Completion{Ok: true, Complete: p.check == nil || !p.check.isCorrupt(p.index)}
}

const (
	pieceUnchecked uint32 = iota
	pieceGood
	pieceCorrupt
)

// seedCheck remembers which pieces of a seed were hashed since it started.
// The library calls Completion (isCorrupt) with its client lock held, so
// that path reads the state without waiting: mu is held across a piece's
// hash, a read of containerd's content that may take long.
type seedCheck struct {
	info    *metainfo.Info
	corrupt func(piece int)

	mu    sync.Mutex      // held while a piece is hashed: one pass per piece
	state []atomic.Uint32 // pieceUnchecked, pieceGood or pieceCorrupt; written under mu

	// modTime, when the content is a file, reads its modification time;
	// seen is the one the good marks hold for. A file written since (the
	// egress spool, whose pieces peers read while it grew) has its good
	// pieces checked again: a first read alone would miss a change made
	// after a piece was once served.
	modTime func() int64
	seen    atomic.Int64
}

// verify hashes piece i on its first read; later reads of a good piece cost
// nothing. A read error is returned as is and checked again next time.
func (c *seedCheck) verify(i int, section *io.SectionReader) error {
	if c.modTime != nil {
		if m := c.modTime(); m != c.seen.Load() {
			c.mu.Lock()
			if m != c.seen.Load() {
				for j := range c.state {
					c.state[j].CompareAndSwap(pieceGood, pieceUnchecked)
				}
				c.seen.Store(m)
			}
			c.mu.Unlock()
		}
	}
	switch c.state[i].Load() {
	case pieceGood:
		return nil
	case pieceCorrupt:
		return fmt.Errorf("piece %d: %w", i, errSeedCorrupt)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state[i].Load() {
	case pieceGood:
		return nil
	case pieceCorrupt:
		return fmt.Errorf("piece %d: %w", i, errSeedCorrupt)
	}
	want, ok := c.info.Piece(i).V1Hash().AsTuple()
	if !ok {
		return fmt.Errorf("piece %d has no hash", i)
	}
	h := sha1.New()
	if _, err := io.Copy(h, io.NewSectionReader(section, 0, section.Size())); err != nil {
		return fmt.Errorf("piece %d: %w", i, err)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		c.state[i].Store(pieceCorrupt)
		c.corrupt(i) // starts a goroutine: the swarm's lock is not taken here
		return fmt.Errorf("piece %d: %w", i, errSeedCorrupt)
	}
	c.state[i].Store(pieceGood)
	return nil
}

// isCorrupt never waits: it runs under the library's client lock.
func (c *seedCheck) isCorrupt(i int) bool {
	return c.state[i].Load() == pieceCorrupt
}
