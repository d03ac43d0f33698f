package swarm

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/registry/oci"
)

// Resolve is not the swarm's business: tags are resolved upstream.
func (s *Swarm) Resolve(context.Context, oci.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, fmt.Errorf("swarm resolves no tags: %w", oci.ErrNotFound)
}

// Manifest fetches a manifest by digest from the swarm like any small blob.
// The swarm knows bytes, not types: the media type is read from the content
// (oci.SniffManifestType), and content that is no manifest, an image
// config for one, is refused.
func (s *Swarm) Manifest(ctx context.Context, ref oci.Ref, dgst digest.Digest) (*oci.Manifest, error) {
	b, err := s.Blob(ctx, ref, dgst)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	const maxManifest = 4 << 20
	if b.Size() > maxManifest {
		return nil, fmt.Errorf("swarm: manifest %s is %d bytes, more than %d", dgst, b.Size(), maxManifest)
	}
	rc, err := b.Open(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	content := make([]byte, b.Size())
	if _, err := io.ReadFull(rc, content); err != nil {
		return nil, fmt.Errorf("swarm: manifest %s: %w", dgst, err)
	}
	mt, err := oci.SniffManifestType(content)
	if err != nil {
		return nil, fmt.Errorf("swarm: manifest %s: %w", dgst, err)
	}
	return &oci.Manifest{MediaType: mt, Digest: dgst, Content: content}, nil
}

// Blob finds dgst in the swarm. Local seeds are served directly; otherwise
// the tracker's seeders give the metainfo, small blobs come whole over HTTP
// from one seeder, and larger ones are streamed chunk by chunk from their
// chunk torrents while pieces arrive from every seeder. No seeder →
// oci.ErrNotFound at once. A download starts on the blob's first
// Open, not here: a HEAD learns the size from the metainfo and reserves
// nothing. A data dir that cannot hold the download (the cache's room, or
// the disk: downloadStorage.reserve) fails that Open, before anything is
// served, so the registry takes the next source.
func (s *Swarm) Blob(ctx context.Context, _ oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("swarm: blob %q: %w", dgst, err)
	}
	s.mu.Lock()
	e, closed := s.torrents[dgst], s.closed
	switch {
	case closed:
		s.mu.Unlock()
		return nil, errClosed
	case e != nil && e.seed != nil:
		s.mu.Unlock()
		return newLocalBlob(e.seed, e.size()), nil
	case e != nil && e.growing:
		s.mu.Unlock()
		// The egress serves its own spool; its unverified bytes are not
		// the swarm's to hand out whole.
		return nil, fmt.Errorf("swarm: %s is still growing here: %w", dgst, oci.ErrNotFound)
	case e != nil && (e.isVerified() || e.owner != ""):
		// Complete here, or followed from its owner (bounded by the
		// stall timeout like any stream).
		b := s.handleLocked(e)
		s.mu.Unlock()
		if b != nil {
			return b, nil
		}
		e = nil // evicted just now: as if it was never here
	default:
		s.mu.Unlock()
	}
	peers := s.peersOf(dgst)
	if !anyComplete(peers) {
		// Answer at once rather than stall: the registry tries the next
		// source. Partial seeders alone may never hold every piece (their
		// source may be gone), so a download that has only them would hang.
		return nil, fmt.Errorf("swarm: no complete seeder of %s (%d partial): %w", dgst, len(peers), oci.ErrNotFound)
	}
	if e != nil {
		return &torrentBlob{s: s, size: e.size(), start: func() (*entry, *diskcache.Entry, error) { return s.join(e) }}, nil
	}
	b, err := s.meta.load(dgst)
	if err != nil {
		if b, err = s.fetchMetainfo(ctx, dgst, peers); err != nil {
			return nil, fmt.Errorf("swarm: %w: %w", err, oci.ErrNotFound)
		}
	}
	if b.size() < s.cfg.SmallBlobSize {
		content, err := s.fetchSmallShared(ctx, b, peers)
		if err != nil {
			return nil, fmt.Errorf("swarm: %w: %w", err, oci.ErrNotFound)
		}
		return newMemoryBlob(content), nil
	}
	return &torrentBlob{s: s, size: b.size(), start: func() (*entry, *diskcache.Entry, error) { return s.download(b, peers) }}, nil
}

