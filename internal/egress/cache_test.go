package egress

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/registry/oci"
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

func fetchAll(t *testing.T, n *node, c sourcetest.Content) oci.Blob {
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
	// Each spool takes one 4 KiB block: the cache holds three.
	n, cache, ev := cachedFetcher(t, up, 3*4096)

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
	if used := cache.Used(); used > 3*4096 {
		t.Fatalf("cache holds %d bytes, limit %d", used, 3*4096)
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

// unkeptStreams reads dregistry_egress_unkept_streams_total of f.
func unkeptStreams(t *testing.T, f *Fetcher) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(f.Metrics()); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() == "dregistry_egress_unkept_streams_total" {
			return fam.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("dregistry_egress_unkept_streams_total not gathered")
	return 0
}

// spoolDirBytes is what the node's spool directory holds.
func spoolDirBytes(t *testing.T, n *node) int64 {
	t.Helper()
	var sum int64
	entries, err := os.ReadDir(n.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			sum += info.Size()
		}
	}
	return sum
}

// A spool the cache cannot hold, even after evicting every entry nobody
// holds, is not written: the data dir never holds more than the limit. The
// node still serves: each caller streams the blob from the upstream on its
// own, verified as it passes, from any offset, and the mode is counted.
// Once there is room again, the blob is spooled as usual.
func TestSpoolOverTheLimitStreamsWithoutBeingKept(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int64
		held  int // bytes of a spool held open by a caller first (0: none)
		size  int
	}{
		{name: "larger than the whole cache", limit: 1000, size: 5000},
		{name: "the rest of the cache is held", limit: 3 * 4096, held: 2 * 4096, size: 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := newTestUpstream(t)
			c := up.content(tc.size, 31)
			n, cache, _ := cachedFetcher(t, up, tc.limit)
			var held oci.Blob
			heldContent := up.content(max(tc.held, 1), 32)
			if tc.held > 0 {
				held = fetchAll(t, n, heldContent)
				defer held.Close()
			}
			usedBefore, filesBefore := cache.Used(), spoolDirBytes(t, n)

			// Two callers at once, each held by the upstream halfway: no
			// spool file appears, the cache accounts nothing more.
			release := up.hold(int64(tc.size) / 2)
			defer release()
			b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Size() != int64(tc.size) {
				t.Fatalf("size %d, want %d", b.Size(), tc.size)
			}
			type result struct {
				got []byte
				err error
			}
			offsets := []int64{0, int64(tc.size) - 700}
			results := make([]chan result, len(offsets))
			for i, off := range offsets {
				results[i] = make(chan result, 1)
				go func() {
					got, err := readAllAt(ctx, b, off)
					results[i] <- result{got, err}
				}()
			}
			waitFor(t, func() bool { return up.gets(c.BlobDigest()) >= len(offsets) }, "every caller's upstream stream")
			if used, files := cache.Used(), spoolDirBytes(t, n); used != usedBefore || files != filesBefore || spooled(t, n, c.BlobDigest()) {
				t.Errorf("while streaming: cache %d bytes (was %d), spool dir %d bytes (was %d), files %v",
					used, usedBefore, files, filesBefore, n.spoolFiles(t))
			}
			release()
			for i, off := range offsets {
				r := <-results[i]
				if r.err != nil || !bytes.Equal(r.got, c.Blob[off:]) {
					t.Errorf("read from %d: %d bytes, %v; want the blob from there", off, len(r.got), r.err)
				}
			}
			if got := unkeptStreams(t, n.fetcher); got != float64(len(offsets)) {
				t.Errorf("dregistry_egress_unkept_streams_total = %v, want %d", got, len(offsets))
			}
			if used := cache.Used(); used > tc.limit || spooled(t, n, c.BlobDigest()) || spoolDirBytes(t, n) > tc.limit {
				t.Errorf("after streaming: cache %d bytes of %d, files %v", used, tc.limit, n.spoolFiles(t))
			}
			if tc.held == 0 {
				return
			}
			// Room again (the held spool may go): the blob is spooled once
			// more, and kept.
			held.Close()
			waitUnpinned(t, cache, heldContent.BlobDigest(), 0)
			fetchAll(t, n, c).Close()
			if !spooled(t, n, c.BlobDigest()) || cache.Used() > tc.limit {
				t.Errorf("with room again: files %v, cache %d bytes", n.spoolFiles(t), cache.Used())
			}
		})
	}
}

// Without a spool, a body that does not hash to the digest fails the
// caller before the blob's last byte, from any offset.
func TestUnkeptStreamFailsOnACorruptBodyBeforeTheLastByte(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(5000, 33)
	n, cache, _ := cachedFetcher(t, up, 1000)
	up.setFault(faultCorrupt, 100)
	b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, off := range []int64{0, 4000} {
		got, err := readAllAt(ctx, b, off)
		if err == nil || int64(len(got)) >= int64(len(c.Blob))-off {
			t.Errorf("read from %d: %d bytes, %v; want a failure before the last byte", off, len(got), err)
		}
	}
	if cache.Used() != 0 || len(n.spoolFiles(t)) != 0 {
		t.Errorf("cache %d bytes, files %v", cache.Used(), n.spoolFiles(t))
	}
}

// A member following the owner's download in the swarm is told at the
// start that the owner serves the blob without a spool (no chunk will be
// published), and streams it from the owner at once instead of waiting
// for the follow to stall.
func TestPipelineStreamsFromAnOwnerWithoutRoom(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(2<<20+5, 34)
	cache, err := diskcache.New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	members := &cluster{}
	owner := newNode(t, "owner", true, up.source(), members, func(fc *FetcherConfig) { fc.Cache = cache })
	pipe := &fakePipeline{owner: owner, ref: c.Ref, mode: followServe}
	bUp := &forbiddenUpstream{}
	follower := newNodeWith(t, "follower", false, bUp, members, nil, func(sc *SourceConfig) {
		sc.Pipeline, sc.PipelineMin, sc.PipelineStall = pipe, 1, time.Minute
	})
	members.set(owner.member(true), follower.member(false))

	b, err := follower.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := readAllAt(ctx, b, 0)
	if err != nil || !bytes.Equal(got, c.Blob) {
		t.Fatalf("read %d bytes, %v; want the blob", len(got), err)
	}
	if calls := pipe.followed(); len(calls) != 0 {
		t.Errorf("Follow called %d times, want none", len(calls))
	}
	if got := owner.requests("GET", blobsPath); got != 1 {
		t.Errorf("owner's blob stream asked %d times, want 1", got)
	}
	if n := unkeptStreams(t, owner.fetcher); n != 1 {
		t.Errorf("dregistry_egress_unkept_streams_total = %v, want 1", n)
	}
	if len(owner.spoolFiles(t)) != 0 || cache.Used() != 0 || len(owner.done.list()) != 0 {
		t.Errorf("owner kept files %v, cache %d bytes, completed %d", owner.spoolFiles(t), cache.Used(), len(owner.done.list()))
	}
	if n := bUp.called(); n != 0 {
		t.Errorf("the follower called its upstream %d times", n)
	}
}
