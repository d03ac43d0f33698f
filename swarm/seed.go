package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/opencontainers/go-digest"
)

// Seed offers local, complete content (containerd's content file or gRPC
// ReaderAt) to the swarm without copying it. The first time a blob is seeded
// its piece hashes are computed in the same pass that checks its digest, and
// kept in the data directory; later calls (and restarts) reuse them. Content
// that does not match dgst is refused and changes nothing. Seeding a blob
// this node downloaded replaces the download and deletes its files (the
// daemon seeds containerd's copy once containerd committed the blob); a
// finished, verified download keeps its torrents and connections, its
// pieces read from content from then on.
// content must stay readable until Unseed or Close; seeding a digest again
// keeps the first one.
func (s *Swarm) Seed(ctx context.Context, dgst digest.Digest, size int64, content io.ReaderAt) error {
	return s.seed(ctx, dgst, size, content, false)
}

// Replace seeds content in place of the content dgst is seeded from now
// (the egress spool, once containerd holds the blob), with no moment where
// dgst is not served: the old torrent is dropped and the new one added under
// one hold of the swarm's lock. Transfers already reading the old content
// keep it (it must stay readable a while: the caller closes it later);
// torrent peers reconnect. Content that does not match dgst is refused and
// the old seed stays. Without a seed of dgst it is Seed.
func (s *Swarm) Replace(ctx context.Context, dgst digest.Digest, size int64, content io.ReaderAt) error {
	return s.seed(ctx, dgst, size, content, true)
}

func (s *Swarm) seed(ctx context.Context, dgst digest.Digest, size int64, content io.ReaderAt, replace bool) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("swarm: seed %q: %w", dgst, err)
	}
	if size <= 0 || content == nil {
		return fmt.Errorf("swarm: seed %s: need content of positive size, got %d", dgst, size)
	}
	if e := s.seeded(dgst); e != nil && e.size() == size && !replace {
		return nil
	}
	b, err := s.meta.load(dgst)
	fromCache := err == nil && b.size() == size
	if !fromCache {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("metainfo cache unreadable, rehashing", "digest", dgst, "err", err)
		}
		if b, err = hashBlob(ctx, dgst, size, content); err != nil {
			return fmt.Errorf("swarm: seed: %w", err)
		}
	}

	chunks, added, err := s.addSeed(dgst, b, content, replace)
	if err != nil || !added {
		return err
	}
	// Without s.mu: storing admits the file into the data dir's cache,
	// which may evict, and evictions take s.mu.
	if !fromCache {
		if err := s.meta.store(b); err != nil {
			s.log.Warn("metainfo not cached", "digest", dgst, "err", err)
		}
	}
	s.log.Debug("seeding", "digest", dgst, "size", size, "chunks", chunks, "cached", fromCache)
	return nil
}

// addSeed seeds b over content in place of what dgst is seeded from, and
// returns its chunk count; not added when that seed is b already (and
// replace is false).
func (s *Swarm) addSeed(dgst digest.Digest, b *blobInfo, content io.ReaderAt, replace bool) (chunks int, added bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false, errClosed
	}
	if old := s.torrents[dgst]; old != nil {
		if old.seed != nil && old.info.infoHash == b.infoHash && !replace {
			return 0, false, nil
		}
		if replace && s.resourceLocked(old, b, content) {
			return len(old.chunks), true, nil
		}
		if s.resourceDownloadLocked(old, b, content) {
			return len(old.chunks), true, nil
		}
		s.dropLocked(old, nil)
	}
	e, err := s.addSeedLocked(b, content, true)
	if err != nil {
		return 0, false, err
	}
	return len(e.chunks), true, nil
}