// join pins a download found running by Blob, or starts it again when it
// went meanwhile.
func (s *Swarm) join(e *entry) (*entry, *diskcache.Entry, error) {
	s.mu.Lock()
	if s.torrents[e.digest] == e && e.gone == nil {
		if pin, ok := s.pinLocked(e); ok {
			s.mu.Unlock()
			return e, pin, nil
		}
	}
	s.mu.Unlock()
	if e.info == nil {
		return nil, nil, fmt.Errorf("swarm: download of %s ended: %w", e.digest, errDropped)
	}
	return s.download(e.info, s.peersOf(e.digest))
}

// peersOf returns the seeders of dgst other than this node, complete and
// partial.
func (s *Swarm) peersOf(dgst digest.Digest) []Peer {
	self := s.TorrentAddr()
	var peers []Peer
	for _, p := range s.cfg.Seeders.Seeders(dgst) {
		if p.TorrentAddr.IsValid() && p.TorrentAddr != self {
			peers = append(peers, p)
		}
	}
	return peers
}

// anyComplete reports whether one of peers holds the whole blob.
func anyComplete(peers []Peer) bool {
	for _, p := range peers {
		if !p.Partial {
			return true
		}
	}
	return false
}

// download starts the download of b (its chunk torrents join as the stream
// reaches them, resuming what an earlier run left in the data directory)
// or joins the running one, and returns it pinned for the caller's Blob.
// The cache admits it first (evicting older downloads) and the data dir's
// space is reserved, so a download that cannot be kept fails here.
func (s *Swarm) download(b *blobInfo, peers []Peer) (*entry, *diskcache.Entry, error) {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	if e, pin, ok, err := s.running(b.digest); ok || err != nil {
		return e, pin, err
	}
	lay := s.layout(b.size())
	leftover := s.takeLeftover(b.digest)
	disk, err := s.admitDownload(b.digest, lay)
	if err != nil {
		leftover()
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		disk.Remove()
		leftover()
		return nil, nil, errClosed
	}
	if e := s.torrents[b.digest]; e != nil {
		// Seeded meanwhile (containerd's copy, a grown spool): an earlier
		// run's files of it are of no use, and out of the account.
		disk.Remove()
		if pin, ok := s.pinLocked(e); ok {
			s.removeLeftoverFilesLocked(b.digest)
			return e, pin, nil
		}
	}
	if err := s.reserveLocked(b.digest, lay); err != nil {
		// Not kept: what an earlier run left goes too, rather than stay
		// on a full disk unaccounted.
		disk.Remove()
		s.removeLeftoverFilesLocked(b.digest)
		return nil, nil, err
	}
	e := newEntry(b.digest, lay)
	e.info, e.disk = b, disk
	s.torrents[b.digest] = e
	s.holdingsChanged()
	// No stream reads it yet: abandoned unless one comes.
	s.armIdleLocked(e, 0)
	// Chunks an earlier run left on disk join at once: they resume, and
	// serve their verified pieces to peers before the stream gets there.
	infos := peerInfos(peers)
	for k := range e.chunks {
		if !s.downloads.has(b.digest, k) {
			continue
		}
		ci, err := b.chunk(e.lay, k)
		if err == nil {
			_, err = s.addDownloadChunkLocked(e, ci, infos)
		}
		if err != nil {
			s.log.Warn("resumed chunk not added", "digest", b.digest, "chunk", k, "err", err)
		}
	}
	s.wg.Add(2)
	go s.refreshPeers(e)
	go s.keepWindow(e)
	s.log.Debug("downloading", "digest", b.digest, "size", b.size(), "chunks", len(e.chunks), "seeders", len(peers), "peers", peerAddrs(peers))
	return e, disk, nil
}

// running returns the entry of dgst pinned for one more Blob, if there is
// one (ok); an entry evicted just now counts as none.
func (s *Swarm) running(dgst digest.Digest) (*entry, *diskcache.Entry, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, false, errClosed
	}
	if e := s.torrents[dgst]; e != nil {
		if pin, ok := s.pinLocked(e); ok {
			return e, pin, true, nil
		}
	}
	return nil, nil, false, nil
}

