package swarm

import (
	"sync"

	"github.com/anacrolix/torrent"
)

// PeerTraffic is the piece bytes exchanged with one peer address since this
// node started, over every torrent.
type PeerTraffic struct {
	Uploaded   int64 // piece bytes sent to the peer
	Downloaded int64 // useful piece bytes received from it
}

// peerTraffic keeps PeerTraffic per peer IP. Downloads are counted from the
// library's ReceivedUsefulData callback (record). Uploads have no callback:
// the library counts them per connection, so sample adds what each live
// connection wrote since it was last read, and retire adds a closed
// connection's remainder and forgets it.
//
// Entries are never removed: only members' addresses get past the
// handshake, so the map is as large as the cluster's addresses over the
// node's life.
type peerTraffic struct {
	// sampleMu serializes sample and retire: it is held across listing a
	// torrent's connections and reading their counts (the library's lock),
	// so a connection retired is never read again. No callback takes it.
	sampleMu sync.Mutex
	written  map[*torrent.PeerConn]int64 // count already added, per open connection

	mu   sync.Mutex // a leaf: record takes it under the client lock
	byIP map[string]PeerTraffic
}

func newPeerTraffic() *peerTraffic {
	return &peerTraffic{written: map[*torrent.PeerConn]int64{}, byIP: map[string]PeerTraffic{}}
}

// record is a ReceivedUsefulData callback, called with the client lock
// held: it only updates a map.
func (p *peerTraffic) record(ev torrent.ReceivedUsefulDataEvent) {
	p.add(hostOf(ev.Peer.RemoteAddr.String()), 0, int64(len(ev.Message.Piece)))
}

func (p *peerTraffic) add(ip string, up, down int64) {
	if up <= 0 && down <= 0 {
		return // a connection that exchanged nothing is no traffic
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.byIP[ip]
	t.Uploaded += up
	t.Downloaded += down
	p.byIP[ip] = t
}

// closed is the PeerConnClosed callback, called with the client lock held:
// the connection's final count is read once the lock is free. A connection
// closed before its handshake has no torrent, sent nothing, and has no lock
// to read its counts under.
func (p *peerTraffic) closed(pc *torrent.PeerConn) {
	if pc.Torrent() != nil {
		go p.retire(pc)
	}
}

func (p *peerTraffic) retire(pc *torrent.PeerConn) {
	p.sampleMu.Lock()
	defer p.sampleMu.Unlock()
	st := pc.Stats()
	p.add(hostOf(pc.RemoteAddr.String()), st.BytesWrittenData.Int64()-p.written[pc], 0)
	delete(p.written, pc)
}

// sample adds what the connections of ts wrote since they were last read
// and returns the totals per IP. A closed torrent's connections are
// skipped: retire counts them. It must be called with no lock of the
// library held.
func (p *peerTraffic) sample(ts []*torrent.Torrent) map[string]PeerTraffic {
	p.sampleMu.Lock()
	defer p.sampleMu.Unlock()
	for _, t := range ts {
		select {
		case <-t.Closed():
			continue
		default:
		}
		// A connection closed from here on is retired after this sample
		// (retire waits for sampleMu), so its count is read once here and
		// its remainder there.
		for _, pc := range t.PeerConns() {
			st := pc.Stats()
			w := st.BytesWrittenData.Int64()
			if d := w - p.written[pc]; d > 0 {
				p.add(hostOf(pc.RemoteAddr.String()), d, 0)
				p.written[pc] = w
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]PeerTraffic, len(p.byIP))
	for ip, t := range p.byIP {
		out[ip] = t
	}
	return out
}
