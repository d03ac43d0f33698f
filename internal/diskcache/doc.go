// Package diskcache keeps the account of what the daemon's data dir holds
// and decides what goes when it is full: the data dir is a cache bounded by
// --cache-size. Swarm downloads, egress spools and metainfo files are its
// entries; each owner (the swarm, the egress fetcher) admits an entry
// before it writes, pins it while it is read or written, and removes it
// when it deletes the files itself (containerd holds the blob now).
//
//   - Admit accounts a new entry, pinned once for its writer, evicting the
//     least recently used unpinned entries to make room; ErrFull when even
//     that cannot make room (the caller streams without keeping instead:
//     nothing is admitted over the limit, so the data dir never holds
//     more than --cache-size).
//   - Add accounts content found on disk (an earlier run's), unpinned.
//   - Entry.Pin and Unpin bracket every reader and writer; an entry is
//     evicted only while it has no pin. Use (pin or unpin) makes it the
//     most recently used.
//
// It never deletes a file itself: eviction calls the owner's evict function,
// which deletes what the entry stands for. It never blocks on I/O.
//
// # Locks
//
// Cache.mu guards the table and the LRU list and is a leaf: it is never
// held while calling out. Owners may pin, unpin (see below), add and
// remove while holding their own locks (Swarm.mu, Fetcher.mu, spool.mu):
// Cache.mu is taken after them. Evict functions run with no lock of this
// package held, on the goroutine of the Admit or Unpin that chose the
// victim; so Admit and Unpin must not be called while holding a
// lock an evict function takes (the owner's table lock). Pin, Add and
// Remove never evict.
package diskcache
