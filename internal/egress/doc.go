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
//     and kept until Release; after that, a blob this node's containerd
//     holds (FetcherConfig.Local) is served from there, never fetched again
//     for a member that asks late. Tags are cached for a few seconds and, when
//     the upstream is unreachable, answered from the last known descriptor.
//   - Source is the registry.Source every node uses in place of the plain
//     upstream: it asks the owner (itself, or the owner's peer endpoint with
//     the no-forward header, never with credentials), verifies the digest of
//     what the owner streams, and tries the next candidate when an owner
//     fails before answering.
//   - Source.PeerHandler serves /peer/v1/egress/{blobs,manifests,tags}/ to
//     members from this node's Fetcher, never forwarding further.
//
// It never holds a whole blob in memory, never serves unverified bytes as a
// complete blob, never forwards or logs an Authorization header, and never
// waits without a bound.
//
// The API:
//
//	NewFetcher(FetcherConfig) (*Fetcher, error) // Fetch, Manifest, Resolve, Release, Close
//	NewSource(SourceConfig) (*Source, error)    // registry.Source named "egress"
//	(*Source).PeerHandler() http.Handler        // mount at PeerPathPrefix
//
// # Locks and callbacks
//
// Fetcher.mu (the spool table) → spool.mu (one download's state), never the
// reverse; metadata.mu and remote bodies' locks are leaves. None of them is
// held across an upstream or peer request, a wait for a download (readers
// wait on a spool's changed channel with no lock held) or a callback.
// OnComplete runs on the download's goroutine with no lock of the package
// held, so it may call Release; it must still return promptly (record the
// spool, wake its own loop): the next caller of the digest does not wait for
// it, but Close does. The peer handler takes no lock of its own; it reads
// the cluster through the Cluster interface, whose implementation must not
// call back into the Fetcher.
package egress