// takeLeftover ends the account of an earlier run's files of dgst before
// a download that resumes them is admitted (which accounts them whole), so
// the admission does not evict the very files it resumes. The function it
// returns puts the account back, for a download that was not admitted.
func (s *Swarm) takeLeftover(dgst digest.Digest) (putBack func()) {
	old := s.cache.Get(leftoverKey(dgst))
	if old == nil {
		return func() {}
	}
	old.Remove()
	return func() { s.cache.Add(leftoverKey(dgst), old.Size(), func() { s.evictLeftover(dgst) }) }
}

// reserveLocked reserves the data dir's space for a whole download before
// a Blob of it is returned (downloadStorage.reserve says why), logging a
// failure as an error as OpenTorrent does: the caller falls back to another
// source without a word, and the operator must hear that the disk is full.
// Caller holds s.mu.
func (s *Swarm) reserveLocked(dgst digest.Digest, lay layout) error {
	if err := s.downloads.reserve(dgst, lay); err != nil {
		s.log.Error("cannot store a download in the data dir; the blob is left to other sources",
			"digest", dgst, "size", lay.size, "dir", s.downloads.dir, "err", err)
		return fmt.Errorf("swarm: %w", err)
	}
	return nil
}

// ensureChunk adds chunk k of a download when its metainfo is known (always
// for a warm download; once published for a followed one) and returns it,
// or nil while it is not known yet.
func (s *Swarm) ensureChunk(e *entry, k int) (*chunk, error) {
	if k >= len(e.chunks) {
		return nil, nil
	}
	peers := s.downloadPeers(e) // the tracker is asked before s.mu is taken
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.gone != nil {
		return nil, e.gone
	}
	if c := e.chunks[k]; c != nil || e.info == nil {
		return c, nil
	}
	ci, err := e.info.chunk(e.lay, k)
	if err != nil {
		return nil, err
	}
	return s.addDownloadChunkLocked(e, ci, peers)
}

// addDownloadChunkLocked adds chunk ci of download e over the data
// directory; startChunk, on a goroutine of its own, then wants all of its
// pieces and gives it peers. Caller holds s.mu.
func (s *Swarm) addDownloadChunkLocked(e *entry, ci *chunkInfo, peers []torrent.PeerInfo) (*chunk, error) {
	if s.closed {
		return nil, errClosed
	}
	t, err := s.addTorrent(ci, s.downloads)
	if err != nil {
		return nil, err
	}
	c := &chunk{info: ci, t: t}
	e.chunks[ci.index] = c
	if e.readers == 0 {
		s.downloads.setIdle(ci.infoHash, true)
	}
	e.signalLocked()
	if len(peers) > s.cfg.MaxConns {
		e.wide = true
	}
	s.wg.Add(1)
	go s.startChunk(e, c, peers)
	return c, nil
}

// startChunk wants the pieces of download chunk c, s.wantPace apart, then
// gives it peers, with no lock of the package held but c.wantMu: a widen
// meanwhile waits for it, and one before it made e wide, which is read
// here. Nothing is wanted of a download dropped or replaced meanwhile.
func (s *Swarm) startChunk(e *entry, c *chunk, peers []torrent.PeerInfo) {
	defer s.wg.Done()
	c.wantMu.Lock()
	s.mu.Lock()
	wide, gone := e.wide, e.gone != nil
	s.mu.Unlock()
	if !gone {
		s.wantChunk(c.t, c.info.index, wide, s.wantPace)
	}
	c.wantMu.Unlock()
	if !gone {
		c.t.AddPeers(peers)
	}
}

// downloadPeers lists the peers of a download: every member the tracker
// names for the digest (partial ones too: they trade pieces) and the owner
// of a followed blob.
func (s *Swarm) downloadPeers(e *entry) []torrent.PeerInfo {
	return s.downloadPeersOf(e, s.peersOf(e.digest))
}

// downloadPeersOf is downloadPeers with the tracker's peers given.
func (s *Swarm) downloadPeersOf(e *entry, named []Peer) []torrent.PeerInfo {
	infos := peerInfos(named)
	if e.ownerTorrent.IsValid() {
		infos = append(infos, torrent.PeerInfo{Addr: torrent.StringAddr(e.ownerTorrent.String()), Source: torrent.PeerSourceDirect})
	}
	return infos
}

