package swarm

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // BitTorrent v1 piece hashes are SHA-1 by protocol.
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"
)

// fuzzDigest is the blob every fuzzed metainfo claims to describe: the
// committed corpus names it, so it must stay fixed.
var fuzzDigest = digest.FromString("dregistry metainfo fuzz")

// fuzzInfoSeeds are canonical info dictionaries of fuzzDigest at the sizes
// where the piece policy changes, plus near misses of them.
func fuzzInfoSeeds(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	for _, size := range []int64{1, minPieceLength, minPieceLength + 1, 3<<20 + 12345, 64<<20 + 1, 8 << 30} {
		pieces := bytes.Repeat([]byte{0xab}, int(numPieces(size, PieceLength(size))*sha1.Size))
		b, err := newBlobInfo(fuzzDigest, size, pieces)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b.infoBytes)
	}
	good := out[1]
	out = append(out,
		append(bytes.Clone(good), 'e'),
		good[:len(good)-1],
		bytes.Replace(good, []byte("6:lengthi"), []byte("6:lengthi-"), 1),
		bytes.Replace(good, []byte(fuzzDigest.Encoded()), []byte(digest.FromString("other").Encoded()), 1),
		[]byte("d4:name71:"+fuzzDigest.String()+"e"),
		[]byte("d6:lengthi99999999999999999999ee"),
		[]byte("d6:pieces9999999999:e"),
		[]byte("le"), []byte(""),
	)
	return out
}

// FuzzParseBlobInfo feeds arbitrary bytes to parseBlobInfo, which checks
// the info dictionary a peer answers (and the metainfo cache holds): no
// input may panic, a rejection returns no value, and an accepted info is
// exactly the canonical dictionary this node would derive for the digest,
// so its infohash is the one every node computes. The seed corpus is in
// testdata/fuzz/FuzzParseBlobInfo.
func FuzzParseBlobInfo(f *testing.F) {
	for _, s := range fuzzInfoSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := parseBlobInfo(fuzzDigest, in)
		if err != nil {
			if b != nil {
				t.Fatalf("rejection %v came with a value", err)
			}
			return
		}
		checkCanonicalInfo(t, b, in)
	})
}

// checkCanonicalInfo asserts b is what newBlobInfo derives for its fields
// and that in are its exact bytes.
func checkCanonicalInfo(t *testing.T, b *blobInfo, in []byte) {
	t.Helper()
	if b.digest != fuzzDigest || b.info.Name != fuzzDigest.String() {
		t.Fatalf("accepted info for %s named %q", b.digest, b.info.Name)
	}
	if !bytes.Equal(b.infoBytes, in) || b.infoHash != metainfo.HashBytes(in) {
		t.Fatalf("accepted info bytes differ from the input or its infohash")
	}
	if b.size() <= 0 || b.info.TotalLength() != b.size() || len(b.info.Files) != 0 {
		t.Fatalf("accepted info of length %d (total %d, %d files)", b.size(), b.info.TotalLength(), len(b.info.Files))
	}
	if b.info.PieceLength != PieceLength(b.size()) || int64(b.info.NumPieces()) != numPieces(b.size(), b.info.PieceLength) ||
		int64(len(b.info.Pieces)) != numPieces(b.size(), b.info.PieceLength)*sha1.Size {
		t.Fatalf("accepted info: piece length %d, %d pieces, %d hash bytes for %d bytes",
			b.info.PieceLength, b.info.NumPieces(), len(b.info.Pieces), b.size())
	}
	again, err := newBlobInfo(b.digest, b.size(), b.info.Pieces)
	if err != nil || again.infoHash != b.infoHash {
		t.Fatalf("re-deriving the accepted info: %v", err)
	}
	if enc, err := bencode.Marshal(b.info); err != nil || !bytes.Equal(enc, in) {
		t.Fatalf("the accepted info does not encode back to its input: %v", err)
	}
}

