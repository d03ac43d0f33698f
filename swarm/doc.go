// Package swarm owns the digest-keyed torrents: the piece-length policy,
// metainfo, storage backed by containerd or the cache directory, streaming
// readers and bandwidth limits.
//
// One Swarm per node runs one private anacrolix/torrent client (no DHT,
// trackers, web seeds or UPnP; PEX on; only cluster members may connect).
// A blob is a row of chunk torrents (chunks.go): chunk k is a BitTorrent v1
// torrent named "<digest>#<k>" holding ChunkBytes of the blob, with the
// piece length the blob's size fixes and exactly its slice of the blob's
// piece hashes, so every node derives the same infohashes from the blob's
// metainfo, and an owner can publish chunk k before it has the rest.
//
//   - Seed(ctx, digest, size, readerAt) seeds local content in place (no copy,
//     no rehash after the first time: the metainfo is cached in DataDir).
//   - Grow(digest, size, file) seeds the egress spool as it grows: Advance
//     hashes pieces on the growth's goroutine and publishes each chunk once
//     its bytes are in; Complete (the digest matched) makes it a seed, Fail
//     drops it. Until Complete it is no seed (Stats, the blob endpoint).
//   - Follow(ctx, digest, size, ownerHTTP) streams a blob while its owner
//     grows it: chunk metainfo by long poll from the owner, pieces from every
//     peer. Blob — the oci.Source side — streams a missing blob through
//     the same chunk torrents from the seeders the tracker names. Both read
//     chunk by chunk from verified pieces only and withhold the last bytes
//     until the whole digest matches. Inside the window a stream needs,
//     pieces go rarest first, and one downloader per piece asks a seeder
//     for it (window.go, the library's designee rule), so the downloaders
//     of one seeder trade; a downloader that finished a chunk is asked as
//     any other, not under the rule; in a swarm wider than a torrent's connections
//     (MaxConns) each node takes them in an order of its own instead.
//     Blobs under Config.SmallBlobSize come
//     whole over HTTP from one seeder, one fetch per digest however many
//     ask, their buffers bounded together by Config.SmallFetchBytes.
//   - Prefix(ctx, digest, size, w) is the egress Fetcher's Prefix: when a
//     candidate takes over a download whose owner died, it copies the
//     chunks the followers hold (from chunk 0 up to the first nobody holds
//     whole; pieces checked by hash) into the new spool, through chunk
//     torrents of its own that it drops, with their files, before it
//     returns — so the candidate's own growth can publish them (prefix.go).
//   - PeerHandler serves /peer/v1/metainfo/<digest> (whole; ?chunk=<k> for
//     one chunk, long-polled while it grows; a download answers ?held=1
//     for a chunk it holds whole, for Prefix) and /peer/v1/blobs/<digest>
//     to members, for local content only; it never forwards.
//   - Seed of a blob this node downloaded drops the downloaded copy: the
//     daemon seeds containerd's copy once containerd holds the blob. A
//     finished, verified download keeps its chunk torrents and their
//     connections, its pieces read from containerd's copy from then on
//     (resourceDownloadLocked); any other is dropped and seeded afresh.
//   - Holdings lists every blob (complete or not) under Swarm.mu alone, and
//     Changes signals when it may have changed, so the daemon announces on
//     change instead of walking Stats.
//   - The data dir is a cache (Config.Cache, --cache-size, cache.go): a
//     download is admitted before its files are made, pinned by every open
//     Blob, and evicted least recently used first; one that does not fit
//     beside the pinned ones fails its Open, so the registry streams the
//     blob from its next source. A metainfo file is admitted before it is
//     written, or not written. Blob itself reserves nothing (a HEAD).
//     A download no stream reads frees its piece buffers at once and is
//     dropped once abandoned (abandon.go).
//
// It never talks to an upstream registry, never serves unverified bytes as a
// complete blob, and never waits without a bound: no seeder is an immediate
// oci.ErrNotFound, a read whose chunk receives no byte for
// Config.StallTimeout fails so the response is aborted and containerd
// retries (watchdog.go), and so does one that waits on a download left
// with no complete peer and no byte arriving for Config.OrphanTimeout
// (orphan.go).
//
// It speaks registry/oci's vocabulary (Swarm is an oci.Source; peer
// requests carry oci.NoForwardHeader) and never imports the registry
// handler, which calls it.
//
// # Locks and callbacks
//
// The mutexes, in the order they may be taken (never the reverse):
// Swarm.admitMu, then Swarm.mu, then the library's client lock, then
// download.mu, peerCounters.mu, uploadCounters.mu, peerTraffic.mu, the data
// dir cache's lock (diskcache: pins, adds and removes under Swarm.mu) or the
// tracker's lock (read, through Members.IsMember). peerTraffic.sampleMu is
// taken before the client lock (Stats and a closed connection's retire read
// connection counts under it; no callback takes it: PeerConnClosed starts
// the retire on a goroutine). A stream's streamReader.rmu is taken with
// neither Swarm.mu nor the client lock held, and before the client lock
// (the library's reader is closed under it, never while a Read uses it);
// the watchdog (watchdog.go) reads the chunk's progress before taking it.
// A chunk's wantMu (the wanting of its pieces: startChunk, widen) is taken
// before Swarm.mu and the client lock, never while holding either.
//
//   - Swarm.admitMu serializes the start of a download (Blob's first Open,
//     Follow): it is held while the cache admits the download, which may
//     evict others — an eviction takes Swarm.mu (evicted) or the egress
//     fetcher's locks — so admission (of a download or a metainfo file)
//     and Unpin (a Blob's Close) are never called holding Swarm.mu.
//   - Prefix takes admitMu only while the cache admits its chunks, asks
//     members with no lock held, and takes Swarm.mu to add and drop its
//     chunk torrents (and remove their files), as a download does; it
//     writes to the caller's writer with no lock held.
//   - Swarm.mu guards the blob table and, per blob, its chunk slots, the
//     change signal and the reason it ended. It is held while chunk torrents
//     are added (AddTorrentOpt, SetInfoBytes; a download chunk's piece
//     priorities and peers follow without it, startChunk) and
//     dropped (Torrent.Drop), and while a new download's space is reserved
//     in the data dir (file I/O, like the OpenTorrent it spares a full
//     disk), so Swarm.mu is taken before the client lock,
//     and nothing the library calls may take Swarm.mu. It is never held
//     while calling the tracker (peers are listed before it is taken), across
//     an HTTP request (the follower's long poll), or while waiting (the peer
//     endpoint's long poll and a stream waiting for a chunk take a snapshot
//     of the change channel and wait without it). A growth's hasher reads
//     the spool without it and takes it only to publish a chunk.
//   - openDownloads.mu (the storage's open downloads by infohash) is a
//     leaf: taken in OpenTorrent and a download's Close (client lock held)
//     and by setIdle (Swarm.mu held), and released before download.mu.
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
//   - A grown chunk's source (content and first-read check, grownStorage)
//     is an atomic pointer: promote and Replace store a new one under
//     Swarm.mu, and the library loads it, lock-free, each time it asks for
//     a piece's storage. A finished download's (download.seed, stored once
//     when containerd's copy takes its place: resourceDownloadLocked) is
//     the same, loaded by each of its piece's storage calls; that Seed
//     takes download.mu and openDownloads.mu under Swarm.mu, as setIdle.
//   - seedCheck.mu is held across the first hash of a seeded piece, a read
//     of containerd's content that may be slow. It is taken from ReadAt only;
//     Completion, called under the client lock, reads the state atomically.
//
// The rules: never call the client or a Torrent from a storage method or a
// callback; never take Swarm.mu there — a seed found corrupt during a read
// is dropped on a goroutine of its own (seedCorrupted); never hold
// peerCounters', uploadCounters' or peerTraffic.mu across a call into the
// library.
package swarm
