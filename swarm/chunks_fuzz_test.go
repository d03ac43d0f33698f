package swarm

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // BitTorrent v1 piece hashes are SHA-1 by protocol.
	"strconv"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// fuzzLayout is the real chunk geometry of a blob of size bytes.
func fuzzLayout(size int64) layout {
	return layout{size: size, pieceLength: PieceLength(size), chunkBytes: ChunkBytes(size)}
}

// FuzzParseChunkInfo feeds arbitrary bytes, blob sizes and chunk indexes to
// parseChunkInfo, which checks the chunk metainfo an owner answers while its
// blob grows: no input may panic, a rejection returns no value, and an
// accepted info is exactly the canonical dictionary this node derives for
// (digest, size, chunk), so its infohash is the one every node computes.
func FuzzParseChunkInfo(f *testing.F) {
	for _, size := range []int64{1, minPieceLength + 1, 32 << 20, 32<<20 + 1, 100<<20 + 12345, 8 << 30} {
		lay := fuzzLayout(size)
		for _, k := range []int{0, lay.numChunks() - 1} {
			first, end := lay.pieces(k)
			c, err := newChunkInfo(fuzzDigest, lay, k, bytes.Repeat([]byte{0xcd}, (end-first)*sha1.Size))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(c.infoBytes, size, k)
			f.Add(c.infoBytes, size+1, k)
			f.Add(c.infoBytes, size, k+1)
			f.Add(append(bytes.Clone(c.infoBytes), 'e'), size, k)
			f.Add(bytes.Replace(c.infoBytes, []byte("#"+itoa(k)), []byte("#0"+itoa(k)), 1), size, k)
		}
	}
	f.Add([]byte("d4:name73:"+fuzzDigest.String()+"#0e"), int64(1), 0)
	f.Add([]byte("le"), int64(-1), -1)
	f.Fuzz(func(t *testing.T, in []byte, size int64, k int) {
		if size <= 0 || size > 1<<40 {
			return // Follow refuses these before any metainfo is asked for
		}
		lay := fuzzLayout(size)
		c, err := parseChunkInfo(fuzzDigest, lay, k, in)
		if err != nil {
			if c != nil {
				t.Fatalf("rejection %v came with a value", err)
			}
			return
		}
		off, n := lay.span(k)
		first, end := lay.pieces(k)
		switch {
		case c.digest != fuzzDigest || c.index != k || c.info.Name != chunkName(fuzzDigest, k):
			t.Fatalf("accepted info of chunk %d named %q", k, c.info.Name)
		case !bytes.Equal(c.infoBytes, in) || c.infoHash != metainfo.HashBytes(in):
			t.Fatal("accepted info bytes differ from the input or its infohash")
		case c.off != off || c.length() != n || len(c.info.Files) != 0 || c.info.PieceLength != lay.pieceLength:
			t.Fatalf("accepted chunk at %d of %d bytes, piece length %d; want %d, %d, %d", c.off, c.length(), c.info.PieceLength, off, n, lay.pieceLength)
		case len(c.info.Pieces) != (end-first)*sha1.Size || c.info.NumPieces() != end-first:
			t.Fatalf("accepted chunk with %d hash bytes, want %d", len(c.info.Pieces), (end-first)*sha1.Size)
		}
		if enc, err := bencode.Marshal(c.info); err != nil || !bytes.Equal(enc, in) {
			t.Fatalf("the accepted info does not encode back to its input: %v", err)
		}
	})
}

func itoa(k int) string { return strconv.Itoa(k) }