// resourceLocked points the chunk torrents of old, a grown seed (the egress
// spool) of b, at content, and seeds them as a new entry; false, and
// nothing changed, when old is not that. Dropping the torrents and adding
// them again over content, as other replacements do, closed every
// connection of the blob just as the egress finished its fetch, the moment
// its uplink is the rollout's bottleneck: 1-2 s without uploading
// (BenchmarkRollout), until the peers dialled it again. Each chunk's content
// and first-read check change together (grownStorage), so content's pieces
// are checked on their first read as a Seed's are. Streams of old keep
// reading the spool, as Replace promises. Caller holds s.mu.
func (s *Swarm) resourceLocked(old *entry, b *blobInfo, content io.ReaderAt) bool {
	if old.seed == nil || old.info == nil || old.info.infoHash != b.infoHash || old.gone != nil {
		return false
	}
	for _, c := range old.chunks {
		if c == nil || c.src == nil {
			return false
		}
	}
	e := newEntry(old.digest, old.lay)
	e.info, e.seed = b, content
	e.chunks = old.chunks
	e.markVerified()
	for k, c := range e.chunks {
		first, _ := e.lay.pieces(k)
		c.src.Store(&grownSource{
			content: io.NewSectionReader(content, c.info.off, c.info.length()),
			check:   newSeedCheck(&c.info.info, func(piece int) { go s.seedCorrupted(e, first+piece) }, content),
		})
	}
	s.torrents[e.digest] = e
	s.holdingsChanged()
	s.dropLeftoverLocked(e.digest)
	old.gone = errReplaced
	old.signalLocked()
	close(old.stop)
	if old.idle != nil {
		old.idle.Stop()
	}
	return true
}

// resourceDownloadLocked makes old, a finished and verified download of b,
// a seed over content (containerd's copy, once it committed the blob)
// without dropping its chunk torrents; false, and nothing changed, when old
// is not that. Dropping them closed every connection of a node that had
// just finished, in the middle of the rollout it feeds: the pieces its
// peers had asked for were lost and fetched again elsewhere, most often
// from the egress (BenchmarkRollout at N = 16: the last chunk's last piece
// waited on such a node, then five followers took it from the egress).
// Each chunk's download serves its pieces from content from then on, with
// a seed's first-read check, and its files are closed and deleted (reads
// in flight keep the data file, as a dropped download's); streams of old
// keep reading its torrents. Caller holds s.mu.
func (s *Swarm) resourceDownloadLocked(old *entry, b *blobInfo, content io.ReaderAt) bool {
	if old.seed != nil || old.growing || old.gone != nil || !old.isVerified() {
		return false
	}
	downloads := make([]*download, len(old.chunks))
	for k, c := range old.chunks {
		if c == nil {
			return false
		}
		ci, err := b.chunk(old.lay, k)
		if err != nil || ci.infoHash != c.info.infoHash {
			return false
		}
		if downloads[k] = s.downloads.opened.get(c.info.infoHash); downloads[k] == nil || !downloads[k].completeAll() {
			return false
		}
	}
	e := newEntry(old.digest, old.lay)
	e.info, e.seed = b, content
	e.chunks = old.chunks
	e.markVerified()
	for k, c := range e.chunks {
		// A seed wants nothing: a piece its check finds corrupt is not
		// fetched again into content it cannot write (as a seed's
		// torrent, it is dropped: seedCorrupted).
		c.t.CancelPieces(0, c.t.NumPieces())
		c.t.DisallowDataDownload()
		first, _ := e.lay.pieces(k)
		err := downloads[k].resource(&grownSource{
			content: io.NewSectionReader(content, c.info.off, c.info.length()),
			check:   newSeedCheck(&c.info.info, func(piece int) { go s.seedCorrupted(e, first+piece) }, content),
		})
		if err != nil {
			s.log.Warn("closing a download's files", "digest", old.digest, "chunk", k, "err", err)
		}
	}
	s.torrents[e.digest] = e
	s.holdingsChanged()
	s.dropLeftoverLocked(e.digest)
	old.gone = errReplaced
	old.signalLocked()
	close(old.stop)
	if old.idle != nil {
		old.idle.Stop()
	}
	if old.disk != nil {
		old.disk.Remove()
	}
	if err := s.downloads.remove(old.digest); err != nil {
		s.log.Warn("release a download replaced by its seed", "digest", old.digest, "err", err)
	}
	s.log.Debug("download seeded in place from the local copy", "digest", old.digest, "chunks", len(e.chunks))
	return true
}

