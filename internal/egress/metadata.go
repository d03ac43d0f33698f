package egress

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/dregistry/dregistry/registry/oci"
)

// metadata answers tags and manifests from upstream for the owner: one
// upstream request at a time per tag or manifest, tags cached briefly,
// manifests (immutable) kept in a small cache.
type metadata struct {
	cfg       FetcherConfig
	flights   singleflight.Group
	mu        sync.Mutex
	tags      *bounded[string, tagAnswer]
	manifests *bounded[string, *oci.Manifest]
}

type tagAnswer struct {
	desc ocispec.Descriptor
	at   time.Time
}

func newMetadata(cfg FetcherConfig) *metadata {
	return &metadata{cfg: cfg,
		tags: newBounded[string, tagAnswer](cfg.MaxTags, 0, nil),
		manifests: newBounded[string](cfg.MaxManifests, cfg.MaxManifestBytes,
			func(m *oci.Manifest) int64 { return int64(len(m.Content)) })}
}

// shared runs fn once for every caller of key; each caller waits at most
// until its ctx ends, and fn itself at most LookupTimeout.
func shared[T any](ctx context.Context, m *metadata, key string, fn func(context.Context) (T, error)) (T, error) {
	ch := m.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.LookupTimeout)
		defer cancel()
		return fn(fctx)
	})
	var zero T
	select {
	case r := <-ch:
		if r.Err != nil {
			return zero, r.Err
		}
		return r.Val.(T), nil
	case <-ctx.Done():
		return zero, context.Cause(ctx)
	}
}

// Resolve answers a tag: from the cache within TagTTL, else from upstream;
// when the upstream fails other than with not-found, the last known answer.
func (f *Fetcher) Resolve(ctx context.Context, ref oci.Ref, tag string) (ocispec.Descriptor, error) {
	m := f.meta
	key := ref.String() + ":" + tag
	m.mu.Lock()
	last, known := m.tags.get(key)
	m.mu.Unlock()
	if known && m.cfg.Now().Sub(last.at) < m.cfg.TagTTL {
		return last.desc, nil
	}
	desc, err := shared(ctx, m, "tag\x00"+key, func(ctx context.Context) (ocispec.Descriptor, error) {
		desc, err := m.cfg.Upstream.Resolve(ctx, ref, tag)
		if err != nil {
			return desc, err
		}
		if _, err := oci.ParseDigest(desc.Digest.String()); err != nil {
			return desc, fmt.Errorf("upstream resolved %s to a bad digest: %w", key, err)
		}
		m.mu.Lock()
		m.tags.put(key, tagAnswer{desc: desc, at: m.cfg.Now()})
		m.mu.Unlock()
		return desc, nil
	})
	switch {
	case err == nil:
		return desc, nil
	case errors.Is(err, oci.ErrNotFound):
		m.mu.Lock()
		m.tags.remove(key)
		m.mu.Unlock()
		return desc, err
	case known && ctx.Err() == nil:
		f.log.Info("upstream unreachable, answering the last known tag", "tag", key,
			"digest", last.desc.Digest, "age", m.cfg.Now().Sub(last.at), "err", err)
		return last.desc, nil
	}
	return desc, fmt.Errorf("egress: resolve %s: %w", key, err)
}

// Manifest returns a manifest by digest, verified, from the cache or upstream.
func (f *Fetcher) Manifest(ctx context.Context, ref oci.Ref, dgst digest.Digest) (*oci.Manifest, error) {
	if _, err := oci.ParseDigest(dgst.String()); err != nil {
		return nil, err
	}
	m := f.meta
	key := ref.String() + "@" + dgst.String()
	m.mu.Lock()
	cached, ok := m.manifests.get(key)
	m.mu.Unlock()
	if ok {
		return cached, nil
	}
	return shared(ctx, m, "manifest\x00"+key, func(ctx context.Context) (*oci.Manifest, error) {
		man, err := m.cfg.Upstream.Manifest(ctx, ref, dgst)
		if err != nil {
			return nil, err
		}
		if man == nil || man.Digest != dgst || dgst.Algorithm().FromBytes(man.Content) != dgst {
			return nil, fmt.Errorf("egress: upstream manifest %s does not match its digest", dgst)
		}
		m.mu.Lock()
		m.manifests.put(key, man)
		m.mu.Unlock()
		return man, nil
	})
}

// bounded is a map that forgets its oldest keys beyond max entries, and
// beyond maxBytes of values when it has a size function.
type bounded[K comparable, V any] struct {
	max      int
	maxBytes int64         // with size; 0: no byte bound
	size     func(V) int64 // nil: values count no bytes
	bytes    int64         // of the values held
	items    map[K]slot[V]
	order    []keySeq[K] // oldest first; entries of removed keys are skipped
	next     uint64
}

type slot[V any] struct {
	v    V
	seq  uint64
	size int64
}

type keySeq[K comparable] struct {
	k   K
	seq uint64
}

func newBounded[K comparable, V any](max int, maxBytes int64, size func(V) int64) *bounded[K, V] {
	return &bounded[K, V]{max: max, maxBytes: maxBytes, size: size, items: map[K]slot[V]{}}
}

func (b *bounded[K, V]) get(k K) (V, bool) { s, ok := b.items[k]; return s.v, ok }

func (b *bounded[K, V]) remove(k K) {
	if s, ok := b.items[k]; ok {
		b.bytes -= s.size
		delete(b.items, k)
	}
}

func (b *bounded[K, V]) put(k K, v V) {
	var n int64
	if b.size != nil {
		n = b.size(v)
		if b.maxBytes > 0 && n > b.maxBytes {
			b.remove(k) // larger than the whole cache: not kept
			return
		}
	}
	if s, ok := b.items[k]; ok {
		b.bytes += n - s.size
		b.items[k] = slot[V]{v: v, seq: s.seq, size: n}
	} else {
		b.next++
		b.items[k] = slot[V]{v: v, seq: b.next, size: n}
		b.bytes += n
		b.order = append(b.order, keySeq[K]{k, b.next})
	}
	for len(b.items) > b.max || len(b.order) > 2*b.max || (b.maxBytes > 0 && b.bytes > b.maxBytes) {
		old := b.order[0]
		b.order = b.order[1:]
		if s, ok := b.items[old.k]; ok && s.seq == old.seq {
			b.remove(old.k)
		}
	}
}
