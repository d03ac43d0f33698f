package swarm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/registry/oci"
)

// cachedNode is a downloader whose data dir holds at most limit bytes.
func cachedNode(t *testing.T, tr *tracker, ip string, limit int64) (*node, *diskcache.Cache) {
	t.Helper()
	c, err := diskcache.New(limit)
	if err != nil {
		t.Fatal(err)
	}
	return startNode(t, tr, ip, "", func(cfg *Config) { cfg.Cache = c; cfg.chunkBytes = 2 << 20 }), c
}

// downloadFiles lists the data dir's files of dgst's download.
func downloadFiles(t *testing.T, n *node, dgst digest.Digest) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(n.downloads.dir, string(dgst.Algorithm()), dgst.Encoded()+".*"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func holds(n *node, dgst digest.Digest) bool {
	for _, ts := range n.Stats().Torrents {
		if ts.Digest == dgst {
			return true
		}
	}
	return false
}

// fetch reads dgst whole through one Blob, which it closes (the registry's
// GET), or returns the Open error.
func fetch(t *testing.T, n *node, dgst digest.Digest) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := n.Blob(ctx, refForTests(), dgst)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	rc, err := b.Open(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// A HEAD (Blob without Open) answers the size from the metainfo and
// neither starts the download nor reserves any disk; the GET's Open does.
func TestBlobReservesNothingUntilOpen(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 3<<20)
	a := startNode(t, tr, "127.0.0.2", "", func(c *Config) { c.chunkBytes = 2 << 20 })
	seed(t, a, tr, content, dgst)
	d, cache := cachedNode(t, tr, "127.0.0.3", 64<<20)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := d.Blob(ctx, refForTests(), dgst)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != int64(len(content)) {
		t.Fatalf("size %d, want %d", b.Size(), len(content))
	}
	if files := downloadFiles(t, d, dgst); len(files) > 0 || holds(d, dgst) || cache.Get(downloadKey(dgst)) != nil {
		t.Fatalf("a Blob alone started the download: files %v, cache %d bytes", files, cache.Used())
	}
	b.Close()
	got, err := fetch(t, d, dgst)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)
	if e := cache.Get(downloadKey(dgst)); e == nil || e.Size() < int64(len(content)) {
		t.Fatalf("the download is not accounted: %v", e)
	}
}

// With room for one download, the next one evicts the least recently used
// (its files go, the swarm forgets it); one still open is never evicted,
// and a download that does not fit beside it fails its Open, leaving
// nothing, so the registry streams the blob from its next source.
func TestCacheEvictsLeastRecentlyUsedDownloadAndNeverAnOpenOne(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", func(c *Config) { c.chunkBytes = 2 << 20 })
	var contents [3][]byte
	var dgsts [3]digest.Digest
	for i := range contents {
		contents[i], dgsts[i] = randomBlob(t, 3<<20)
		seed(t, a, tr, contents[i], dgsts[i])
	}
	limit := int64(5 << 20) // one 3 MiB download and its metainfo, not two
	d, cache := cachedNode(t, tr, "127.0.0.3", limit)

	got, err := fetch(t, d, dgsts[0])
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, contents[0])
	if len(downloadFiles(t, d, dgsts[0])) == 0 {
		t.Fatal("the first download left no files")
	}
	got, err = fetch(t, d, dgsts[1])
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, contents[1])
	if files := downloadFiles(t, d, dgsts[0]); len(files) > 0 || holds(d, dgsts[0]) {
		t.Fatalf("the least recently used download was not evicted: files %v", files)
	}
	if used := cache.Used(); used > limit {
		t.Fatalf("cache holds %d bytes, limit %d", used, limit)
	}

	// Blob 1 is served again and stays open: blob 2 has no room.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open, err := d.Blob(ctx, refForTests(), dgsts[1])
	if err != nil {
		t.Fatal(err)
	}
	rc, err := open.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fetch(t, d, dgsts[2]); !errors.Is(err, diskcache.ErrFull) {
		t.Fatalf("a download with no room beside an open one: err = %v, want the cache full", err)
	}
	if files := downloadFiles(t, d, dgsts[2]); len(files) > 0 || holds(d, dgsts[2]) {
		t.Fatalf("a download that did not fit left %v", files)
	}
	if !holds(d, dgsts[1]) {
		t.Fatal("an open download was evicted")
	}
	all, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, all, contents[1])
	rc.Close()
	open.Close()
	got, err = fetch(t, d, dgsts[2])
	if err != nil {
		t.Fatalf("once nothing is open: %v", err)
	}
	mustEqual(t, got, contents[2])
	if holds(d, dgsts[1]) || cache.Used() > limit {
		t.Fatalf("after the third download: blob 1 held %v, cache %d of %d", holds(d, dgsts[1]), cache.Used(), limit)
	}
}