// refreshPeers adds peers that appear while a download runs, so a seeder
// that vanishes is replaced, and fails the waiting streams of a download
// left with no complete peer and no progress (orphan.go). It ends when the download is verified, dropped
// or the swarm closes.
func (s *Swarm) refreshPeers(e *entry) {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.PeerRefresh)
	defer tick.Stop()
	orphan := orphanClock{done: -1}
	for {
		select {
		case now := <-tick.C:
			named := s.peersOf(e.digest)
			peers := s.downloadPeersOf(e, named)
			s.widen(e, len(peers))
			for _, c := range s.chunksOf(e) {
				if c.t.BytesMissing() == 0 {
					// Its downloaders dial us; a dial to a peer that has the
					// chunk too would be dropped at once (mutually complete).
					continue
				}
				c.t.AddPeers(notConnected(c.t, peers))
			}
			alive := s.mayProgress(e, named, e.owner != "", &orphan.done)
			if orphan.tick(alive, now, s.cfg.OrphanTimeout) {
				s.failWaiting(e, now.Sub(orphan.since))
			}
		case <-e.verified:
			return
		case <-e.stop:
			return
		case <-s.stop:
			return
		}
	}
}

// chunksOf returns the chunk torrents e has now.
func (s *Swarm) chunksOf(e *entry) []*chunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*chunk, 0, len(e.chunks))
	for _, c := range e.chunks {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// notConnected drops the peers t already has a connection with. A
// connection the peer dialled comes from another port than the one it
// listens on, so the library would dial the peer again on every refresh,
// only to close the new connection as a duplicate (the client drops
// duplicate peer IDs, swarm.go). Peers are told apart by IP: one daemon
// per node.
func notConnected(t *torrent.Torrent, peers []torrent.PeerInfo) []torrent.PeerInfo {
	conns := t.PeerConns()
	if len(conns) == 0 {
		return peers
	}
	connected := make(map[string]bool, len(conns))
	for _, pc := range conns {
		connected[hostOf(pc.RemoteAddr.String())] = true
	}
	return slices.DeleteFunc(slices.Clone(peers), func(p torrent.PeerInfo) bool {
		return connected[hostOf(p.Addr.String())]
	})
}

func peerInfos(peers []Peer) []torrent.PeerInfo {
	infos := make([]torrent.PeerInfo, 0, len(peers))
	for _, p := range peers {
		infos = append(infos, torrent.PeerInfo{Addr: torrent.StringAddr(p.TorrentAddr.String()), Source: torrent.PeerSourceDirect})
	}
	return infos
}

// verified records a download whose digest checked out: its metainfo is now
// known good (every piece and the whole blob matched), so it is cached and
// a later Seed of containerd's copy needs no rehash.
func (s *Swarm) verified(e *entry) {
	if !e.markVerified() {
		return
	}
	b := e.info
	if b == nil {
		s.mu.Lock()
		infos := make([]*chunkInfo, len(e.chunks))
		for k, c := range e.chunks {
			if c != nil {
				infos[k] = c.info
			}
		}
		s.mu.Unlock()
		var err error
		if b, err = joinChunks(e.digest, e.size(), infos); err != nil {
			s.log.Warn("metainfo not cached", "digest", e.digest, "err", err)
		}
	}
	if b != nil {
		if err := s.meta.store(b); err != nil {
			s.log.Warn("metainfo not cached", "digest", e.digest, "err", err)
		}
	}
	s.log.Info("download verified", "digest", e.digest, "size", e.size())
}

// discard drops a download whose bytes do not match its digest.
func (s *Swarm) discard(e *entry, cause error) {
	s.log.Error("download discarded", "digest", e.digest, "err", cause)
	s.meta.remove(e.digest)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.torrents[e.digest] == e {
		for _, c := range e.chunks {
			if c != nil {
				s.received.forget(c.info.infoHash)
			}
		}
		if err := s.dropLocked(e, cause); err != nil {
			s.log.Warn("discard", "digest", e.digest, "err", err)
		}
	}
}

var _ oci.Source = (*Swarm)(nil)

// peerAddrs lists peers' torrent addresses, for logs.
func peerAddrs(peers []Peer) []string {
	out := make([]string, 0, len(peers))
	for _, p := range peers {
		a := p.TorrentAddr.String()
		if p.Partial {
			a += " (partial)"
		}
		out = append(out, a)
	}
	return out
}
