package swarm

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // BitTorrent v1 piece hashes are SHA-1 by protocol.
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"
)

// The torrents are BitTorrent v1 (SHA-1 piece hashes). anacrolix/torrent
// v1.61.0 verifies v2 torrents but cannot create them, a pure-v2 transfer
// panicked inside the library and a hybrid still checks pieces with SHA-1;
// the blob's own sha256 is checked end to end instead, so SHA-1 only guards
// pieces against accidents and lets a bad peer be identified.

// blobInfo is the torrent of one blob: the bencoded info dictionary every
// node derives identically, and its infohash.
type blobInfo struct {
	digest    digest.Digest
	info      metainfo.Info
	infoBytes []byte
	infoHash  metainfo.Hash
}

func (b *blobInfo) size() int64 { return b.info.Length }

// newBlobInfo fixes every field of the info dictionary, so the bytes (and the
// infohash) depend only on the digest, the size and the content.
func newBlobInfo(dgst digest.Digest, size int64, pieces []byte) (*blobInfo, error) {
	info := metainfo.Info{
		Name:        dgst.String(),
		PieceLength: PieceLength(size),
		Length:      size,
		Pieces:      pieces,
	}
	b, err := bencode.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode info of %s: %w", dgst, err)
	}
	return &blobInfo{digest: dgst, info: info, infoBytes: b, infoHash: metainfo.HashBytes(b)}, nil
}

// parseBlobInfo checks info bytes that came from a peer or from disk: they
// must be exactly what this node would derive for dgst, apart from the piece
// hashes it cannot know without the content.
func parseBlobInfo(dgst digest.Digest, infoBytes []byte) (*blobInfo, error) {
	if err := checkBencodeNesting(infoBytes, maxInfoNesting); err != nil {
		return nil, fmt.Errorf("metainfo of %s: %w", dgst, err)
	}
	var info metainfo.Info
	if err := bencode.Unmarshal(infoBytes, &info); err != nil {
		return nil, fmt.Errorf("metainfo of %s: %w", dgst, err)
	}
	if info.Name != dgst.String() {
		return nil, fmt.Errorf("metainfo of %s names %q", dgst, info.Name)
	}
	if info.Length <= 0 || len(info.Files) > 0 {
		return nil, fmt.Errorf("metainfo of %s: not a single blob of positive length", dgst)
	}
	if info.PieceLength != PieceLength(info.Length) {
		return nil, fmt.Errorf("metainfo of %s: piece length %d, policy says %d", dgst, info.PieceLength, PieceLength(info.Length))
	}
	if want := numPieces(info.Length, info.PieceLength) * sha1.Size; int64(len(info.Pieces)) != want {
		return nil, fmt.Errorf("metainfo of %s: %d bytes of piece hashes, want %d", dgst, len(info.Pieces), want)
	}
	b, err := newBlobInfo(dgst, info.Length, info.Pieces)
	if err != nil {
		return nil, err
	}
	// Re-encoding must give the same bytes, or the infohash would differ
	// from the one every other node derives (extra keys, other order).
	if !bytes.Equal(b.infoBytes, infoBytes) {
		return nil, fmt.Errorf("metainfo of %s is not in canonical form", dgst)
	}
	return b, nil
}

// maxInfoNesting bounds how deeply lists and dictionaries may nest in info
// bytes before they are decoded. The canonical info is one flat dictionary;
// the bencode decoder recurses per level, so a peer's 4 MiB of "llll…" would
// overflow the stack and kill the daemon (found with FuzzParseBlobInfo).
const maxInfoNesting = 4

// checkBencodeNesting walks b's bencode tokens without decoding them and
// fails on anything that is not bencode or nests deeper than max.
func checkBencodeNesting(b []byte, max int) error {
	depth := 0
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == 'd' || c == 'l':
			if depth++; depth > max {
				return fmt.Errorf("bencode nests deeper than %d levels", max)
			}
			i++
		case c == 'e':
			if depth--; depth < 0 {
				return fmt.Errorf("bencode: unbalanced end at offset %d", i)
			}
			i++
		case c == 'i':
			end := bytes.IndexByte(b[i:], 'e')
			if end < 0 {
				return fmt.Errorf("bencode: unterminated integer at offset %d", i)
			}
			i += end + 1
		case c >= '0' && c <= '9':
			colon := bytes.IndexByte(b[i:], ':')
			if colon < 0 {
				return fmt.Errorf("bencode: string length without ':' at offset %d", i)
			}
			n, err := strconv.ParseUint(string(b[i:i+colon]), 10, 63)
			if err != nil || n > uint64(len(b)-i-colon-1) {
				return fmt.Errorf("bencode: bad string length at offset %d", i)
			}
			i += colon + 1 + int(n)
		default:
			return fmt.Errorf("bencode: unexpected byte %q at offset %d", c, i)
		}
	}
	return nil
}

// errDigestMismatch reports content whose hash is not its digest.
var errDigestMismatch = errors.New("content does not match its digest")

// hashBlob reads size bytes from ra once and computes both the piece hashes
// and the whole-blob digest; the digest is hashed on a second goroutine so
// the two hashes use both cores. It fails if the content is not dgst.
func hashBlob(ctx context.Context, dgst digest.Digest, size int64, ra io.ReaderAt) (*blobInfo, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w", dgst, err)
	}
	if size <= 0 {
		return nil, fmt.Errorf("blob %s: size %d must be positive", dgst, size)
	}
	pieceLength := PieceLength(size)
	pieces := make([]byte, 0, numPieces(size, pieceLength)*sha1.Size)

	const inFlight = 3
	free := make(chan []byte, inFlight)
	for range inFlight {
		free <- make([]byte, pieceLength)
	}
	toDigest := make(chan []byte, inFlight)
	digested := make(chan digest.Digest, 1)
	go func() {
		h := dgst.Algorithm().Hash()
		for buf := range toDigest {
			h.Write(buf)
			free <- buf[:cap(buf)]
		}
		digested <- digest.NewDigest(dgst.Algorithm(), h)
	}()

	var readErr error
	ph := sha1.New() //nolint:gosec
	for off := int64(0); off < size; off += pieceLength {
		if err := ctx.Err(); err != nil {
			readErr = err
			break
		}
		buf := (<-free)[:min(pieceLength, size-off)]
		// ReadAt may report io.EOF along with the last full buffer.
		if n, err := ra.ReadAt(buf, off); n < len(buf) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			readErr = fmt.Errorf("read blob %s at %d: %w", dgst, off, err)
			free <- buf
			break
		}
		pieces = appendHash(pieces, ph, buf)
		toDigest <- buf
	}
	close(toDigest)
	got := <-digested
	if readErr != nil {
		return nil, readErr
	}
	if got != dgst {
		return nil, fmt.Errorf("blob %s: %w (got %s)", dgst, errDigestMismatch, got)
	}
	return newBlobInfo(dgst, size, pieces)
}

func appendHash(dst []byte, h hash.Hash, b []byte) []byte {
	h.Reset()
	h.Write(b)
	return h.Sum(dst)
}

func numPieces(size, pieceLength int64) int64 { return (size + pieceLength - 1) / pieceLength }
