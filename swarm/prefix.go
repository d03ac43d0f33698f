package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/diskcache"
)

// The prefix of a blob whose owner died. The members that followed the
// owner's download hold the chunks it published, each piece checked
// against the chunk's metainfo; the candidate that takes the download over
// (the egress Fetcher, through egress.FetcherConfig.Prefix) copies those
// chunks into its spool and asks the upstream for the rest only. The bytes
// are not checked against the blob's digest here: the Fetcher hashes the
// whole blob, prefix included, before its last byte is released.

func prefixKey(d digest.Digest) string { return "swarm/prefix/" + d.String() }

// Prefix writes to w, from byte 0, the whole chunks of dgst (size bytes)
// that members hold: chunk k's metainfo from a member that holds all of
// its pieces (the peer endpoint answers ?chunk=k&held=1 for a download
// only then), its pieces from every member that has them, and it stops at
// the first chunk no member holds. It returns the bytes written: 0, and no
// error, when no member holds chunk 0 or the blob is small (whole over
// HTTP). Only pieces that passed their hash check are written; reads end
// with ctx (the caller bounds the wait for progress). A blob this node
// already downloads (it followed the dead owner too) is read from that
// download, its whole chunks only; this node's own growth of it is left alone: the chunks read
// here are dropped before Prefix returns, so the growth can publish them.
func (s *Swarm) Prefix(ctx context.Context, dgst digest.Digest, size int64, w io.Writer) (int64, error) {
	if err := dgst.Validate(); err != nil {
		return 0, fmt.Errorf("swarm: prefix of %q: %w", dgst, err)
	}
	if size < s.cfg.SmallBlobSize || size <= 0 {
		return 0, nil
	}
	s.mu.Lock()
	e, closed := s.torrents[dgst], s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return 0, errClosed
	case e != nil && e.size() != size:
		return 0, fmt.Errorf("swarm: prefix of %s of %d bytes: known here with %d", dgst, size, e.size())
	case e != nil && e.seed != nil:
		// Verified content here already: all of it.
		return io.Copy(w, io.NewSectionReader(e.seed, 0, size))
	case e != nil && !e.growing:
		return s.prefixFromDownload(ctx, e, w)
	}
	return s.prefixFromPeers(ctx, dgst, s.layout(size), w)
}

