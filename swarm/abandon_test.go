package swarm

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// heldBuffers is the piece buffers n's download of dgst holds now.
func heldBuffers(n *node, dgst digest.Digest) int64 {
	return sumBuffers(n, dgst, func(pb *pieceBuffers) int64 { return pb.held() })
}

// keptBuffers is the verified pieces n's download of dgst keeps for a
// reader now: only its reader (or its closing) lets go of them, while
// pieces being assembled and spare buffers come and go with the transfer.
func keptBuffers(n *node, dgst digest.Digest) int64 {
	return sumBuffers(n, dgst, func(pb *pieceBuffers) int64 { return pb.keptBytes })
}

func sumBuffers(n *node, dgst digest.Digest, of func(*pieceBuffers) int64) int64 {
	n.mu.Lock()
	e := n.torrents[dgst]
	var ihs []chunkInfo
	if e != nil {
		for _, c := range e.chunks {
			if c != nil {
				ihs = append(ihs, *c.info)
			}
		}
	}
	n.mu.Unlock()
	var sum int64
	for _, c := range ihs {
		if d := n.downloads.opened.get(c.infoHash); d != nil {
			d.mu.Lock()
			sum += of(d.bufs)
			d.mu.Unlock()
		}
	}
	return sum
}

// A download whose reader went away frees its piece buffers at once, and
// is dropped with its files once no stream opened it for AbandonTimeout.
func TestAbandonedDownloadFreesItsBuffersAndIsDropped(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 6*testChunk+777)
	seed(t, startNode(t, tr, "127.0.0.2", "", chunked()), tr, content, dgst)
	const abandon = 1500 * time.Millisecond
	var freed atomic.Int64
	d := startNode(t, tr, "127.0.0.3", "", chunked(func(c *Config) {
		c.AbandonTimeout = abandon
		c.Freed = func(n int64) { freed.Add(n) }
	}))
	rc, err := openBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, testChunk/2)); err != nil {
		t.Fatal(err)
	}
	// The window's chunks arrive while the stream reads; wait (bounded)
	// until the download kept some verified pieces for it. (Held buffers
	// are not enough: under load the reader's spare buffers may all be
	// assembling the next pieces, which closing the reader does not free.)
	waitFor(t, "verified pieces kept for the reader", func() bool { return keptBuffers(d, dgst) > 0 })
	rc.Close()
	if freed.Load() == 0 {
		t.Error("Config.Freed did not hear of the buffers the closed stream let go")
	}
	if held := heldBuffers(d, dgst); held > 0 {
		// Only pieces still being assembled may remain; on loopback the
		// window is complete by now, so nothing should.
		waitFor(t, "piece buffers freed", func() bool { return heldBuffers(d, dgst) == 0 })
	}
	if _, ok := lookupStats(d, dgst); !ok {
		t.Fatal("the download went at once; it should wait for AbandonTimeout")
	}
	if len(downloadFiles(t, d, dgst)) == 0 {
		t.Fatal("no download files before AbandonTimeout")
	}
	start := time.Now()
	waitFor(t, "abandoned download dropped", func() bool { _, ok := lookupStats(d, dgst); return !ok })
	if waited := time.Since(start); waited > 10*abandon {
		t.Errorf("dropped %s after the reader closed, AbandonTimeout %s", waited, abandon)
	}
	if files := downloadFiles(t, d, dgst); len(files) > 0 {
		t.Fatalf("files of the abandoned download left: %v", files)
	}
	// The next pull starts over and gets the blob.
	got, err := readBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)
}

// A download whose only stream closed before it read a byte (a pull that
// went elsewhere) is abandoned too.
func TestDownloadNeverReadIsDropped(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 3*testChunk)
	seed(t, startNode(t, tr, "127.0.0.2", "", chunked()), tr, content, dgst)
	d := startNode(t, tr, "127.0.0.3", "", chunked(func(c *Config) { c.AbandonTimeout = 500 * time.Millisecond }))
	b, err := d.Blob(t.Context(), refForTests(), dgst)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := b.Open(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	b.Close()
	if len(downloadFiles(t, d, dgst)) == 0 {
		t.Fatal("Open reserved no files")
	}
	waitFor(t, "unread download dropped", func() bool { _, ok := lookupStats(d, dgst); return !ok })
	if files := downloadFiles(t, d, dgst); len(files) > 0 {
		t.Fatalf("files left: %v", files)
	}
}

// A download no stream reads any more but that a peer is fetching from
// (it is announced as a partial seed) is not abandoned while that lasts.
func TestIdleDownloadOthersFetchFromIsKept(t *testing.T) {
	tr := newTracker()
	const size = 8 * testChunk
	content, dgst := randomBlob(t, size)
	a := startNode(t, tr, "127.0.0.2", "", chunked())
	seed(t, a, tr, content, dgst)
	const abandon = time.Second
	d := startNode(t, tr, "127.0.0.3", "", chunked(func(c *Config) { c.AbandonTimeout = abandon }))
	got, err := readBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)
	tr.announcePartial(dgst, d)
	// e starts while a is a complete seeder, then a goes: e's pieces can
	// come from d only, slowly (2 MiB/s for 8 MiB: longer than abandon).
	e := startNode(t, tr, "127.0.0.4", "", chunked(func(c *Config) { c.DownloadLimit = 2 << 20 }))
	b, err := e.Blob(t.Context(), refForTests(), dgst)
	if err != nil {
		t.Fatal(err)
	}
	tr.withdraw(dgst, a)
	a.Unseed(dgst)
	rc, err := b.Open(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// While e reads, d's download must stay as long as e lacks bytes of
	// it. That is checked against what e received, not against the end of
	// e's stream: a busy machine can deliver the stream's last verified
	// bytes a second after e fetched them, and by then d is rightly idle.
	dropped := watchDrop(d, e, dgst)
	start := time.Now()
	got, err = io.ReadAll(rc)
	took := time.Since(start)
	if lacked := dropped(); lacked > 0 {
		t.Fatalf("d's download was dropped while e, fetching from it, still lacked %d bytes", lacked)
	}
	if err != nil {
		t.Fatalf("e's read from d: %v", err)
	}
	mustEqual(t, got, content)
	if took < 2*abandon {
		t.Skipf("e read the blob in %s, under twice AbandonTimeout: nothing to tell", took)
	}
	// Once nobody fetches, it goes.
	waitFor(t, "idle download dropped after the peer finished", func() bool { _, ok := lookupStats(d, dgst); return !ok })
}

