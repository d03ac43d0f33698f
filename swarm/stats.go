package swarm

import (
	"net"
	"slices"
	"sort"
	"sync"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"
)

// Stats is a snapshot of the swarm, for `dregistry swarm stats` and tests.
type Stats struct {
	Torrents []TorrentStats
	// UploadedBytes and DownloadedBytes are the piece bytes this node sent
	// to peers and the useful piece bytes it received from them since it
	// started, over every torrent, held or dropped.
	UploadedBytes   int64
	DownloadedBytes int64
	// WastedBytes is the piece bytes received since start that this node
	// did not need: a chunk another peer had delivered first, mostly one a
	// peer had sent before a cancel reached it (a request moved to another
	// peer, counted in RequestsStolen).
	WastedBytes int64
	// RequestsStolen counts requests that moved from a connection that
	// delivered nothing in time to another one.
	RequestsStolen int64
	// AuthRefused counts accepted torrent connections closed because their
	// address is not a member's; AuthFailed those (either way) that failed
	// the cluster-key handshake. Both stay 0 without Config.PeerKeys.
	AuthRefused, AuthFailed uint64
	// Peers is the traffic per peer IP since start, over every torrent.
	Peers map[string]PeerTraffic
}

// TorrentStats describes one blob of this node, summed over its chunk
// torrents.
type TorrentStats struct {
	Digest digest.Digest
	Size   int64
	// Seeding: local content, as opposed to a download. It is exactly what
	// PeerHandler serves (both read entry.servesPeers), so it is what a node
	// may announce as a complete seeder; a verified download is not served
	// over HTTP until the daemon seeds containerd's copy of it.
	Seeding        bool
	Verified       bool  // the whole digest is checked (always true when Seeding)
	BytesCompleted int64 // verified pieces plus chunks of pieces in flight
	PiecesComplete int
	ConnectedPeers int
	// ReceivedFrom counts the useful piece bytes received from each peer IP
	// for this digest; a blob seeded after its download keeps the download's
	// counts (until Unseed), so stats show where a node's copy came from.
	ReceivedFrom map[string]int64
	// UploadedBytes counts the piece bytes sent to peers for this digest;
	// like ReceivedFrom it outlives the torrent (a download replaced by the
	// seed of containerd's copy, an Unseed), see uploadCounters.
	UploadedBytes int64
}

// Stats returns the state of every blob, each summed over its chunk
// torrents.
func (s *Swarm) Stats() Stats {
	type snapshot struct {
		e      *entry
		chunks []*chunk
	}
	s.mu.Lock()
	snaps := make([]snapshot, 0, len(s.torrents))
	for _, e := range s.torrents {
		snaps = append(snaps, snapshot{e: e, chunks: slices.DeleteFunc(slices.Clone(e.chunks), func(c *chunk) bool { return c == nil })})
	}
	s.mu.Unlock()
	cs := s.client.ConnStats()
	st := Stats{UploadedBytes: cs.BytesWrittenData.Int64(), DownloadedBytes: cs.BytesReadUsefulData.Int64(),
		WastedBytes: cs.BytesReadData.Int64() - cs.BytesReadUsefulData.Int64(), RequestsStolen: cs.RequestsStolen.Int64(),
		AuthRefused: s.auth.Refused.Load(), AuthFailed: s.auth.Failed.Load()}
	var all []*torrent.Torrent
	for _, sn := range snaps {
		ts := TorrentStats{
			Digest:       sn.e.digest,
			Size:         sn.e.size(),
			Seeding:      sn.e.servesPeers(),
			Verified:     sn.e.isVerified(),
			ReceivedFrom: map[string]int64{},
		}
		peers := map[string]struct{}{}
		for _, c := range sn.chunks {
			all = append(all, c.t)
			ts.BytesCompleted += c.t.BytesCompleted()
			ts.PiecesComplete += c.t.Stats().PiecesComplete
			for _, pc := range c.t.PeerConns() {
				peers[hostOf(pc.RemoteAddr.String())] = struct{}{}
			}
			for ip, n := range s.received.of(c.info.infoHash) {
				ts.ReceivedFrom[ip] += n
			}
			ts.UploadedBytes += s.received.uploaded.of(c.t)
		}
		ts.ConnectedPeers = len(peers)
		st.Torrents = append(st.Torrents, ts)
	}
	sort.Slice(st.Torrents, func(i, j int) bool { return st.Torrents[i].Digest < st.Torrents[j].Digest })
	st.Peers = s.traffic.sample(all)
	return st
}

func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// peerCounters counts useful bytes received per torrent and peer IP, and
// the bytes uploaded per torrent. The library calls record with its own
// lock held, so it must stay cheap and must never call back into the client.
type peerCounters struct {
	mu     sync.Mutex
	counts map[metainfo.Hash]map[string]int64

	uploaded *uploadCounters
}

func newPeerCounters() *peerCounters {
	return &peerCounters{counts: map[metainfo.Hash]map[string]int64{}, uploaded: newUploadCounters()}
}

func (c *peerCounters) record(ev torrent.ReceivedUsefulDataEvent) {
	// A torrent uploads only pieces it has, so one that received data is
	// followed from then on: its uploads are counted even if it is dropped
	// before anyone asks for Stats.
	c.uploaded.follow(ev.Peer.Torrent())
	ih := ev.Peer.Torrent().InfoHash()
	ip := hostOf(ev.Peer.RemoteAddr.String())
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.counts[ih]
	if m == nil {
		m = map[string]int64{}
		c.counts[ih] = m
	}
	m[ip] += int64(len(ev.Message.Piece))
}

func (c *peerCounters) of(ih metainfo.Hash) map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.counts[ih]))
	for k, v := range c.counts[ih] {
		out[k] = v
	}
	return out
}

func (c *peerCounters) forget(ih metainfo.Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.counts, ih)
}
