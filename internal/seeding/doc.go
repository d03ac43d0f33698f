// Package seeding is the node's control loop: it keeps what containerd
// holds, what the egress fetched and what the swarm seeds in step, and makes
// the tracker announce exactly what the swarm can serve.
//
// It reacts to events only:
//   - containerd's inventory reports digests added or removed (Changed;
//     the inventory itself follows containerd's events and resyncs, since
//     garbage collection sends none): the blob is seeded from containerd's
//     content, or no longer;
//   - the egress fetcher reports a verified download (EgressComplete), the
//     file its growth seeded while it arrived (EgressGrown), or a spool the
//     data dir's cache evicted (SpoolEvicted); Growing is its OnStart;
//   - the swarm signals that its blobs changed (swarm.Changes): the
//     announcer reads the swarm's Holdings — under the swarm's lock only,
//     never the torrent client's — and tells the tracker only what differs
//     from what it announced last.
//
// The only timer is the backoff of a blob whose Seed failed (a read error
// of containerd's content, a full metainfo dir): nothing signals that such
// an error went away, so it is retried while the blob stays held, from
// Config.RetryMin doubling to Config.RetryMax, one timer for the earliest.
//
// It never fetches, never serves, and never announces a blob the peer
// endpoints would not serve whole as complete.
//
// # Goroutines and locks
//
// Run starts two loops: the seed loop owns held, retry and the files the
// swarm seeds (hashing a multi-GiB blob takes a while, so it is its own
// goroutine); the announcer owns what was announced, so a seed being hashed
// never delays an announcement.
//
// Seeder.mu guards only the events not yet applied (pending, spooled,
// grown, evicted, reannounce) and is a leaf: held for a map update, never
// across a call. The callbacks run under other components' locks —
// Changed under the inventory's notifyMu, the egress callbacks on a
// download's goroutine, SpoolEvicted under the data dir cache's lock —
// so they take mu, record, signal a buffered channel without blocking,
// and return. The loops call the swarm (Swarm.mu, then the torrent
// client's lock), the tracker (its lock; it calls memberlist only outside
// it), containerd and the fetcher's Release with no lock of this package
// held. Never call the inventory, the swarm, the tracker or the fetcher
// while holding mu.
package seeding