// FuzzMetainfoCache puts arbitrary bytes where the metainfo cache keeps
// fuzzDigest's file (a torn write, a flipped bit, another version): load
// either reports fs.ErrNotExist, so the blob is hashed again, or returns an
// info whose file is exactly what store writes for it. Random bytes almost
// never carry a valid checksum line, so each input is also written as the
// body of a file whose checksum is right: that reaches the info parser
// behind the checksum (a file written whole by another version, or bytes
// that changed before they were hashed), and load must then agree with
// parseBlobInfo. The seed corpus is in testdata/fuzz/FuzzMetainfoCache.
func FuzzMetainfoCache(f *testing.F) {
	for _, info := range fuzzInfoSeeds(f) {
		sum := sha256.Sum256(info)
		good := append([]byte(metainfoHeader+hex.EncodeToString(sum[:])+"\n"), info...)
		f.Add(good)
		f.Add(good[:len(good)/2])
		f.Add(append(bytes.Clone(good), '\n'))
		f.Add(info)
	}
	f.Add([]byte(metainfoHeader + "\n"))
	// One directory per fuzzing process: inputs run one after another in it.
	c := metainfoCache{dir: f.TempDir()}
	stored := metainfoCache{dir: f.TempDir()}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p := c.path(fuzzDigest)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		checkCacheBody(t, c, raw)
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := c.load(fuzzDigest)
		if err != nil {
			if b != nil || !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("load = %v, %v: a bad cache file must read as missing", b, err)
			}
			return
		}
		_, body, _ := bytes.Cut(raw, []byte("\n"))
		checkCanonicalInfo(t, b, body)
		// What load accepted is byte for byte what store writes.
		if err := stored.store(b); err != nil {
			t.Fatal(err)
		}
		written, err := os.ReadFile(stored.path(fuzzDigest))
		if err != nil || !bytes.Equal(written, raw) {
			t.Fatalf("load accepted a file store would not write (%v)", err)
		}
		if back, err := stored.load(fuzzDigest); err != nil || back.infoHash != b.infoHash {
			t.Fatalf("store then load: %v", err)
		}
	})
}

// checkCacheBody writes body under a correct checksum line and loads it:
// load accepts exactly what parseBlobInfo accepts, a rejection reads as a
// missing file, and an accepted body is the canonical info of fuzzDigest.
func checkCacheBody(t *testing.T, c metainfoCache, body []byte) {
	t.Helper()
	sum := sha256.Sum256(body)
	file := append([]byte(metainfoHeader+hex.EncodeToString(sum[:])+"\n"), body...)
	if err := os.WriteFile(c.path(fuzzDigest), file, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := c.load(fuzzDigest)
	parsed, perr := parseBlobInfo(fuzzDigest, body)
	if err != nil {
		if b != nil || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("load of a checksummed body = %v, %v: a bad body must read as missing", b, err)
		}
		if perr == nil {
			t.Fatalf("load refused a checksummed body the parser accepts: %v", err)
		}
		return
	}
	if perr != nil || parsed.infoHash != b.infoHash {
		t.Fatalf("load accepted a body the parser refuses: %v", perr)
	}
	checkCanonicalInfo(t, b, body)
}

// A peer's metainfo reply may be up to maxMetainfoBytes of anything; lists
// nested that deep once overflowed the decoder's stack, a fatal error no
// recover catches, so one bad peer could kill every node asking it.
func TestParseBlobInfoRejectsDeepNesting(t *testing.T) {
	levels := maxMetainfoBytes/2 - 16
	for name, in := range map[string][]byte{
		"lists":    append(bytes.Repeat([]byte("l"), levels), bytes.Repeat([]byte("e"), levels)...),
		"in a key": append(append([]byte("d4:name"), bytes.Repeat([]byte("l"), levels)...), bytes.Repeat([]byte("e"), levels+1)...),
		"just over": append(append([]byte("d4:name"), bytes.Repeat([]byte("l"), maxInfoNesting)...),
			bytes.Repeat([]byte("e"), maxInfoNesting+1)...),
	} {
		if len(in) > maxMetainfoBytes {
			t.Fatalf("%s: %d bytes, more than a peer may send", name, len(in))
		}
		if b, err := parseBlobInfo(fuzzDigest, in); err == nil || b != nil {
			t.Errorf("%s: accepted %d levels of nesting", name, levels)
		}
	}
}
