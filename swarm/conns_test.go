package swarm

import (
	"testing"

	"github.com/anacrolix/torrent"
	"github.com/opencontainers/go-digest"
)

// Two downloaders of one blob each find the other through the tracker and
// both dial: each chunk torrent keeps one connection between them, not one
// per direction, and no node keeps dialing peers it has. Every flow on a
// node's capped uplink takes its share of the link's queue, and with two
// per pair a rollout ran 6 (up to 19) TCP flows per node pair at once
// (docs/benchmarks.md).
func TestNodesKeepOneConnectionPerPeerAndChunkTorrent(t *testing.T) {
	tr := newTracker()
	k := testKeys(t, 1)
	// The seeder sends 1 MiB/s, so the download lasts seconds.
	small := func(c *Config) { keyed(k)(c); c.chunkBytes = 2 << 20 }
	a := startNode(t, tr, "127.0.4.31", "", func(c *Config) { small(c); c.UploadLimit = 1 << 20 })
	content, dgst := randomBlob(t, 6<<20)
	seed(t, a, tr, content, dgst)
	b := startNode(t, tr, "127.0.4.32", "", small)
	c := startNode(t, tr, "127.0.4.33", "", small)
	tr.announce(dgst, b)
	tr.announce(dgst, c)
	doneB, doneC := drainInBackground(t, b, dgst), drainInBackground(t, c, dgst)

	paired := false
	waitFor(t, "the downloaders to connect to each other", func() bool {
		for _, pair := range [][2]*node{{b, c}, {c, b}} {
			conns := connsByPeer(pair[0], dgst)
			for ih, byPeer := range conns {
				for id, n := range byPeer {
					if n > 1 {
						t.Fatalf("%s holds %d connections to peer %q in chunk torrent %s", pair[0].ip, n, id, ih)
					}
				}
			}
			paired = paired || connectedTo(pair[0], pair[1], dgst)
		}
		return paired
	})
	for _, done := range []<-chan error{doneB, doneC} {
		if err := <-done; err != nil {
			t.Fatalf("download: %v", err)
		}
	}
	// Three pairs of nodes share three chunk torrents: 9 connections do.
	// Both ends of a pair may dial (each found the other through the
	// tracker or through PEX) before either sees the other's connection,
	// and the library drops one: runs accepted 15-18, and at most 3 per
	// pair and torrent are allowed. A refresh (every 100 ms here) dials no
	// peer a torrent is connected to, and no peer at all from a complete
	// torrent, whose downloaders dial it (a complete peer would be dropped
	// at once, as mutually complete); before, the nodes accepted over 250.
	var accepted uint64
	for _, n := range []*node{a, b, c} {
		accepted += n.auth.Accepted.Load()
	}
	if accepted > 27 {
		t.Errorf("the nodes accepted %d torrent connections for 3 chunk torrents between 3 nodes; want at most 27 (9 needed)", accepted)
	}
}

// connsByPeer counts n's connections in each chunk torrent of dgst by the
// remote peer's ID.
func connsByPeer(n *node, dgst digest.Digest) map[string]map[torrent.PeerID]int {
	out := map[string]map[torrent.PeerID]int{}
	for _, ch := range joinedChunks(n, dgst) {
		byPeer := map[torrent.PeerID]int{}
		for _, pc := range ch.t.PeerConns() {
			byPeer[pc.PeerID]++
		}
		out[ch.t.Name()] = byPeer
	}
	return out
}

// connectedTo reports whether n has a connection to other in a chunk
// torrent of dgst.
func connectedTo(n, other *node, dgst digest.Digest) bool {
	for _, ch := range joinedChunks(n, dgst) {
		for _, pc := range ch.t.PeerConns() {
			if hostOf(pc.RemoteAddr.String()) == other.ip {
				return true
			}
		}
	}
	return false
}

// joinedChunks is the chunk torrents of dgst that n has joined.
func joinedChunks(n *node, dgst digest.Digest) []*chunk {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*chunk
	if e := n.torrents[dgst]; e != nil {
		for _, ch := range e.chunks {
			if ch != nil {
				out = append(out, ch)
			}
		}
	}
	return out
}