// prefixFromDownload copies the chunks a download of this node holds
// whole, in order, until the first it does not: it never waits for the
// download. The upstream sends the rest at once; waiting for a download
// that was slow (one seeder, under load) held the egress's first byte past
// its followers' lookup budget (TestLoadManyConcurrentPullsKeepDaemonsFlat:
// the egress node's own containerd pulled the blob through the swarm when
// another node asked the egress for it).
func (s *Swarm) prefixFromDownload(ctx context.Context, e *entry, w io.Writer) (int64, error) {
	s.mu.Lock()
	pin, ok := s.pinLocked(e)
	s.mu.Unlock()
	if !ok {
		return 0, nil // evicted just now
	}
	if pin != nil {
		defer pin.Unpin() // without s.mu: an unpin may evict
	}
	var written int64
	for k := range e.lay.numChunks() {
		s.mu.Lock()
		c := e.chunks[k]
		s.mu.Unlock()
		if c == nil || c.t.BytesMissing() != 0 {
			return written, nil
		}
		n, err := copyChunk(ctx, c, e.lay.pieceLength, w)
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// prefixFromPeers finds the chunks members hold and downloads them, at
// most windowChunks at once, into the data dir (accounted in the cache
// while they are there), copying each to w as it completes. The chunk
// torrents and their files go before it returns.
func (s *Swarm) prefixFromPeers(ctx context.Context, dgst digest.Digest, lay layout, w io.Writer) (int64, error) {
	peers := s.peersOf(dgst)
	if len(peers) == 0 {
		return 0, nil
	}
	infos := s.heldChunks(ctx, dgst, lay, peers)
	if len(infos) == 0 {
		return 0, nil
	}
	disk, err := s.admitPrefix(dgst, lay, infos)
	if err != nil {
		return 0, fmt.Errorf("swarm: prefix of %s: %w", dgst, err)
	}
	chunks := make([]*torrent.Torrent, len(infos))
	defer s.dropPrefix(dgst, chunks, disk)
	start := time.Now()
	var written int64
	for k := range infos {
		for next := k; next < k+windowChunks; next++ {
			if err := s.addPrefixChunk(infos, chunks, peers, next); err != nil {
				return written, fmt.Errorf("swarm: prefix of %s: %w", dgst, err)
			}
		}
		n, err := copyChunk(ctx, &chunk{info: infos[k], t: chunks[k]}, lay.pieceLength, w)
		written += n
		if err != nil {
			return written, fmt.Errorf("swarm: prefix of %s, chunk %d: %w", dgst, k, err)
		}
		// Read through: its pieces stay on disk until the end only.
		s.mu.Lock()
		chunks[k].Drop()
		chunks[k] = nil
		s.mu.Unlock()
	}
	s.log.Info("prefix of a blob fetched from the members that hold it", "digest", dgst, "bytes", written,
		"chunks", len(infos), "of", lay.numChunks(), "peers", len(peers), "duration", time.Since(start))
	return written, nil
}

// admitPrefix accounts the prefix's files in the cache before any is
// written: whole blocks, as downloadBytes, the data files and their marks.
func (s *Swarm) admitPrefix(dgst digest.Digest, lay layout, infos []*chunkInfo) (*diskcache.Entry, error) {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	held := int64(0)
	for _, ci := range infos {
		first, end := lay.pieces(ci.index)
		held += fileBytes(ci.length()) + fileBytes(int64(metainfo.HashSize+end-first))
	}
	return s.cache.Admit(prefixKey(dgst), held, func() {})
}

// dropPrefix drops the prefix's chunk torrents still open and removes its
// files and their cache entry.
func (s *Swarm) dropPrefix(dgst digest.Digest, chunks []*torrent.Torrent, disk *diskcache.Entry) {
	s.mu.Lock()
	for _, t := range chunks {
		if t != nil {
			t.Drop()
		}
	}
	// The files are this prefix's unless a download of the digest
	// started meanwhile (it would have found the torrents taken).
	if e := s.torrents[dgst]; e == nil || e.growing || e.seed != nil {
		if err := s.downloads.remove(dgst); err != nil {
			s.log.Warn("prefix files not removed", "digest", dgst, "err", err)
		}
	}
	s.mu.Unlock()
	disk.Remove()
}

// addPrefixChunk adds chunk k's torrent (unless past the end or added
// already) into chunks[k] and points it at peers.
func (s *Swarm) addPrefixChunk(infos []*chunkInfo, chunks []*torrent.Torrent, peers []Peer, k int) error {
	if k >= len(infos) || chunks[k] != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	t, err := s.addTorrent(infos[k], s.downloads)
	if err != nil {
		return err
	}
	chunks[k] = t
	s.wantChunk(t, k, len(peers) > s.cfg.MaxConns, 0)
	t.AddPeers(peerInfos(peers))
	return nil
}

// heldChunks asks peers, in random order, for each chunk's metainfo in
// turn (without waiting) and returns those of chunks 0..k-1, the run from
// 0 that some member holds whole. The member that answered one chunk is
// asked first for the next.
func (s *Swarm) heldChunks(ctx context.Context, dgst digest.Digest, lay layout, peers []Peer) []*chunkInfo {
	order := rand.Perm(len(peers))
	var infos []*chunkInfo
	for k := range lay.numChunks() {
		var found *chunkInfo
		for i, p := range order {
			ask, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
			a, err := s.pollChunk(ask, peers[p].HTTPAddr, dgst, lay, k, pollHeld)
			cancel()
			c := a.chunk
			if err != nil && !errors.Is(err, errOwnerForgot) {
				s.log.Debug("chunk metainfo not fetched from a member", "digest", dgst, "chunk", k, "peer", peers[p].HTTPAddr, "err", err)
			}
			if c != nil {
				found = c
				order[0], order[i] = order[i], order[0]
				break
			}
			if ctx.Err() != nil {
				return infos
			}
		}
		if found == nil {
			break
		}
		infos = append(infos, found)
	}
	return infos
}

// copyChunk writes chunk c's bytes to w through a torrent reader: only
// pieces that passed their hash check, waiting for the others until ctx
// ends.
func copyChunk(ctx context.Context, c *chunk, pieceLength int64, w io.Writer) (int64, error) {
	r := c.t.NewReader()
	defer r.Close()
	r.SetContext(ctx)
	r.SetReadahead(pieceLength)
	n, err := io.CopyN(w, r, c.info.length())
	if err != nil && ctx.Err() != nil {
		err = errors.Join(err, context.Cause(ctx))
	}
	return n, err
}
