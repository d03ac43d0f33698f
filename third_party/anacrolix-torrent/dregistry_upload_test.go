package torrent

import (
	"testing"
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"
)

// TestDregistryPieceUploadsAtATime checks the per-piece upload limit: a
// connection does not start sending a piece that dregistryPieceUploads
// others are being sent (it sends another piece asked, or waits), keeps
// sending a piece it started, and takes the piece once a sender is done
// or has sent nothing for dregistryUploadFresh.
func TestDregistryPieceUploadsAtATime(t *testing.T) {
	tor := &Torrent{conns: map[*PeerConn]struct{}{}}
	block := func(piece, n int) Request {
		return Request{Index: pp.Integer(piece), ChunkSpec: ChunkSpec{Begin: pp.Integer(n * 16 << 10), Length: 16 << 10}}
	}
	conn := func(ready ...Request) *PeerConn {
		c := &PeerConn{readyPeerRequests: map[Request][]byte{}}
		c.t = tor
		for _, r := range ready {
			c.readyPeerRequests[r] = make([]byte, r.Length)
		}
		tor.conns[c] = struct{}{}
		return c
	}
	sending := func(c *PeerConn, piece int) {
		c.dregistryUpload, c.dregistryUploaded = pp.Integer(piece), true
		c.lastChunkSent = time.Now()
	}
	a, b := conn(block(0, 1)), conn(block(0, 1))
	sending(a, 0)
	sending(b, 0)
	c := conn(block(0, 0))
	if _, ok, busy := c.dregistryNextUpload(); ok || !busy {
		t.Fatalf("a third connection starts piece 0 while two are sent it (ok %v, busy %v)", ok, busy)
	}
	c.readyPeerRequests[block(1, 0)] = make([]byte, 16<<10)
	if r, ok, _ := c.dregistryNextUpload(); !ok || r.Index != 1 {
		t.Fatalf("got %v, %v; want the other piece asked, 1", r, ok)
	}
	if r, ok, _ := a.dregistryNextUpload(); !ok || r.Index != 0 {
		t.Fatalf("a sender of piece 0 got %v, %v; want its next block of it", r, ok)
	}
	delete(c.readyPeerRequests, block(1, 0))

	// a sent its last block of piece 0: c may start it.
	delete(a.readyPeerRequests, block(0, 1))
	if r, ok, _ := c.dregistryNextUpload(); !ok || r.Index != 0 {
		t.Fatalf("with one sender left, got %v, %v; want piece 0", r, ok)
	}
	// b's peer stops reading: after dregistryUploadFresh b holds no slot.
	a.readyPeerRequests[block(0, 1)] = make([]byte, 16<<10)
	b.lastChunkSent = time.Now().Add(-2 * dregistryUploadFresh)
	if r, ok, _ := c.dregistryNextUpload(); !ok || r.Index != 0 {
		t.Fatalf("with a stalled sender, got %v, %v; want piece 0", r, ok)
	}
	if _, ok, busy := conn().dregistryNextUpload(); ok || busy {
		t.Fatal("a connection with nothing asked has something to send")
	}
}
