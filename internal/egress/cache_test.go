package egress

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/registry"
	"github.com/dregistry/dregistry/registry/sourcetest"
)

// evictions records OnEvict.
type evictions struct {
	mu   sync.Mutex
	list []digest.Digest
}

func (e *evictions) record(d digest.Digest) { e.mu.Lock(); e.list = append(e.list, d); e.mu.Unlock() }

func (e *evictions) has(d digest.Digest) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.list, d)
}

func cachedFetcher(t *testing.T, up *testUpstream, limit int64) (*node, *diskcache.Cache, *evictions) {
	t.Helper()
	cache, err := diskcache.New(limit)
	if err != nil {
		t.Fatal(err)
	}
	ev := &evictions{}
	n := newNode(t, "a", true, up.source(), &cluster{}, func(cfg *FetcherConfig) { cfg.Cache, cfg.OnEvict = cache, ev.record })
	return n, cache, ev
}

// waitUnpinned waits until only want callers hold the spool of d (the
// download lets go of its pin just after its readers see the end).
func waitUnpinned(t *testing.T, cache *diskcache.Cache, d digest.Digest, want int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if e := cache.Get(spoolKey(d)); e != nil && e.Pins() == want {
			return
		}
	}
	t.Fatalf("spool of %s: never held by %d only", d, want)
}

func spooled(t *testing.T, n *node, d digest.Digest) bool {
	t.Helper()
	return slices.Contains(n.spoolFiles(t), strings.Replace(d.String(), ":", "-", 1))
}

func fetchAll(t *testing.T, n *node, c sourcetest.Content) registry.Blob {
	t.Helper()
	ctx := testCtx(t)
	b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAllAt(ctx, b, 0)
	if err != nil || !bytes.Equal(got, c.Blob) {
		t.Fatalf("fetch %s: %d bytes, %v", c.BlobDigest(), len(got), err)
	}
	return b
}

// Spools are kept while a caller holds them, then evicted least recently
// used first when a new one needs the room; there is no other rule (the
// "two other seeders" release is gone).
func TestSpoolsAreEvictedLeastRecentlyUsedNeverWhileHeld(t *testing.T) {
	up := newTestUpstream(t)
	var cs [4]sourcetest.Content
	for i := range cs {
		cs[i] = up.content(1000, uint64(20+i))
	}
	n, cache, ev := cachedFetcher(t, up, 3000)

	held := fetchAll(t, n, cs[0]) // the least recently used, but held
	waitUnpinned(t, cache, cs[0].BlobDigest(), 1)
	for _, c := range cs[1:3] {
		fetchAll(t, n, c).Close()
		waitUnpinned(t, cache, c.BlobDigest(), 0)
	}
	fetchAll(t, n, cs[3]).Close()
	if !ev.has(cs[1].BlobDigest()) || spooled(t, n, cs[1].BlobDigest()) {
		t.Fatalf("the least recently used free spool was not evicted: evicted %v, files %v", ev.list, n.spoolFiles(t))
	}
	if ev.has(cs[0].BlobDigest()) || !spooled(t, n, cs[0].BlobDigest()) {
		t.Fatalf("a held spool was evicted: evicted %v", ev.list)
	}
	if used := cache.Used(); used > 3000 {
		t.Fatalf("cache holds %d bytes, limit 3000", used)
	}
	// The held copy still reads whole, and a fetch after an eviction
	// downloads the blob again.
	if got, err := readAllAt(testCtx(t), held, 0); err != nil || !bytes.Equal(got, cs[0].Blob) {
		t.Fatalf("held spool: %d bytes, %v", len(got), err)
	}
	held.Close()
	fetchAll(t, n, cs[1]).Close()
	if got := up.gets(cs[1].BlobDigest()); got != 2 {
		t.Fatalf("evicted blob fetched %d times from upstream, want 2", got)
	}
}

// A spool larger than the whole cache still serves (the node never stops
// serving): it streams to its callers and is gone once none holds it.
func TestSpoolOverTheLimitStreamsWithoutBeingKept(t *testing.T) {
	up := newTestUpstream(t)
	c := up.content(5000, 31)
	n, cache, ev := cachedFetcher(t, up, 1000)
	b := fetchAll(t, n, c)
	waitUnpinned(t, cache, c.BlobDigest(), 1)
	if !spooled(t, n, c.BlobDigest()) {
		t.Fatal("a spool being read is gone")
	}
	b.Close()
	if !ev.has(c.BlobDigest()) || spooled(t, n, c.BlobDigest()) || cache.Used() != 0 {
		t.Fatalf("over the limit and free: evicted %v, files %v, cache %d bytes", ev.list, n.spoolFiles(t), cache.Used())
	}
}
