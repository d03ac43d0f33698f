package swarm

import (
	"bytes"
	"context"
	"os"
	"testing"
)

// roundTrip downloads content into a download storage under dir piece by
// piece (256 KiB chunks), checking that every verified piece reads back
// right from memory, that a read through the piece frees it, and that the
// data file holds the blob afterwards. The last piece is not a multiple of
// the direct I/O block, so it takes the buffered path.
func roundTrip(t *testing.T, dir string, keep int64) {
	t.Helper()
	content, dgst := randomBlob(t, 4<<20+1000)
	b := mustHash(t, content, dgst)
	st := downloadStorage{dir: dir, keep: keep}
	ti, err := st.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	defer ti.Close()
	for i := range b.info.NumPieces() {
		mp := b.info.Piece(i)
		p := ti.Piece(mp).(downloadPiece)
		want := content[mp.Offset() : mp.Offset()+mp.Length()]
		for off := int64(0); off < mp.Length(); off += 256 << 10 {
			if _, err := p.WriteAt(want[off:min(off+256<<10, mp.Length())], off); err != nil {
				t.Fatal(err)
			}
		}
		var hashed bytes.Buffer
		if _, err := p.WriteTo(&hashed); err != nil || !bytes.Equal(hashed.Bytes(), want) {
			t.Fatalf("piece %d hashed from the buffer: %v", i, err)
		}
		if err := p.MarkComplete(); err != nil {
			t.Fatal(err)
		}
		p.d.mu.Lock()
		_, kept := p.d.bufs.kept[i]
		p.d.mu.Unlock()
		if kept != (keep > 0) {
			t.Fatalf("piece %d kept in memory: %v with keep %d", i, kept, keep)
		}
		got := make([]byte, mp.Length())
		if n, err := p.ReadAt(got, 0); err != nil || int64(n) != mp.Length() || !bytes.Equal(got, want) {
			t.Fatalf("piece %d read back: %d bytes, %v", i, n, err)
		}
		p.d.mu.Lock()
		_, kept = p.d.bufs.kept[i]
		p.d.mu.Unlock()
		if kept {
			t.Fatalf("piece %d still in memory after a read through it", i)
		}
		if n, err := p.ReadAt(got, 0); err != nil || int64(n) != mp.Length() || !bytes.Equal(got, want) {
			t.Fatalf("piece %d read back from the data file: %d bytes, %v", i, n, err)
		}
	}
	t.Logf("direct writes: %v", ti.Piece(b.info.Piece(0)).(downloadPiece).d.out.direct != nil)
	data, _ := st.paths(dgst, -1)
	onDisk, err := os.ReadFile(data)
	if err != nil || !bytes.Equal(onDisk, content) {
		t.Fatalf("data file differs from the blob (%d of %d bytes, %v)", len(onDisk), len(content), err)
	}
}

// A peer's request read can reach the storage after the torrent was dropped
// (the library reads outside its lock and panics when that read fails): a
// verified piece stays readable after Close, and after the files were
// removed, for dataReadGrace.
func TestClosedDownloadStillServesVerifiedPieces(t *testing.T) {
	content, dgst := randomBlob(t, 1<<20)
	b := mustHash(t, content, dgst)
	st := downloadStorage{dir: t.TempDir(), keep: 0}
	ti, err := st.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	mp := b.info.Piece(0)
	p := ti.Piece(mp).(downloadPiece)
	want := content[:mp.Length()]
	if _, err := p.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.MarkComplete(); err != nil {
		t.Fatal(err)
	}
	if err := ti.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.remove(dgst); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, mp.Length())
	if n, err := p.ReadAt(got, 0); err != nil || !bytes.Equal(got[:n], want) || int64(n) != mp.Length() {
		t.Fatalf("read of a verified piece after Close and removal: %d bytes, %v", n, err)
	}
	if _, err := p.WriteAt(want, 0); err == nil {
		if err := p.MarkComplete(); err == nil {
			t.Fatal("a closed download accepted a piece")
		}
	}
}

func TestDownloadStorageWritesVerifiedPiecesAndReadsThemBack(t *testing.T) {
	t.Run("direct", func(t *testing.T) { roundTrip(t, t.TempDir(), 64<<20) })
	t.Run("nothing kept", func(t *testing.T) { roundTrip(t, t.TempDir(), 0) })
	// tmpfs refuses O_DIRECT before Linux 6.6: the buffered path then.
	t.Run("tmpfs", func(t *testing.T) {
		dir, err := os.MkdirTemp("/dev/shm", "swarm-test")
		if err != nil {
			t.Skipf("no tmpfs at /dev/shm: %v", err)
		}
		defer os.RemoveAll(dir)
		roundTrip(t, dir, 64<<20)
	})
}

