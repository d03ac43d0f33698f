package swarm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/dregistry/dregistry/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Resolve is not the swarm's business: tags are resolved upstream.
func (s *Swarm) Resolve(context.Context, registry.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, fmt.Errorf("swarm resolves no tags: %w", registry.ErrNotFound)
}

// Manifest fetches a manifest by digest from the swarm like any small blob.
// The media type is not known here; the registry reads it from the content.
func (s *Swarm) Manifest(ctx context.Context, ref registry.Ref, dgst digest.Digest) (*registry.Manifest, error) {
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
	return &registry.Manifest{MediaType: mediaTypeOf(content), Digest: dgst, Content: content}, nil
}

// Blob finds dgst in the swarm. Local seeds are served directly; otherwise
// the tracker's seeders give the metainfo, small blobs come whole over HTTP
// from one seeder, and larger ones are streamed from the torrent while
// pieces arrive from every seeder. No seeder → registry.ErrNotFound at once.
func (s *Swarm) Blob(ctx context.Context, _ registry.Ref, dgst digest.Digest) (registry.Blob, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("swarm: blob %q: %w", dgst, err)
	}
	s.mu.Lock()
	e, closed := s.torrents[dgst], s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return nil, errClosed
	case e != nil && e.seed != nil:
		return newLocalBlob(e.seed, e.info.size()), nil
	}
	peers := s.peersOf(dgst)
	if e != nil && e.t.Complete().Bool() {
		return &torrentBlob{s: s, e: e}, nil
	}
	if !anyComplete(peers) {
		// Answer at once rather than stall: the registry tries the next
		// source. Partial seeders alone may never hold every piece (their
		// source may be gone), so a download that has only them would hang.
		return nil, fmt.Errorf("swarm: no complete seeder of %s (%d partial): %w", dgst, len(peers), registry.ErrNotFound)
	}
	if e != nil {
		return &torrentBlob{s: s, e: e}, nil
	}
	b, err := s.meta.load(dgst)
	if err != nil {
		if b, err = s.fetchMetainfo(ctx, dgst, peers); err != nil {
			return nil, fmt.Errorf("swarm: %w: %w", err, registry.ErrNotFound)
		}
	}
	if b.size() < s.cfg.SmallBlobSize {
		content, err := s.fetchSmall(ctx, b, peers)
		if err != nil {
			return nil, fmt.Errorf("swarm: %w: %w", err, registry.ErrNotFound)
		}
		return newMemoryBlob(content), nil
	}
	e, err = s.download(b, peers)
	if err != nil {
		return nil, err
	}
	return &torrentBlob{s: s, e: e}, nil
}

// peersOf returns the seeders of dgst other than this node.
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

// download joins b's torrent with download storage (resuming what an earlier
// run left in the data directory) or returns the running download.
func (s *Swarm) download(b *blobInfo, peers []Peer) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if e := s.torrents[b.digest]; e != nil {
		return e, nil
	}
	t, err := s.addTorrent(b, s.downloads)
	if err != nil {
		return nil, err
	}
	e := &entry{info: b, t: t, verified: make(chan struct{}), stop: make(chan struct{})}
	s.torrents[b.digest] = e
	t.AddPeers(peerInfos(peers))
	s.wg.Add(1)
	go s.refreshPeers(e)
	s.log.Debug("downloading", "digest", b.digest, "size", b.size(), "seeders", len(peers))
	return e, nil
}

// refreshPeers adds seeders that appear while a download runs, so a seeder
// that vanishes is replaced. It ends when the download is verified, dropped
// or the swarm closes.
func (s *Swarm) refreshPeers(e *entry) {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.PeerRefresh)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			e.t.AddPeers(peerInfos(s.peersOf(e.info.digest)))
		case <-e.verified:
			return
		case <-e.stop:
			return
		case <-s.stop:
			return
		}
	}
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
	if err := s.meta.store(e.info); err != nil {
		s.log.Warn("metainfo not cached", "digest", e.info.digest, "err", err)
	}
	s.log.Info("download verified", "digest", e.info.digest, "size", e.info.size())
}

// discard drops a download whose bytes do not match its digest.
func (s *Swarm) discard(e *entry, cause error) {
	s.log.Error("download discarded", "digest", e.info.digest, "err", cause)
	s.meta.remove(e.info.digest)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.torrents[e.info.digest] == e {
		s.received.forget(e.info.infoHash)
		if err := s.dropLocked(e.info.digest, e); err != nil {
			s.log.Warn("discard", "digest", e.info.digest, "err", err)
		}
	}
}

var _ registry.Source = (*Swarm)(nil)

// mediaTypeOf reads a manifest's media type from its mediaType field, or
// infers it the way containerd does for documents that omit it.
func mediaTypeOf(content []byte) string {
	var doc struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	switch {
	case json.Unmarshal(content, &doc) != nil:
		return "application/octet-stream"
	case doc.MediaType != "":
		return doc.MediaType
	case doc.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	default:
		return ocispec.MediaTypeImageManifest
	}
}
