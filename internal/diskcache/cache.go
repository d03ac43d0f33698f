package diskcache

import (
	"container/list"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrFull is an entry that does not fit: the pinned entries and it together
// exceed the limit.
var ErrFull = errors.New("cache full: what is being read or written leaves no room")

// DefaultShare and DefaultCap give the default limit: a fifth of the data
// dir's filesystem, at most 50 GiB. The data dir only holds copies in
// flight (downloads until containerd commits them, spools the egress serves
// to others, metainfo), while containerd's own store, usually on the same
// filesystem, holds the images; a fifth leaves it the rest, and the cap
// keeps a large disk from filling with blobs nobody pulls again.
const (
	DefaultShare = 5 // the limit is the filesystem's size / DefaultShare
	DefaultCap   = 50 << 30
)

// DefaultLimit is the default limit for a data dir at dir: its
// filesystem's size / DefaultShare, at most DefaultCap.
func DefaultLimit(dir string) (int64, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, fmt.Errorf("size of the filesystem of %s: %w", dir, err)
	}
	return max(min(int64(fs.Blocks)*fs.Bsize/DefaultShare, DefaultCap), 1), nil
}

// Cache accounts the data dir's entries against a limit in bytes.
type Cache struct {
	limit int64

	mu      sync.Mutex
	used    int64
	entries map[string]*Entry
	lru     *list.List // of *Entry; front is the most recently used

	evictions prometheus.Counter
	sizeDesc  *prometheus.Desc
	limitDesc *prometheus.Desc
}

// Entry is one thing the data dir holds: a download, a spool, a metainfo
// file.
type Entry struct {
	c     *Cache
	key   string
	size  int64
	evict func()
	// Guarded by Cache.mu.
	pins int
	elem *list.Element // nil once gone
}

// New returns a cache holding at most limit bytes.
func New(limit int64) (*Cache, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("diskcache: limit %d must be positive", limit)
	}
	return &Cache{
		limit: limit, entries: map[string]*Entry{}, lru: list.New(),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dregistry_cache_evictions_total",
			Help: "Data dir entries (downloads, egress spools, metainfo) deleted to keep within --cache-size, least recently used first.",
		}),
		sizeDesc:  prometheus.NewDesc("dregistry_cache_size_bytes", "Bytes the data dir's entries hold (downloads, egress spools, metainfo).", nil, nil),
		limitDesc: prometheus.NewDesc("dregistry_cache_limit_bytes", "The most the data dir holds (--cache-size).", nil, nil),
	}, nil
}

// Limit is the cache's limit in bytes.
func (c *Cache) Limit() int64 { return c.limit }

// Used is the bytes the entries account now.
func (c *Cache) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// Admit accounts size bytes for key, pinned once (the caller's writer),
// evicting the least recently used unpinned entries until it fits. When it
// cannot fit even then, nothing is evicted and it fails with ErrFull. A
// key already there is an error (the owner keeps one entry per key). evict
// deletes what the entry stands for.
func (c *Cache) Admit(key string, size int64, evict func()) (*Entry, error) {
	if size < 0 || evict == nil {
		return nil, fmt.Errorf("diskcache: admit %s: need a size ≥ 0 and an evict function", key)
	}
	c.mu.Lock()
	if c.entries[key] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("diskcache: %s is accounted already", key)
	}
	var victims []*Entry
	if c.used+size > c.limit {
		// Enough must be free without the pinned entries before any goes.
		var evictable int64
		for el := c.lru.Back(); el != nil && c.used-evictable+size > c.limit; el = el.Prev() {
			if e := el.Value.(*Entry); e.pins == 0 {
				evictable += e.size
			}
		}
		if c.used-evictable+size > c.limit {
			used := c.used
			c.mu.Unlock()
			return nil, fmt.Errorf("diskcache: %s of %d bytes: %d of %d used: %w", key, size, used, c.limit, ErrFull)
		}
		victims = c.chooseLocked(size)
	}
	e := &Entry{c: c, key: key, size: size, evict: evict, pins: 1}
	e.elem = c.lru.PushFront(e)
	c.entries[key] = e
	c.used += size
	c.mu.Unlock()
	c.run(victims)
	return e, nil
}

// Add accounts content already on disk (an earlier run's download, a
// metainfo file), unpinned, in place of an unpinned entry of key. It evicts
// nothing: the next Admit or Unpin makes room.
func (c *Cache) Add(key string, size int64, evict func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries[key]; old != nil {
		if old.pins > 0 {
			return
		}
		c.unlinkLocked(old)
	}
	e := &Entry{c: c, key: key, size: max(size, 0), evict: evict}
	e.elem = c.lru.PushFront(e)
	c.entries[key] = e
	c.used += e.size
}

// Get returns the entry of key, nil if none.
func (c *Cache) Get(key string) *Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[key]
}

// chooseLocked takes unpinned entries, least recently used first, out of
// the account until size more bytes fit (or none is left).
func (c *Cache) chooseLocked(size int64) []*Entry {
	var victims []*Entry
	for el := c.lru.Back(); el != nil && c.used+size > c.limit; {
		prev := el.Prev()
		if e := el.Value.(*Entry); e.pins == 0 {
			c.unlinkLocked(e)
			victims = append(victims, e)
		}
		el = prev
	}
	return victims
}

func (c *Cache) unlinkLocked(e *Entry) {
	if e.elem == nil {
		return
	}
	c.lru.Remove(e.elem)
	e.elem = nil
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
	}
	c.used -= e.size
}

// run calls the victims' evict functions, with no lock held.
func (c *Cache) run(victims []*Entry) {
	for _, e := range victims {
		c.evictions.Inc()
		e.evict()
	}
}

// Key is what the entry stands for.
func (e *Entry) Key() string { return e.key }

// Size is the bytes the entry accounts.
func (e *Entry) Size() int64 { return e.size }

// Pins is how many readers and writers hold the entry now.
func (e *Entry) Pins() int {
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	return e.pins
}

// Pin marks one more reader or writer and makes the entry the most
// recently used. False when the entry is gone (evicted or removed): its
// files are going, the caller must not use them.
func (e *Entry) Pin() bool {
	c := e.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.elem == nil {
		return false
	}
	e.pins++
	c.lru.MoveToFront(e.elem)
	return true
}

// Unpin ends one Pin (or Admit's pin) and makes the entry the most recently
// used. When the cache is over its limit (after an Add), unpinned
// entries are evicted until it is not; so Unpin must not be called holding
// a lock an evict function takes.
func (e *Entry) Unpin() {
	c := e.c
	c.mu.Lock()
	if e.elem == nil || e.pins == 0 {
		c.mu.Unlock()
		return
	}
	e.pins--
	c.lru.MoveToFront(e.elem)
	var victims []*Entry
	if c.used > c.limit {
		victims = c.chooseLocked(0)
	}
	c.mu.Unlock()
	c.run(victims)
}

// Remove takes the entry out of the account without calling its evict:
// its owner deleted the files (containerd holds the blob now, a download
// failed). Pins do not matter; idempotent.
func (e *Entry) Remove() {
	c := e.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unlinkLocked(e)
}

// Describe implements prometheus.Collector.
func (c *Cache) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sizeDesc
	ch <- c.limitDesc
	c.evictions.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Cache) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.sizeDesc, prometheus.GaugeValue, float64(c.Used()))
	ch <- prometheus.MustNewConstMetric(c.limitDesc, prometheus.GaugeValue, float64(c.limit))
	c.evictions.Collect(ch)
}

var _ prometheus.Collector = (*Cache)(nil)
