package swarm

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // BitTorrent v1 piece hashes are SHA-1 by protocol.
	"fmt"
	"strconv"
	"strings"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"
)

// A blob travels as a row of chunk torrents: chunk k covers bytes
// [k·ChunkBytes, min((k+1)·ChunkBytes, size)) and is a v1 torrent of its own
// whose info is a pure function of (digest, k, blob size, piece hashes):
// named "<digest>#<k>", the blob's piece length, the chunk's length, and
// exactly the slice of the blob's piece list that falls in it. So a node
// holding the blob's metainfo derives every chunk's infohash, and the egress
// can publish chunk k as soon as its bytes are in, before it has the rest.

// ChunkBytes is the chunk length of a blob of size bytes. Like PieceLength
// it must be the same on every node (it fixes the infohashes), and it is a
// multiple of the blob's piece length, so chunks hold whole pieces.
//
// A cold rollout cannot end before the last chunk, published only once the
// upstream delivered all of it, has crossed one link: about B/U + C/L. The
// egress can send only published chunks, so it stays about a chunk behind
// the upstream. So a chunk is small next to the blob: 8 MiB up to 256 MiB
// (a 128 MiB layer: 16 chunks), 32 MiB above (a 1 GiB layer: 32 torrents,
// not hundreds). With 16 MiB chunks, 8 nodes on 12 Mbit/s links took
// 1.30-1.33x one pull cold and 1.18-1.21x warm; with 8 MiB, 1.24x and
// 1.17-1.19x (docs/benchmarks.md, "8 MiB chunks"). The rollout model
// (internal/rolloutmodel; 200 Mbit/s links) agrees for the cold rollout
// at every N but 50 (1.09-1.20x against 1.16-1.26x up to 1,000 nodes; at
// 50, 1.21x against 1.16x) and puts the warm one at 1.12x for N = 100 and
// 1,000 (1.05-1.07x with 16 MiB).
// For 1 GiB 32 MiB beats 16 MiB in the model (1.11x against 1.14x at N=8).
// Nodes must agree on it: a node with another geometry derives other
// infohashes and refuses the other's chunk metainfo (parseChunkInfo), so
// during an upgrade across a change of it the two versions do not share
// blobs of that size.
func ChunkBytes(size int64) int64 {
	if size <= 256<<20 {
		return 8 << 20
	}
	return 32 << 20
}

// layout is the chunk geometry of one blob.
type layout struct {
	size, pieceLength, chunkBytes int64
}

// layout returns the geometry of a blob of size bytes on this node (tests
// shrink the chunks through Config.chunkBytes; it is never exposed).
func (s *Swarm) layout(size int64) layout {
	cb := ChunkBytes(size)
	if s.cfg.chunkBytes > 0 {
		cb = s.cfg.chunkBytes
	}
	return layout{size: size, pieceLength: PieceLength(size), chunkBytes: cb}
}

func (l layout) numChunks() int { return int((l.size + l.chunkBytes - 1) / l.chunkBytes) }

// span is the blob offset and length of chunk k.
func (l layout) span(k int) (off, length int64) {
	off = int64(k) * l.chunkBytes
	return off, min(l.chunkBytes, l.size-off)
}

// pieces is the range [first, end) of the blob's pieces in chunk k.
func (l layout) pieces(k int) (first, end int) {
	off, n := l.span(k)
	return int(off / l.pieceLength), int((off + n + l.pieceLength - 1) / l.pieceLength)
}

func (l layout) chunkOf(off int64) int { return int(off / l.chunkBytes) }

// chunkInfo is the torrent of one chunk of a blob.
type chunkInfo struct {
	digest    digest.Digest
	index     int
	off       int64 // in the blob
	info      metainfo.Info
	infoBytes []byte
	infoHash  metainfo.Hash
}

func (c *chunkInfo) length() int64 { return c.info.Length }

func chunkName(dgst digest.Digest, k int) string { return dgst.String() + "#" + strconv.Itoa(k) }

