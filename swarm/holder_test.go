package swarm

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"github.com/opencontainers/go-digest"
)

// A piece the stream waits on, held by one downloading peer that has
// stopped answering, comes from a seeder: the designee rule takes pieces
// a downloading peer holds from that peer, but not forever. Seen in
// BenchmarkRollout: a follower's request went unanswered by the one
// downloading peer holding the piece, and the seeders, never asked, left
// the stream stalled for 10 s.
func TestAwaitedPieceHeldOnlyByAPeerThatStoppedAnsweringComesFromASeeder(t *testing.T) {
	tr := newTracker()
	// 8 pieces of 256 KiB in one chunk. The seeder sends its first MiB at
	// once (its limiter's burst), then 512 KiB/s, so the download is still
	// at its first pieces when it has long seen the frozen peer's pieces 5
	// and 6, which it then asks only the frozen peer for.
	content, dgst := randomBlob(t, 2<<20)
	seeder := startNode(t, tr, "127.0.0.41", "", func(c *Config) { c.UploadLimit = 512 << 10 })
	seed(t, seeder, tr, content, dgst)
	lay := seeder.layout(int64(len(content)))
	ci, err := mustHash(t, content, dgst).chunk(lay, 0)
	if err != nil {
		t.Fatal(err)
	}
	frozen := startFrozenPeer(t, "127.0.0.42", ci, &frozenHolding{have: func(i int) bool { return i == 5 || i == 6 }})
	tr.announcePeer(dgst, Peer{TorrentAddr: frozen, Partial: true})
	logs := &syncBuffer{}
	d := startNode(t, tr, "127.0.0.43", "", logTo(logs))
	got, err := readBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatalf("read: %v\n%s", err, logs.String())
	}
	mustEqual(t, got, content)
}

// A piece the stream waits on, whose request went to a peer that has
// stopped answering, moves to a peer whose connection has been idle for
// longer than the stuck one: the library's "don't steal from the poor"
// rule (move a request only to a connection that received a chunk more
// recently) yields once the request is stuck.
func TestAwaitedPieceStuckAtAPeerMovesToAnIdleOne(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 2<<20)
	lay := fuzzLayout(int64(len(content)))
	ci, err := mustHash(t, content, dgst).chunk(lay, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A complete peer that serves the first 7 of the 8 pieces it is asked
	// for, and then stops: the last request is stuck there.
	pieces := int(lay.size / lay.pieceLength)
	h := &frozenHolding{have: func(int) bool { return true }, content: content, serveFirst: pieces - 1}
	stuck := startFrozenPeer(t, "127.0.0.44", ci, h)
	// The seeder that appears later holds the blob from the start; until
	// then the tracker names only the stuck peer, with the seeder's peer
	// endpoint for the metainfo (the fake has none).
	seeder := startNode(t, tr, "127.0.0.46", "", nil)
	if err := seeder.Seed(context.Background(), dgst, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	tr.announcePeer(dgst, Peer{TorrentAddr: stuck, HTTPAddr: seeder.peer().HTTPAddr})
	logs := &syncBuffer{}
	d := startNode(t, tr, "127.0.0.45", "", logTo(logs))
	done := drainInBackground(t, d, dgst)
	want := int64(pieces-1) * lay.pieceLength
	waitFor(t, "the stuck peer's pieces", func() bool { return d.Stats().DownloadedBytes >= want })
	// Only now does the seeder appear: its connection has received
	// nothing, so the rule alone would never move the stuck request to it.
	tr.announce(dgst, seeder)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read: %v\n%s", err, logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the read did not end within a minute")
	}
	// The stats count the move, on the node that made it.
	if st := d.Stats(); st.RequestsStolen < 1 {
		t.Fatalf("requests moved: %d, want at least the stuck one", st.RequestsStolen)
	}
}

// announcePeer lists p as holding d.
func (tr *tracker) announcePeer(d digest.Digest, p Peer) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.seeders[d] = append(tr.seeders[d], p)
}

// frozenHolding is what a frozen peer holds: the pieces have reports. It
// serves the first serveFirst pieces asked for (from content, the whole
// blob), and then none.
type frozenHolding struct {
	have       func(int) bool
	content    []byte
	serveFirst int

	mu     sync.Mutex
	served map[int]bool
}

// serves reports whether a read of piece i gets its bytes.
func (h *frozenHolding) serves(i int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.served == nil {
		h.served = map[int]bool{}
	}
	if !h.served[i] && len(h.served) < h.serveFirst {
		h.served[i] = true
	}
	return h.served[i]
}

// startFrozenPeer runs, on ip, a BitTorrent client of the chunk torrent ci
// that announces the pieces h has and sends only those h serves: other
// reads wait until the test ends, as a wedged peer's would. It downloads
// nothing. It returns the client's address.
func startFrozenPeer(t *testing.T, ip string, ci *chunkInfo, h *frozenHolding) netip.AddrPort {
	t.Helper()
	release := make(chan struct{})
	cc := torrent.NewDefaultClientConfig()
	cc.ListenHost = func(string) string { return ip }
	cc.ListenPort = 0
	cc.DataDir = t.TempDir()
	cc.DefaultStorage = frozenStorage{h: h, off: ci.off, release: release}
	cc.NoDHT, cc.DisablePEX, cc.DisableTrackers = true, true, true
	cc.NoDefaultPortForwarding, cc.DisableWebseeds, cc.DisableWebtorrent = true, true, true
	cc.DisableUTP, cc.DisableIPv6, cc.Seed = true, true, true
	cc.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{}
	cl, err := torrent.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(release)
		cl.Close()
	})
	tt, _ := cl.AddTorrentOpt(torrent.AddTorrentOpts{InfoHash: ci.infoHash})
	if err := tt.SetInfoBytes(ci.infoBytes); err != nil {
		t.Fatal(err)
	}
	tt.DisallowDataDownload()
	for _, a := range cl.ListenAddrs() {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap
		}
	}
	t.Fatal("the frozen peer listens nowhere")
	return netip.AddrPort{}
}

// frozenStorage is a frozen peer's storage of one chunk torrent, at off
// in the blob.
type frozenStorage struct {
	h       *frozenHolding
	off     int64
	release <-chan struct{}
}

func (s frozenStorage) OpenTorrent(context.Context, *metainfo.Info, metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl {
			return frozenPiece{s: s, index: p.Index(), off: s.off + p.Offset()}
		},
		Close: func() error { return nil },
	}, nil
}

type frozenPiece struct {
	s     frozenStorage
	index int
	off   int64 // in the blob
}

var errFrozen = errors.New("frozen peer")

func (p frozenPiece) ReadAt(b []byte, off int64) (int, error) {
	h := p.s.h
	if h.serves(p.index) {
		return copy(b, h.content[p.off+off:]), nil
	}
	<-p.s.release
	return 0, errFrozen
}

func (p frozenPiece) WriteAt([]byte, int64) (int, error) { return 0, errFrozen }
func (p frozenPiece) MarkComplete() error                { return errFrozen }
func (p frozenPiece) MarkNotComplete() error             { return nil }

func (p frozenPiece) Completion() storage.Completion {
	return storage.Completion{Ok: true, Complete: p.s.h.have(p.index)}
}
