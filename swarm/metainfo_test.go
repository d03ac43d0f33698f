package swarm

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/bits"
	"os"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/diskcache"
)

func TestPieceLengthPolicy(t *testing.T) {
	for _, tc := range []struct {
		size, want int64
	}{
		{1, 256 << 10},
		{64 << 20, 256 << 10},
		{64<<20 + 1, 256 << 10},
		{256 << 20, 256 << 10},
		{256<<20 + 1, 1 << 20},
		{1 << 30, 1 << 20},
		{1<<30 + 1, 2 << 20},
		{4 << 30, 2 << 20},
		{16 << 30, 4 << 20},
		{1 << 40, 8 << 20},
	} {
		got := PieceLength(tc.size)
		if got != tc.want {
			t.Errorf("PieceLength(%d) = %d, want %d", tc.size, got, tc.want)
		}
		if bits.OnesCount64(uint64(got)) != 1 {
			t.Errorf("PieceLength(%d) = %d is not a power of two", tc.size, got)
		}
	}
}

func TestInfohashIsTheSameOnEveryNode(t *testing.T) {
	content, dgst := randomBlob(t, 3<<20+12345)
	ctx := context.Background()
	a, err := hashBlob(ctx, dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	// A second node reads the same bytes from a copy of its own.
	b, err := hashBlob(ctx, dgst, int64(len(content)), bytes.NewReader(bytes.Clone(content)))
	if err != nil {
		t.Fatal(err)
	}
	if a.infoHash != b.infoHash || !bytes.Equal(a.infoBytes, b.infoBytes) {
		t.Fatalf("infohashes differ: %s vs %s", a.infoHash.HexString(), b.infoHash.HexString())
	}
	// What a peer receives parses back to the same torrent.
	p, err := parseBlobInfo(dgst, a.infoBytes)
	if err != nil || p.infoHash != a.infoHash {
		t.Fatalf("parse: %v, infohash %v", err, p)
	}
	if a.info.Name != dgst.String() || a.info.Length != int64(len(content)) || a.info.NumPieces() != 13 {
		t.Fatalf("info = %q length %d pieces %d", a.info.Name, a.info.Length, a.info.NumPieces())
	}
}

func TestHashBlobRefusesContentThatIsNotItsDigest(t *testing.T) {
	content, _ := randomBlob(t, 1<<20)
	other := digest.FromString("something else")
	if _, err := hashBlob(context.Background(), other, int64(len(content)), bytes.NewReader(content)); !errors.Is(err, errDigestMismatch) {
		t.Fatalf("err = %v, want digest mismatch", err)
	}
	_, dgst := randomBlob(t, 10)
	if _, err := hashBlob(context.Background(), dgst, 1<<20, bytes.NewReader(content[:1000])); err == nil {
		t.Fatal("short content accepted")
	}
}

func TestParseBlobInfoRejectsForeignMetainfo(t *testing.T) {
	content, dgst := randomBlob(t, 1<<20)
	good, err := hashBlob(context.Background(), dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	encode := func(mod func(*metainfo.Info)) []byte {
		info := good.info
		mod(&info)
		b, err := bencode.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, raw := range map[string][]byte{
		"garbage":        []byte("not bencode"),
		"other name":     encode(func(i *metainfo.Info) { i.Name = "sha256:" + string(bytes.Repeat([]byte("0"), 64)) }),
		"piece length":   encode(func(i *metainfo.Info) { i.PieceLength *= 2 }),
		"missing hashes": encode(func(i *metainfo.Info) { i.Pieces = i.Pieces[:20] }),
		"zero length":    encode(func(i *metainfo.Info) { i.Length = 0 }),
		"extra key":      encode(func(i *metainfo.Info) { i.Source = "x" }),
		"multi-file":     encode(func(i *metainfo.Info) { i.Files = []metainfo.FileInfo{{Length: 1, Path: []string{"a"}}} }),
		"private flag":   encode(func(i *metainfo.Info) { tr := true; i.Private = &tr }),
		"trailing bytes": append(bytes.Clone(good.infoBytes), 'x'),
	} {
		if _, err := parseBlobInfo(dgst, raw); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMetainfoCacheDetectsCorruption(t *testing.T) {
	content, dgst := randomBlob(t, 2<<20)
	b, err := hashBlob(context.Background(), dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	c := metainfoCache{dir: t.TempDir()}
	if _, err := c.load(dgst); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty cache: %v", err)
	}
	if err := c.store(b); err != nil {
		t.Fatal(err)
	}
	got, err := c.load(dgst)
	if err != nil || got.infoHash != b.infoHash {
		t.Fatalf("load: %v", err)
	}
	raw, err := os.ReadFile(c.path(dgst))
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-30] ^= 1 // a flipped bit inside the piece hashes
	if err := os.WriteFile(c.path(dgst), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.load(dgst); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("corrupt cache loaded: %v", err)
	}
}

// A metainfo file is accounted in the data dir's cache before it is
// written: with no room beside what is being read or written it is not
// written at all, and with room it evicts what nobody holds first, so the
// data dir never holds more than the limit, not even for a moment.
func TestMetainfoFileIsAdmittedBeforeItIsWritten(t *testing.T) {
	content, dgst := randomBlob(t, 2<<20)
	b, err := hashBlob(context.Background(), dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	const limit = 64 << 10
	cache, err := diskcache.New(limit)
	if err != nil {
		t.Fatal(err)
	}
	evicted := false
	held, err := cache.Admit("download", limit-100, func() { evicted = true })
	if err != nil {
		t.Fatal(err)
	}
	c := metainfoCache{dir: t.TempDir(), cache: cache}
	if err := c.store(b); !errors.Is(err, diskcache.ErrFull) {
		t.Fatalf("store beside a held entry filling the cache: %v, want ErrFull", err)
	}
	if _, err := os.Stat(c.path(dgst)); !errors.Is(err, fs.ErrNotExist) || cache.Used() != limit-100 || evicted {
		t.Fatalf("a metainfo without room: stat %v, cache %d bytes, evicted %v", err, cache.Used(), evicted)
	}
	held.Unpin()
	if err := c.store(b); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(c.path(dgst))
	if err != nil || !evicted || cache.Used() > limit || cache.Used() < info.Size() {
		t.Fatalf("with room: stat %v, evicted %v, cache %d bytes of %d", err, evicted, cache.Used(), limit)
	}
	// Stored again (rewritten), it is accounted once.
	used := cache.Used()
	if err := c.store(b); err != nil || cache.Used() != used {
		t.Fatalf("stored again: %v, cache %d bytes, was %d", err, cache.Used(), used)
	}
}
