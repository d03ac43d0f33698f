package torrent

import (
	"bufio"
	"bytes"
	"testing"
	"testing/iotest"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// dregistry's test of its own change (dregistry_seeder.go); the library's
// tests are not vendored. Run from the repository's root by `make test`.

// TestDregistryNowGraceFollowsSeederRate checks the grace a reader's piece
// is left to its designee: three piece times at the rate this node receives
// from that seeder, over its connections to it in every chunk torrent of
// the same blob (not other peers, not other blobs), within [1.5 s, 6 s].
func TestDregistryNowGraceFollowsSeederRate(t *testing.T) {
	const piece = 256 << 10
	seeder, other := PeerID{1}, PeerID{2}
	cl := &Client{torrents: map[*Torrent]struct{}{}}
	chunk := func(name string) *Torrent {
		tor := &Torrent{
			cl:    cl,
			info:  &metainfo.Info{Name: name, PieceLength: piece},
			conns: map[*PeerConn]struct{}{},
		}
		cl.torrents[tor] = struct{}{}
		return tor
	}
	conn := func(tor *Torrent, id PeerID, bytes int64, busy time.Duration) *PeerConn {
		c := &PeerConn{PeerID: id}
		c.t = tor
		c._stats.BytesReadUsefulData.Add(bytes)
		c.cumulativeExpectedToReceiveChunks = busy
		tor.conns[c] = struct{}{}
		return c
	}
	c0, c1 := chunk("sha256:aa#0"), chunk("sha256:aa#1")
	c2 := chunk("sha256:aa#2")
	elsewhere := chunk("sha256:bb#0")

	// Nothing received from the seeder yet: the floor.
	fresh := conn(c2, seeder, 0, 0)
	if got := fresh.nowGrace(); got != nowGrace {
		t.Fatalf("grace with nothing received = %v, want %v", got, nowGrace)
	}

	// 1 MiB in 4 s from the seeder over two chunk torrents: 256 KiB/s,
	// a piece a second, so three seconds. A fast other peer and a fast
	// connection to the same seeder for another blob do not count.
	conn(c0, seeder, 512<<10, 2*time.Second)
	conn(c1, seeder, 512<<10, 2*time.Second)
	conn(c0, other, 100<<20, time.Second)
	conn(elsewhere, seeder, 100<<20, time.Second)
	if got, want := fresh.nowGrace(), 3*time.Second; got != want {
		t.Fatalf("grace at 256 KiB/s = %v, want %v", got, want)
	}

	// A downloader that finished the chunk while connected is asked
	// freely (skipAtSeeder), so it changes nothing here.
	finished := conn(c2, PeerID{4}, 0, 0)
	finished.peerSentHaveAll, finished.dregistryGrown = true, true
	if got, want := fresh.nowGrace(), 3*time.Second; got != want {
		t.Fatalf("grace with a finished downloader = %v, want %v", got, want)
	}

	// Another peer held every piece of that chunk from the start: the
	// seeders are no longer one bottleneck, so the floor; the grace
	// returns once that peer is gone.
	done := conn(c2, PeerID{3}, 0, 0)
	done.peerSentHaveAll = true
	if got := fresh.nowGrace(); got != nowGrace {
		t.Fatalf("grace with a second seeder = %v, want %v", got, nowGrace)
	}
	delete(c2.conns, done)
	if got, want := fresh.nowGrace(), 3*time.Second; got != want {
		t.Fatalf("grace once the second seeder left = %v, want %v", got, want)
	}

	// A fast seeder: the floor again.
	fast := conn(elsewhere, other, 64<<20, time.Second)
	if got := fast.nowGrace(); got != nowGrace {
		t.Fatalf("grace at 64 MiB/s = %v, want %v", got, nowGrace)
	}

	// A very slow one: the ceiling.
	slow := conn(chunk("sha256:cc#0"), seeder, piece, 10*time.Second)
	if got := slow.nowGrace(); got != maxNowGrace {
		t.Fatalf("grace at 25 KiB/s = %v, want %v", got, maxNowGrace)
	}

	// No info yet (metadata not received): the floor.
	noInfo := &PeerConn{PeerID: seeder}
	noInfo.t = &Torrent{cl: cl, conns: map[*PeerConn]struct{}{}}
	if got := noInfo.nowGrace(); got != nowGrace {
		t.Fatalf("grace without info = %v, want %v", got, nowGrace)
	}
}

// TestDregistryFinishedDownloaderIsNotUnderTheRule checks that the
// designee rule holds for a peer that held every piece when it first said
// what it has, and not for one that came to hold them by HAVE messages
// while connected (a downloader that finished the chunk): that one is
// asked for a piece another downloader holds, as any downloader is.
func TestDregistryFinishedDownloaderIsNotUnderTheRule(t *testing.T) {
	cl, err := NewClient(TestingConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const pieces = 4
	infoBytes, err := bencode.Marshal(metainfo.Info{
		Name:        "sha256:aa#0",
		PieceLength: 16 << 10,
		Length:      pieces * 16 << 10,
		Pieces:      make([]byte, 20*pieces),
	})
	if err != nil {
		t.Fatal(err)
	}
	tor, err := cl.AddTorrent(&metainfo.MetaInfo{InfoBytes: infoBytes})
	if err != nil {
		t.Fatal(err)
	}

	cl.lock()
	defer cl.unlock()
	var conns []*PeerConn
	conn := func(id byte) *PeerConn {
		c := &PeerConn{PeerID: PeerID{id}}
		c.legacyPeerImpl, c.peerImpl = c, c
		c.t = tor
		tor.conns[c] = struct{}{}
		conns = append(conns, c)
		return c
	}
	defer func() { // fake connections: the client must not close them
		for _, c := range conns {
			delete(tor.conns, c)
			tor.decPeerPieceAvailability(&c.Peer)
		}
	}()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	origin := conn(1)
	must(origin.onPeerSentHaveAll())
	finished := conn(3) // half at first, the rest while connected
	must(finished.peerSentBitfield([]bool{true, true, false, false, false, false, false, false}))
	if finished.dregistryGrown {
		t.Fatal("a peer missing pieces counts as finished")
	}
	must(finished.peerSentHave(2))
	must(finished.peerSentHave(3))
	if origin.dregistryGrown || !finished.dregistryGrown {
		t.Fatalf("grown: origin %v, finished %v; want false, true", origin.dregistryGrown, finished.dregistryGrown)
	}
	// No downloader in view, so this node is every piece's designee; but
	// the finished peer holds the piece: take it there.
	if !origin.skipAtSeeder(1) {
		t.Fatal("the origin seeder is asked for a piece a finished downloader holds")
	}

	holder := conn(2) // a downloader holding piece 0
	must(holder.peerSentHave(0))
	if !origin.skipAtSeeder(0) {
		t.Fatal("the origin seeder is asked for a piece a downloader holds")
	}
	if finished.skipAtSeeder(0) {
		t.Fatal("a downloader that finished is not asked for a piece another downloader holds")
	}
	if origin.otherSeeder() {
		t.Fatal("a downloader that finished counts as a second seeder from the start")
	}
	second := conn(4)
	must(second.onPeerSentHaveAll())
	if !origin.otherSeeder() {
		t.Fatal("a second seeder from the start is not seen")
	}
}

// TestDregistryArrivingRequestIsNotQuiet checks the time the steal rules
// measure a request's silence from: the bytes of its own piece message
// arriving at a fair rate count as progress (a 256 KiB message takes
// seconds on a shared slow link); the bytes of another request's message
// do not, nor bytes that trickle in too slowly to bring the message
// within arrivalBound.
func TestDregistryArrivingRequestIsNotQuiet(t *testing.T) {
	const chunk = 64 << 10
	tor := &Torrent{chunkSize: chunk, _chunksPerRegularPiece: 4, requestState: map[RequestIndex]requestState{}}
	c := &PeerConn{}
	asked := time.Now().Add(-5 * time.Second)
	r := tor.pieceRequestIndexBegin(2) + 1 // piece 2, begin 64 KiB
	tor.requestState[r] = requestState{when: asked}
	c.lastUsefulChunkReceived = asked.Add(-time.Minute)
	if got := tor.quietSince(r, c); !got.Equal(asked) {
		t.Fatalf("quiet since %v, want the request's time %v", got, asked)
	}

	// Bytes of another request (same piece, next chunk) are no progress.
	c.dregistryPieceData(2, 2*chunk, 1000, chunk)
	if got := tor.quietSince(r, c); !got.Equal(asked) {
		t.Fatalf("after another request's bytes: quiet since %v, want %v", got, asked)
	}

	// Bytes of r's own message are.
	c.dregistryPieceData(2, chunk, 1000, chunk)
	if got := tor.quietSince(r, c); !got.After(asked) {
		t.Fatalf("after r's own bytes: quiet since %v, want later than %v", got, asked)
	}

	// At a rate that would take the whole message 10x arrivalBound, the
	// bytes count for nothing: the request is as quiet as before.
	c.dregistryArrival.first = time.Now().Add(-arrivalBound)
	c.dregistryPieceData(2, chunk, chunk/10, chunk)
	if got := tor.quietSince(r, c); !got.Equal(asked) {
		t.Fatalf("after r's bytes trickling in: quiet since %v, want %v", got, asked)
	}
	// At half the bound, they count.
	c.dregistryArrival.first = time.Now().Add(-arrivalBound / 4)
	c.dregistryPieceData(2, chunk, chunk/2, chunk)
	if got := tor.quietSince(r, c); !got.After(asked) {
		t.Fatalf("after r's bytes at a fair rate: quiet since %v, want later than %v", got, asked)
	}
}

// TestDregistryDecoderReportsPieceDataAsItArrives checks that the decoder
// reports each part of a piece message's payload as it is read, with the
// message's index and begin, and still decodes the message whole.
func TestDregistryDecoderReportsPieceDataAsItArrives(t *testing.T) {
	payload := bytes.Repeat([]byte{7}, 1000)
	raw, err := pp.Message{Type: pp.Piece, Index: 3, Begin: 16384, Piece: payload}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var calls, last int
	d := pp.Decoder{
		R:         bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(raw)), 16),
		MaxLength: 1 << 20,
		PieceData: func(index, begin pp.Integer, read, length int) {
			if index != 3 || begin != 16384 || length != len(payload) || read <= last || read > length {
				t.Errorf("piece data reported for (%d, %d), %d of %d bytes after %d, want (3, 16384), more of %d", index, begin, read, length, last, len(payload))
			}
			last = read
			calls++
		},
	}
	var msg pp.Message
	if err := d.Decode(&msg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(msg.Piece, payload) {
		t.Fatal("payload changed")
	}
	if calls < 2 || last != len(payload) {
		t.Fatalf("piece data reported %d times for a payload that arrives in parts, want one per part", calls)
	}
}
