package torrent

import (
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"
)

// dregistry's per-piece upload limit. A node that holds a piece many
// peers lack (a designee that just got it from the seeder, the last pieces
// of a chunk) is asked for it by all of them at once, and every connection
// sends at once, so TCP shares the uplink among them and none has the
// piece to pass on until late: in BenchmarkRollout (16 nodes at 6 Mbit/s)
// a designee sent most of its pieces to 10-14 of the 14 other followers
// itself, each completing it 7-8 s (median) after the first. Sent to a
// few at a time, the first receive it in a fraction of that and can pass
// it on (docs/benchmarks.md, "Pieces sent to two peers at a time").

// dregistryPieceUploads is how many connections may be sent blocks of one
// piece at once.
const dregistryPieceUploads = 2

// dregistryUploadFresh is how recently a connection must have sent a block
// of a piece to count as sending it: one whose peer stopped reading holds
// no slot.
const dregistryUploadFresh = time.Second

// dregistryUploadRecheck is how soon a connection whose ready requests all
// wait for a slot looks again, besides being woken when a slot frees.
const dregistryUploadRecheck = 250 * time.Millisecond

// dregistryNextUpload picks the ready request to send next: one of the
// piece this connection is sending already, else one of a piece fewer than
// dregistryPieceUploads other connections are being sent. busy: there are
// ready requests, all of pieces waiting for a slot. Called with the client
// lock held.
func (c *PeerConn) dregistryNextUpload() (r Request, ok, busy bool) {
	if len(c.readyPeerRequests) == 0 {
		return Request{}, false, false
	}
	if c.dregistryUploaded {
		for q := range c.readyPeerRequests {
			if q.Index == c.dregistryUpload {
				return q, true, false
			}
		}
	}
	// A piece busy for one request is busy for all its requests: each
	// piece is looked at once.
	var checked [4]pp.Integer
	n := 0
	for q := range c.readyPeerRequests {
		seen := false
		for _, i := range checked[:n] {
			seen = seen || i == q.Index
		}
		if seen {
			continue
		}
		if !c.dregistryPieceBusy(q.Index) {
			return q, true, false
		}
		if n < len(checked) {
			checked[n] = q.Index
			n++
		}
	}
	return Request{}, false, true
}

// dregistryPieceBusy reports whether dregistryPieceUploads other
// connections of c's torrent are being sent blocks of piece i.
func (c *PeerConn) dregistryPieceBusy(i pp.Integer) bool {
	n := 0
	for o := range c.t.conns {
		if o != c && o.dregistrySending(i) {
			n++
			if n >= dregistryPieceUploads {
				return true
			}
		}
	}
	return false
}

// dregistrySending reports whether c is being sent blocks of piece i: it
// sent one lately and the peer asked for more.
func (c *PeerConn) dregistrySending(i pp.Integer) bool {
	if !c.dregistryUploaded || c.dregistryUpload != i || c.closed.IsSet() ||
		time.Since(c.lastChunkSent) > dregistryUploadFresh {
		return false
	}
	return c.dregistryRequestsOf(i)
}

// dregistryRequestsOf reports whether the peer's requests still pending
// here include a block of piece i.
func (c *PeerConn) dregistryRequestsOf(i pp.Integer) bool {
	for r := range c.readyPeerRequests {
		if r.Index == i {
			return true
		}
	}
	for r := range c.unreadPeerRequests {
		if r.Index == i {
			return true
		}
	}
	return false
}

// dregistrySent notes a block of piece i sent to c's peer; when it was the
// last one asked, the connections waiting for the piece's slot look again.
func (c *PeerConn) dregistrySent(i pp.Integer) {
	c.dregistryUpload, c.dregistryUploaded = i, true
	if c.dregistryRequestsOf(i) {
		return
	}
	for o := range c.t.conns {
		if o != c && o.dregistryRequestsOf(i) {
			o.tickleWriter()
		}
	}
}