// errReplaced marks an entry (a seed, or a finished download) whose
// torrents now serve other content.
var errReplaced = errors.New("swarm: seed replaced")

// addSeedLocked adds every chunk torrent of b over content (first-read
// checked if check is set) and puts the seed in the table. Caller holds
// s.mu.
func (s *Swarm) addSeedLocked(b *blobInfo, content io.ReaderAt, check bool) (*entry, error) {
	e := newEntry(b.digest, s.layout(b.size()))
	e.info, e.seed = b, content
	e.markVerified()
	for k := range e.chunks {
		c, err := b.chunk(e.lay, k)
		if err != nil {
			s.dropChunks(e)
			return nil, err
		}
		first, _ := e.lay.pieces(k)
		st := seedStorage{content: io.NewSectionReader(content, c.off, c.length()), file: content}
		if check {
			st.corrupt = func(piece int) { go s.seedCorrupted(e, first+piece) }
		}
		t, err := s.addTorrent(c, st)
		if err != nil {
			s.dropChunks(e)
			return nil, err
		}
		e.chunks[k] = &chunk{info: c, t: t}
	}
	s.torrents[b.digest] = e
	s.holdingsChanged()
	s.dropLeftoverLocked(b.digest)
	return e, nil
}

// Unseed stops seeding dgst (containerd deleted it).
func (s *Swarm) Unseed(dgst digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.torrents[dgst]; e != nil && e.seed != nil {
		// The per-peer counts stay: containerd may drop and regain a blob
		// (a walk during a pull), and where the copy came from still
		// holds. They are a few entries per downloaded blob.
		s.dropLocked(e, nil)
		s.log.Debug("unseeded", "digest", dgst)
	}
}

// dropLocked removes an entry and its chunk torrents from the client; a
// download's files go too. Waiters on the entry see cause (errDropped when
// nil). Caller holds s.mu.
func (s *Swarm) dropLocked(e *entry, cause error) error {
	if s.torrents[e.digest] == e {
		delete(s.torrents, e.digest)
		s.holdingsChanged()
	}
	if e.gone != nil {
		return nil
	}
	if cause == nil {
		cause = errDropped
	}
	e.gone = cause
	e.signalLocked()
	close(e.stop)
	if e.idle != nil {
		e.idle.Stop()
	}
	s.dropChunks(e)
	if e.disk != nil {
		e.disk.Remove()
	}
	if e.seed == nil && !e.growing {
		if err := s.downloads.remove(e.digest); err != nil {
			return fmt.Errorf("swarm: release %s: %w", e.digest, err)
		}
	}
	return nil
}

// errDropped is what a stream of an entry that left the table sees.
var errDropped = errors.New("swarm: blob dropped")

// dropChunks drops e's chunk torrents from the client. Caller holds s.mu.
func (s *Swarm) dropChunks(e *entry) {
	for _, c := range e.chunks {
		if c != nil {
			c.t.Drop()
		}
	}
}

// seeded returns the seed entry of dgst, or nil.
func (s *Swarm) seeded(dgst digest.Digest) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.torrents[dgst]; e != nil && e.servesPeers() {
		return e
	}
	return nil
}

// servesPeers is the one rule for what this node serves to peers (the
// metainfo and blob endpoints, and whole blobs to the registry): local,
// complete content. Stats.Seeding reports it, and the daemon announces as
// complete exactly that, so a member listed as a complete seeder answers.
func (e *entry) servesPeers() bool { return e.seed != nil }

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
