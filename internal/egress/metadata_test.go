package egress

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/sourcetest"
)

// fakeClock is the tag cache's clock, moved by the test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestResolveCachesTagsAndFallsBackToLastKnown(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1000, 14)
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	const ttl = 3 * time.Second
	members := &cluster{}
	n := newNode(t, "a", true, up.source(), members, func(cfg *FetcherConfig) {
		cfg.TagTTL, cfg.Now = ttl, clock.Now
	})
	members.set(n.member(true))

	resolve := func() (string, error) {
		desc, err := n.source.Resolve(ctx, c.Ref, c.Tag)
		return desc.Digest.String(), err
	}
	want := c.Manifest.Digest.String()
	steps := []struct {
		name     string
		before   func()
		wantErr  error // nil: want the manifest's digest
		wantReqs int   // upstream requests for the tag so far
	}{
		{"first answer comes from upstream", nil, nil, 1},
		{"within the TTL from the cache", func() { clock.add(ttl - time.Second) }, nil, 1},
		{"past the TTL from upstream again", func() { clock.add(2 * time.Second) }, nil, 2},
		{"upstream down: last known answer", func() { clock.add(time.Hour); up.setDown(true) }, nil, 3},
		{"upstream back, tag deleted: not found", func() { up.setDown(false); up.deleteTag(c.Ref, c.Tag) }, oci.ErrNotFound, 4},
		{"down again: no last known answer", func() { up.setDown(true) }, errAny, 5},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		got, err := resolve()
		switch {
		case s.wantErr == nil && (err != nil || got != want):
			t.Errorf("%s: %s, %v; want %s", s.name, got, err, want)
		case s.wantErr == errAny && err == nil:
			t.Errorf("%s: %s, want an error", s.name, got)
		case s.wantErr != nil && s.wantErr != errAny && !errors.Is(err, s.wantErr):
			t.Errorf("%s: %v, want %v", s.name, err, s.wantErr)
		}
		if r := up.tagRequests(); r != s.wantReqs {
			t.Errorf("%s: upstream saw %d tag requests so far, want %d", s.name, r, s.wantReqs)
		}
	}
}

var errAny = errors.New("any error")

// Concurrent resolutions of one tag make one upstream request.
func TestResolveSharesOneUpstreamRequest(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1000, 15)
	n := newNode(t, "a", true, up.source(), &cluster{}, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.fetcher.Resolve(ctx, c.Ref, c.Tag); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if r := up.tagRequests(); r != 1 {
		t.Errorf("upstream saw %d tag requests, want 1", r)
	}
}

// Manifests by digest are cached: asking twice costs one upstream request.
func TestManifestCached(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1000, 16)
	n := newNode(t, "a", true, up.source(), &cluster{}, nil)
	for range 2 {
		m, err := n.fetcher.Manifest(ctx, c.Ref, c.Manifest.Digest)
		if err != nil || m.Digest != c.Manifest.Digest {
			t.Fatalf("manifest: %v", err)
		}
	}
	up.setDown(true)
	if _, err := n.fetcher.Manifest(ctx, c.Ref, c.Manifest.Digest); err != nil {
		t.Errorf("cached manifest with upstream down: %v", err)
	}
}

func TestBoundedForgetsOldest(t *testing.T) {
	b := newBounded[string, int](3, 0, nil)
	for i := range 5 {
		b.put(fmt.Sprint(i), i)
	}
	b.remove("4")
	b.put("4", 40)
	b.put("5", 5)
	for k, want := range map[string]bool{"0": false, "1": false, "2": false, "3": true, "4": true, "5": true} {
		if _, ok := b.get(k); ok != want {
			t.Errorf("key %s present=%v, want %v", k, ok, want)
		}
	}
	if v, _ := b.get("4"); v != 40 {
		t.Errorf("key 4 = %d, want 40", v)
	}
	if len(b.items) != 3 {
		t.Errorf("%d items, want 3", len(b.items))
	}
}

// The manifest cache is bounded in bytes: the oldest manifest goes when a
// new one does not fit, and one larger than the bound is not kept at all.
func TestManifestCacheBoundedInBytes(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c1, c2 := up.content(1000, 21), up.content(1000, 22)
	bound := max(int64(len(c1.Manifest.Content)), int64(len(c2.Manifest.Content))) // room for one
	n := newNode(t, "a", true, up.source(), &cluster{}, func(cfg *FetcherConfig) { cfg.MaxManifestBytes = bound })
	for _, c := range []sourcetest.Content{c1, c2} {
		if _, err := n.fetcher.Manifest(ctx, c.Ref, c.Manifest.Digest); err != nil {
			t.Fatalf("manifest: %v", err)
		}
	}
	up.setDown(true)
	if _, err := n.fetcher.Manifest(ctx, c2.Ref, c2.Manifest.Digest); err != nil {
		t.Errorf("the newest manifest is not cached: %v", err)
	}
	if _, err := n.fetcher.Manifest(ctx, c1.Ref, c1.Manifest.Digest); err == nil {
		t.Errorf("the oldest manifest is still cached beyond %d bytes", bound)
	}

	small := newNode(t, "b", true, up.source(), &cluster{}, func(cfg *FetcherConfig) { cfg.MaxManifestBytes = int64(len(c1.Manifest.Content)) - 1 })
	up.setDown(false)
	if _, err := small.fetcher.Manifest(ctx, c1.Ref, c1.Manifest.Digest); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	up.setDown(true)
	if _, err := small.fetcher.Manifest(ctx, c1.Ref, c1.Manifest.Digest); err == nil {
		t.Errorf("a manifest larger than the cache's %d bytes was kept", int64(len(c1.Manifest.Content))-1)
	}
}

func TestBoundedForgetsOldestBeyondItsBytes(t *testing.T) {
	b := newBounded[string](100, 10, func(v string) int64 { return int64(len(v)) })
	b.put("a", "aaaa")
	b.put("b", "bbbb")
	b.put("c", "cccc") // 12 bytes: a goes
	if _, ok := b.get("a"); ok {
		t.Error("a kept beyond the byte bound")
	}
	b.put("b", "b") // replaced: 5 bytes now
	b.put("d", "dddd")
	for k, want := range map[string]bool{"b": true, "c": true, "d": true} {
		if _, ok := b.get(k); ok != want {
			t.Errorf("key %s present=%v, want %v", k, ok, want)
		}
	}
	if b.bytes != 9 {
		t.Errorf("%d bytes counted, want 9", b.bytes)
	}
	b.put("e", "eeeeeeeeeeee") // larger than the bound: not kept, nothing evicted
	if _, ok := b.get("e"); ok || len(b.items) != 3 {
		t.Errorf("an oversized value changed the cache: %d items", len(b.items))
	}
}