// Once containerd holds a blob (the daemon seeds its copy), the download's
// files are deleted and leave the cache's account.
func TestSeedOfTheLocalCopyDropsTheDownloadFromTheCache(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 3<<20)
	a := startNode(t, tr, "127.0.0.2", "", func(c *Config) { c.chunkBytes = 2 << 20 })
	seed(t, a, tr, content, dgst)
	d, cache := cachedNode(t, tr, "127.0.0.3", 64<<20)
	if _, err := fetch(t, d, dgst); err != nil {
		t.Fatal(err)
	}
	seed(t, d, tr, content, dgst)
	if files := downloadFiles(t, d, dgst); len(files) > 0 {
		t.Fatalf("download files left once the local copy is seeded: %v", files)
	}
	if e := cache.Get(downloadKey(dgst)); e != nil {
		t.Fatalf("the download is still accounted: %d bytes", e.Size())
	}
	if used := cache.Used(); used > 64<<10 {
		t.Fatalf("cache holds %d bytes; only metainfo should be left", used)
	}
	var _ oci.Blob = (*torrentBlob)(nil)
}

// What an earlier run left in the data dir counts against the cache at
// start, and goes first when a new download needs the room.
func TestEarlierRunsDownloadIsAccountedAndEvicted(t *testing.T) {
	tr := newTracker()
	small := func(c *Config) { c.chunkBytes = 2 << 20 }
	a := startNode(t, tr, "127.0.0.2", "", small)
	left, leftDgst := randomBlob(t, 12<<20)
	seed(t, a, tr, left, leftDgst)
	other, otherDgst := randomBlob(t, 3<<20)
	seed(t, a, tr, other, otherDgst)
	dir := t.TempDir()

	d := startNode(t, tr, "127.0.0.3", dir, small)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := d.Blob(ctx, refForTests(), leftDgst)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := b.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	b.Close()
	d.stop()

	cache, err := diskcache.New(14 << 20)
	if err != nil {
		t.Fatal(err)
	}
	d = startNode(t, tr, "127.0.0.3", dir, func(c *Config) { small(c); c.Cache = cache })
	if e := cache.Get(leftoverKey(leftDgst)); e == nil || e.Size() < 12<<20 {
		t.Fatalf("the earlier run's download is not accounted (cache %d bytes)", cache.Used())
	}
	got, err := fetch(t, d, otherDgst)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, other)
	if files := downloadFiles(t, d, leftDgst); len(files) > 0 {
		t.Fatalf("the earlier run's download was not evicted for room: %v", files)
	}
	if used := cache.Used(); used > 14<<20 {
		t.Fatalf("cache holds %d bytes, limit %d", used, 14<<20)
	}
}

// An earlier run's download of a blob this node then seeds (containerd
// holds it after the restart) is deleted, files and account: it was taken
// out of the account when the seed came, and stayed on disk beside newer
// downloads (the soak saw a member's data dir at 128 MiB of its 96 MiB).
func TestSeedDropsTheEarlierRunsDownloadOfTheBlob(t *testing.T) {
	tr := newTracker()
	small := func(c *Config) { c.chunkBytes = 2 << 20 }
	a := startNode(t, tr, "127.0.0.2", "", small)
	left, leftDgst := randomBlob(t, 12<<20)
	seed(t, a, tr, left, leftDgst)
	dir := t.TempDir()

	d := startNode(t, tr, "127.0.0.3", dir, small)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := d.Blob(ctx, refForTests(), leftDgst)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := b.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	b.Close()
	d.stop()

	cache, err := diskcache.New(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	d = startNode(t, tr, "127.0.0.3", dir, func(c *Config) { small(c); c.Cache = cache })
	if e := cache.Get(leftoverKey(leftDgst)); e == nil {
		t.Fatal("the earlier run's download is not accounted")
	}
	if files := downloadFiles(t, d, leftDgst); len(files) == 0 {
		t.Fatal("the earlier run left no download files")
	}
	if err := d.Seed(ctx, leftDgst, int64(len(left)), bytes.NewReader(left)); err != nil {
		t.Fatal(err)
	}
	if files := downloadFiles(t, d, leftDgst); len(files) > 0 {
		t.Errorf("the earlier run's download stays beside the seed: %v", files)
	}
	if e := cache.Get(leftoverKey(leftDgst)); e != nil {
		t.Errorf("the earlier run's download is still accounted: %d bytes", e.Size())
	}
	got, err := fetch(t, d, leftDgst)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, left)
}
