// Package swarm owns the digest-keyed torrents: the piece-length policy,
// metainfo, storage backed by containerd or the cache directory, streaming
// readers and bandwidth limits.
package swarm