// Verified pieces nobody reads are dropped oldest first beyond keep, and
// then read from the data file; a piece that fails its check leaves no
// buffer and nothing on disk.
func TestDownloadStorageBoundsTheVerifiedPiecesItKeeps(t *testing.T) {
	const piece = 256 << 10
	content, dgst := randomBlob(t, 8*piece)
	b := mustHash(t, content, dgst)
	st := downloadStorage{dir: t.TempDir(), keep: 2 * piece}
	ti, err := st.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	defer ti.Close()
	var d *download
	for i := range 6 {
		p := ti.Piece(b.info.Piece(i)).(downloadPiece)
		d = p.d
		if _, err := p.WriteAt(content[i*piece:(i+1)*piece], 0); err != nil {
			t.Fatal(err)
		}
		if err := p.MarkComplete(); err != nil {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	keptBytes, kept := d.bufs.keptBytes, len(d.bufs.kept)
	_, newest := d.bufs.kept[5]
	d.mu.Unlock()
	if keptBytes > 2*piece || kept != 2 || !newest {
		t.Fatalf("kept %d pieces, %d bytes (newest kept: %v); want the 2 newest", kept, keptBytes, newest)
	}
	got := make([]byte, piece)
	if _, err := ti.Piece(b.info.Piece(0)).ReadAt(got, 0); err != nil || !bytes.Equal(got, content[:piece]) {
		t.Fatalf("dropped piece 0 read from the data file: %v", err)
	}

	bad := ti.Piece(b.info.Piece(6)).(downloadPiece)
	if _, err := bad.WriteAt(bytes.Repeat([]byte{1}, piece), 0); err != nil {
		t.Fatal(err)
	}
	if err := bad.MarkNotComplete(); err != nil {
		t.Fatal(err)
	}
	if c := bad.Completion(); c.Complete {
		t.Fatal("failed piece reported complete")
	}
	d.mu.Lock()
	buf, _ := d.bufs.readable(6)
	d.mu.Unlock()
	if buf != nil {
		t.Fatal("failed piece still buffered")
	}
	if _, err := bad.ReadAt(got, 0); err != nil || !bytes.Equal(got, make([]byte, piece)) {
		t.Fatalf("failed piece reached the data file (%v)", err)
	}
}

func TestAlignedBufferStartsOnTheDirectIOBoundary(t *testing.T) {
	for _, n := range []int64{1, 4095, 4096, 256 << 10, 1<<20 + 17} {
		b := alignedBuffer(n)
		if int64(len(b)) != n || int64(cap(b)) != n || uintptrOf(b)%directAlign != 0 {
			t.Errorf("alignedBuffer(%d): len %d cap %d at %#x", n, len(b), cap(b), uintptrOf(b))
		}
	}
}

// A peer's request reading a kept piece to its end leaves it for the
// stream; the stream reading it through frees it.
func TestUploadsLeaveKeptPiecesForTheStream(t *testing.T) {
	// Pieces of two requests: 256 KiB pieces (PieceLength up to 256 MiB),
	// 128 KiB requests.
	const piece, chunk = 256 << 10, 128 << 10
	content, dgst := randomBlob(t, 65<<20)
	b := mustHash(t, content, dgst)
	if b.info.PieceLength != piece {
		t.Fatalf("piece length %d, want %d", b.info.PieceLength, piece)
	}
	st := downloadStorage{dir: t.TempDir(), keep: 64 << 20, chunk: chunk}
	ti, err := st.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	defer ti.Close()
	p := ti.Piece(b.info.Piece(0)).(downloadPiece)
	if _, err := p.WriteAt(content[:piece], 0); err != nil {
		t.Fatal(err)
	}
	if err := p.MarkComplete(); err != nil {
		t.Fatal(err)
	}
	kept := func() bool {
		p.d.mu.Lock()
		defer p.d.mu.Unlock()
		_, ok := p.d.bufs.kept[0]
		return ok
	}
	request := make([]byte, chunk)
	if _, err := p.ReadAt(request, piece-chunk); err != nil || !bytes.Equal(request, content[piece-chunk:piece]) {
		t.Fatalf("request read: %v", err)
	}
	if !kept() {
		t.Fatal("a peer's request freed the piece before the stream read it")
	}
	stream := make([]byte, 100<<10)
	for off := int64(0); off < piece; off += int64(len(stream)) {
		n, err := p.ReadAt(stream, off)
		if err != nil || !bytes.Equal(stream[:n], content[off:off+int64(n)]) {
			t.Fatalf("stream read at %d: %v", off, err)
		}
	}
	if kept() {
		t.Fatal("piece still kept after the stream read it through")
	}

	// A piece of one request (the default 256 KiB requests and pieces) is
	// freed by any read through it: the stream's whole-piece read looks
	// like a request, and keeping such pieces would hold the whole blob in
	// memory.
	st.chunk = piece
	small, smallDgst := randomBlob(t, 4*piece)
	sb := mustHash(t, small, smallDgst)
	sti, err := st.OpenTorrent(context.Background(), &sb.info, sb.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	defer sti.Close()
	sp := sti.Piece(sb.info.Piece(1)).(downloadPiece)
	if _, err := sp.WriteAt(small[piece:2*piece], 0); err != nil {
		t.Fatal(err)
	}
	if err := sp.MarkComplete(); err != nil {
		t.Fatal(err)
	}
	whole := make([]byte, piece)
	if _, err := sp.ReadAt(whole, 0); err != nil || !bytes.Equal(whole, small[piece:2*piece]) {
		t.Fatalf("whole-piece read: %v", err)
	}
	sp.d.mu.Lock()
	_, still := sp.d.bufs.kept[1]
	sp.d.mu.Unlock()
	if still {
		t.Fatal("a one-chunk piece read through is still kept")
	}
}