// parseChunkName splits a torrent name "<digest>#<k>".
func parseChunkName(name string) (digest.Digest, int, error) {
	d, k, ok := strings.Cut(name, "#")
	if !ok {
		return "", 0, fmt.Errorf("torrent %q is not a chunk name", name)
	}
	dgst, err := digest.Parse(d)
	if err != nil {
		return "", 0, fmt.Errorf("torrent %q: %w", name, err)
	}
	idx, err := strconv.Atoi(k)
	if err != nil || idx < 0 || strconv.Itoa(idx) != k {
		return "", 0, fmt.Errorf("torrent %q: bad chunk index", name)
	}
	return dgst, idx, nil
}

// newChunkInfo fixes every field of chunk k's info dictionary; pieces are
// the chunk's own piece hashes.
func newChunkInfo(dgst digest.Digest, l layout, k int, pieces []byte) (*chunkInfo, error) {
	if k < 0 || k >= l.numChunks() {
		return nil, fmt.Errorf("chunk %d of %s: out of range (%d chunks)", k, dgst, l.numChunks())
	}
	off, n := l.span(k)
	info := metainfo.Info{
		Name:        chunkName(dgst, k),
		PieceLength: l.pieceLength,
		Length:      n,
		Pieces:      pieces,
	}
	b, err := bencode.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode info of chunk %d of %s: %w", k, dgst, err)
	}
	return &chunkInfo{digest: dgst, index: k, off: off, info: info, infoBytes: b, infoHash: metainfo.HashBytes(b)}, nil
}

// parseChunkInfo checks chunk k's info bytes from a peer (or disk) as
// strictly as parseBlobInfo: they must be exactly what this node derives
// for (dgst, size, k), apart from the piece hashes.
func parseChunkInfo(dgst digest.Digest, l layout, k int, infoBytes []byte) (*chunkInfo, error) {
	if k < 0 || k >= l.numChunks() {
		return nil, fmt.Errorf("chunk %d of %s: out of range (%d chunks)", k, dgst, l.numChunks())
	}
	if err := checkBencodeNesting(infoBytes, maxInfoNesting); err != nil {
		return nil, fmt.Errorf("metainfo of chunk %d of %s: %w", k, dgst, err)
	}
	var info metainfo.Info
	if err := bencode.Unmarshal(infoBytes, &info); err != nil {
		return nil, fmt.Errorf("metainfo of chunk %d of %s: %w", k, dgst, err)
	}
	if info.Name != chunkName(dgst, k) {
		return nil, fmt.Errorf("metainfo of chunk %d of %s names %q", k, dgst, info.Name)
	}
	_, n := l.span(k)
	if info.Length != n || len(info.Files) > 0 {
		return nil, fmt.Errorf("metainfo of chunk %d of %s: length %d, want %d", k, dgst, info.Length, n)
	}
	if info.PieceLength != l.pieceLength {
		return nil, fmt.Errorf("metainfo of chunk %d of %s: piece length %d, policy says %d", k, dgst, info.PieceLength, l.pieceLength)
	}
	first, end := l.pieces(k)
	if want := (end - first) * sha1.Size; len(info.Pieces) != want {
		return nil, fmt.Errorf("metainfo of chunk %d of %s: %d bytes of piece hashes, want %d", k, dgst, len(info.Pieces), want)
	}
	c, err := newChunkInfo(dgst, l, k, info.Pieces)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(c.infoBytes, infoBytes) {
		return nil, fmt.Errorf("metainfo of chunk %d of %s is not in canonical form", k, dgst)
	}
	return c, nil
}

// chunk derives chunk k's info from the whole blob's.
func (b *blobInfo) chunk(l layout, k int) (*chunkInfo, error) {
	first, end := l.pieces(k)
	if end*sha1.Size > len(b.info.Pieces) {
		return nil, fmt.Errorf("chunk %d of %s: metainfo holds too few pieces", k, b.digest)
	}
	return newChunkInfo(b.digest, l, k, b.info.Pieces[first*sha1.Size:end*sha1.Size])
}

// joinChunks builds the whole blob's info from all of its chunks' infos.
func joinChunks(dgst digest.Digest, size int64, chunks []*chunkInfo) (*blobInfo, error) {
	var pieces []byte
	for k, c := range chunks {
		if c == nil {
			return nil, fmt.Errorf("blob %s: chunk %d unknown", dgst, k)
		}
		pieces = append(pieces, c.info.Pieces...)
	}
	return newBlobInfo(dgst, size, pieces)
}