// watchDrop polls (every 20 ms, for at most a minute) until holder's
// download of dgst is gone, and notes how many bytes of it fetcher had not
// received then. The function it returns ends the watch and returns that
// count: 0 if the download stayed, or went once fetcher had every byte.
func watchDrop(holder, fetcher *node, dgst digest.Digest) func() int64 {
	stop := make(chan struct{})
	done := make(chan int64, 1)
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			select {
			case <-stop:
				done <- 0
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, ok := lookupStats(holder, dgst); ok {
				continue
			}
			// Read after the drop was seen: bytes missing now were
			// missing when it happened.
			st, _ := lookupStats(fetcher, dgst)
			var received int64
			for _, n := range st.ReceivedFrom {
				received += n
			}
			done <- max(st.Size-received, 0)
			return
		}
		done <- 0
	}()
	return func() int64 {
		close(stop)
		return <-done
	}
}

// pieceBuffers going idle frees kept pieces and spares, and keeps none
// until it is read again.
func TestIdlePieceBuffersKeepNothing(t *testing.T) {
	pb := newPieceBuffers(1 << 20)
	for i := range 3 {
		copy(pb.assembly(i, 256<<10, true), "x")
		pb.verified(i)
	}
	pb.recycle(alignedBuffer(256 << 10))
	if pb.held() == 0 {
		t.Fatal("nothing held before idle")
	}
	pb.setIdle(true)
	if held := pb.held(); held != 0 {
		t.Fatalf("idle buffers hold %d bytes", held)
	}
	pb.assembly(3, 256<<10, true)
	pb.verified(3)
	if held := pb.held(); held != 0 {
		t.Fatalf("a piece verified while idle is held: %d bytes", held)
	}
	if buf, _ := pb.readable(3); buf != nil {
		t.Fatal("a piece verified while idle is readable from memory")
	}
	pb.setIdle(false)
	pb.assembly(4, 256<<10, true)
	pb.verified(4)
	if buf, ok := pb.readable(4); buf == nil || !ok {
		t.Fatal("a piece verified after the reader came back is not kept")
	}
}

// A peer that stops reading a blob from the peer endpoint has its response
// cut after StallTimeout: when it reads again it gets what the socket
// buffers held, then the end of the connection, not the whole blob.
func TestPeerEndpointCutsAPeerThatStoppedReading(t *testing.T) {
	tr := newTracker()
	const size = 64 << 20 // far more than loopback's socket buffers
	content, dgst := randomBlob(t, size)
	a := startNode(t, tr, "127.0.0.2", "", func(c *Config) { c.StallTimeout = 300 * time.Millisecond })
	seed(t, a, tr, content, dgst)
	conn, err := net.DialTimeout("tcp", a.http.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(conn, "GET %s%s HTTP/1.1\r\nHost: x\r\n\r\n", blobPathPrefix, dgst); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // reads nothing for several stall timeouts
	got, err := io.Copy(io.Discard, conn)
	if got >= size {
		t.Fatalf("the peer got all %d bytes after it stopped reading (%v)", got, err)
	}
	t.Logf("cut after %d bytes: %v", got, err)
}

// heldBehind is the piece buffers the chunks before chunk k of dgst's
// download hold.
func heldBehind(n *node, dgst digest.Digest, k int) int64 {
	n.mu.Lock()
	e := n.torrents[dgst]
	var ihs []chunkInfo
	if e != nil {
		for _, c := range e.chunks[:min(k, len(e.chunks))] {
			if c != nil {
				ihs = append(ihs, *c.info)
			}
		}
	}
	n.mu.Unlock()
	var held int64
	for _, c := range ihs {
		held += n.downloads.heldBytes(c.infoHash)
	}
	return held
}

// A stream that moved past a chunk leaves no piece buffer in it: each chunk
// bounds its kept pieces on its own, and a read the size and alignment of a
// peer's request (16 KiB) keeps its piece, so a 4 GiB layer in 128 chunks
// held 2.5 GiB of RSS until its download ended (TestBigArtifact).
func TestStreamFreesTheChunksItPassed(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 6*testChunk+777)
	seed(t, startNode(t, tr, "127.0.0.2", "", chunked()), tr, content, dgst)
	d := startNode(t, tr, "127.0.0.3", "", chunked())
	rc, err := openBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make([]byte, 0, len(content))
	buf := make([]byte, 16<<10)
	for len(got) < 4*testChunk+testChunk/2 {
		n, err := io.ReadFull(rc, buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, content[:len(got)]) {
		t.Fatal("the stream's bytes differ from the blob")
	}
	if held := heldBehind(d, dgst, 4); held != 0 {
		t.Errorf("the 4 chunks the stream passed hold %d bytes of piece buffers", held)
	}
	if heldBuffers(d, dgst) == 0 {
		t.Log("no piece kept ahead of the stream (the window completed and was read through)")
	}
}
