// Package egress fetches each blob from the upstream registry once for the
// whole cluster and streams it to every node waiting for it while it
// downloads.
//
// Ownership: a digest (or a repository's tag) is owned by one candidate,
// chosen by rendezvous hashing over the live egress members, or over every
// member when none is marked egress. Only candidates ever call an upstream.
//
//   - Fetcher runs on a candidate: at most one upstream download per digest,
//     spooled to a file in its directory, read by every caller as it grows.
//     The last byte is released only once the sha256 matches; on a mismatch
//     or an upstream failure every reader fails and the spool is deleted.
//     A verified spool is handed to OnComplete (to be seeded and announced)
//     and kept until Release (containerd holds the blob) or until the data
//     dir's cache (FetcherConfig.Cache, --cache-size) evicts it: each spool
//     is pinned while it downloads and while a caller holds it open, then
//     goes least recently used first. When the cache has no room for a
//     spool even after evicting every entry nobody holds, nothing is
//     written: each caller streams the blob from the upstream on its own,
//     verified as it passes (the degraded mode, logged and counted in
//     dregistry_egress_unkept_streams_total; why each caller gets its own
//     stream: unkept.go), so the data dir never holds more than
//     --cache-size and the node never stops serving. After that, a blob
//     this node's containerd holds (FetcherConfig.Local) is served from
//     there, never fetched again for a member that asks late. OnStart, once the size is known, returns
//     a Progress the download drives (Advance as bytes land, Complete once
//     the digest matched, Fail): the daemon seeds the spool while it grows.
//     With a Prefix (the swarm), a download first takes the blob's first
//     chunks from the members that hold them — a candidate taking over
//     from an owner that died mid-blob finds them at its followers — and
//     asks the upstream for the rest only (Range; a 200 or a wrong
//     Content-Range is handled without splicing unchecked bytes); the
//     whole blob, prefix included, is hashed before its last byte is
//     released, and a mismatch makes the next download start from 0
//     (resume.go).
//     Tags are cached for a few seconds and, when
//     the upstream is unreachable, answered from the last known descriptor.
//   - Source is the oci.Source every node uses in place of the plain
//     upstream: it asks the owner (itself, or the owner's peer endpoint with
//     the no-forward header, never with credentials), verifies the digest of
//     what the owner streams, and tries the next candidate when an owner
//     fails before answering. With a Pipeline (the swarm), a big blob is
//     started on the owner without being streamed and followed in the
//     swarm, so waiting nodes trade pieces; a read that fails, or gets no
//     byte within PipelineStall while the blob does not move (neither the
//     swarm nor the owner's upstream fetch), continues from the owners'
//     stream, from where the swarm stopped when it can. Such a read is
//     oci.Progressing: the registry handler waits as long as it moves. An owner without
//     room for the spool says so in its answer to the start, and the
//     node streams from it at once.
//   - Source.PeerHandler serves /peer/v1/egress/{blobs,manifests,tags}/ and
//     POST /peer/v1/egress/fetch/ (start a download, answer its size) to
//     members only (signed token, or a member's address without a key)
//     from this node's Fetcher, never forwarding further.
//
// It never holds a whole blob in memory, never serves unverified bytes as a
// complete blob, never forwards or logs an Authorization header, and never
// waits without a bound.
//
// It speaks registry/oci's vocabulary (its upstream is any oci.Source, the
// registry/upstream client in the daemon) and never imports the registry
// handler, which calls it.
//
// The API:
//
//	NewFetcher(FetcherConfig) (*Fetcher, error) // Fetch, Start, Manifest, Resolve, Release, Close
//	NewSource(SourceConfig) (*Source, error)    // oci.Source named "egress"
//	(*Source).PeerHandler() http.Handler        // mount at PeerPathPrefix
//
// # Locks and callbacks
//
// Fetcher.mu (the spool table) → spool.mu (one download's state) →
// diskcache's lock, never the reverse; metadata.mu and remote bodies' locks
// are leaves. The cache calls a spool's evict (which takes Fetcher.mu, then
// spool.mu, then calls OnEvict with neither held) from whoever made it
// evict: a download admitting its spool, a handle's Close, the swarm
// admitting a download. So nothing here admits or unpins while holding
// Fetcher.mu or spool.mu. None of them is
// held across an upstream or peer request, a wait for a download (readers
// wait on a spool's changed channel with no lock held) or a callback.
// OnStart, the Progress calls, Prefix and OnComplete run on the
// download's goroutine with no lock of the package held, so they may call
// Release. Prefix writes through a prefixWriter, whose lock is taken
// before spool.mu (it records the bytes as the download's progress) and
// never while calling out; Progress.Advance hears of the prefix only once
// Prefix has returned (the swarm drops the prefix's chunk torrents before
// the growth may publish the same ones).
// Advance (called per buffer written) must not block; the others must
// return promptly (record, wake their own loop): the next caller of the
// digest does not wait for them, but the download and Close do. The peer
// handler takes no lock of its own; it reads the cluster through the
// Cluster interface, whose implementation must not call back into the
// Fetcher.
package egress
