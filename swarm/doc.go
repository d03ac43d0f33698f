// Package swarm owns the digest-keyed torrents: the piece-length policy,
// metainfo, storage backed by containerd or the cache directory, streaming
// readers and bandwidth limits.
//
// One Swarm per node runs one private anacrolix/torrent client (no DHT, PEX,
// trackers, web seeds or UPnP; only cluster members may connect). Each blob
// is a BitTorrent v1 torrent named by its digest with a piece length fixed by
// the blob size, so every node that holds a blob derives the same infohash.
//
//   - Seed(ctx, digest, size, readerAt) seeds local content in place (no copy,
//     no rehash after the first time: the metainfo is cached in DataDir).
//   - Blob(ctx, ref, digest) — the registry.Source side — streams a missing
//     blob from the seeders the tracker names, in order, from verified pieces
//     only, and withholds the last bytes until the whole digest matches.
//     Blobs under Config.SmallBlobSize come whole over HTTP from one seeder.
//   - PeerHandler serves /peer/v1/metainfo/<digest> and /peer/v1/blobs/<digest>
//     to members, for local content only; it never forwards.
//   - Release(digest) drops a downloaded copy once containerd holds the blob.
//
// It never talks to an upstream registry, never serves unverified bytes as a
// complete blob, and never waits without a bound: no seeder is an immediate
// registry.ErrNotFound, and a read that makes no progress for
// Config.StallTimeout fails so the response is aborted and containerd retries.
//
// # Locks and callbacks
//
// The mutexes, in the order they may be taken (never the reverse): Swarm.mu,
// then the library's client lock, then download.mu, peerCounters.mu,
// uploadCounters.mu or the tracker's lock (read, through Members.IsMember).
//
//   - Swarm.mu guards the torrent table. It is held while torrents are added
//     (AddTorrentOpt, SetInfoBytes, AddPeers) and dropped (Torrent.Drop), so
//     Swarm.mu is taken before the client lock, and nothing the library
//     calls may take Swarm.mu. It is never held while calling the tracker
//     (Seeders is asked before download takes it).
//   - The library calls, with its client lock held: the ReceivedUsefulData
//     callback (peerCounters.record: its own leaf locks; the goroutine that
//     retires a dropped torrent's count reads Torrent.Stats outside them),
//     the IP blocklist (memberAllowList → Members.IsMember, which must not
//     block on anything held across a call into the swarm), each piece's
//     Completion (download.mu, or the seed check's atomic state), a
//     storage's OpenTorrent (from SetInfoBytes, under Swarm.mu too: it opens
//     and rechecks a resumed download's local files) and the slog handler
//     (libraryLog).
//   - Without the client lock: ReadAt (uploads and stream reads), WriteAt
//     (chunks), WriteTo (a piece hash, under the torrent's storage lock),
//     MarkComplete/MarkNotComplete (the library unlocks around them) and the
//     storage's Close. Drop waits, holding the client lock (and here
//     Swarm.mu), for piece hashes and Close in flight, so those touch local
//     files and download.mu only.
//   - seedCheck.mu is held across the first hash of a seeded piece, a read
//     of containerd's content that may be slow. It is taken from ReadAt only;
//     Completion, called under the client lock, reads the state atomically.
//
// The rules: never call the client or a Torrent from a storage method or a
// callback; never take Swarm.mu there — a seed found corrupt during a read
// is dropped on a goroutine of its own (seedCorrupted); never hold
// peerCounters' or uploadCounters' lock across a call into the library.
package swarm
