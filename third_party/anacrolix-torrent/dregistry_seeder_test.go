package torrent

import (
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
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
