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
package swarm
