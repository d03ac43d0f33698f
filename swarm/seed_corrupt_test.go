package swarm

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

// corruptEveryPiece flips one byte in each piece of a blob file.
func corruptEveryPiece(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	step := PieceLength(size)
	for off := int64(100); off < size; off += step {
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSeedStorageRefusesAPieceChangedOnDisk(t *testing.T) {
	const piece = 256 << 10
	content, dgst := randomBlob(t, 3*piece)
	b := mustHash(t, content, dgst)
	path, f := spoolFile(t, content)
	var mu sync.Mutex
	var reported []int
	st := seedStorage{content: f, corrupt: func(i int) { mu.Lock(); reported = append(reported, i); mu.Unlock() }}
	ti, err := st.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := ti.Piece(b.info.Piece(0)).ReadAt(buf, 0); err != nil {
		t.Fatalf("intact piece 0: %v", err)
	}
	corruptEveryPiece(t, path, int64(len(content)))
	// Piece 0 was checked already; pieces 1 and 2 are hashed on first read.
	for i, wantErr := range []bool{false, true, true} {
		p := ti.Piece(b.info.Piece(i))
		_, err := p.ReadAt(buf, 0)
		if got := errors.Is(err, errSeedCorrupt); got != wantErr {
			t.Errorf("piece %d read: %v, want corrupt=%v", i, err, wantErr)
		}
		if c := p.Completion(); c.Complete == wantErr {
			t.Errorf("piece %d completion %+v after the read", i, c)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 2 || reported[0] != 1 || reported[1] != 2 {
		t.Errorf("reported pieces %v, want [1 2]", reported)
	}
}

// A node whose seeded file changes on disk stops seeding it at the first
// piece a peer asks for; the peer never gets the bytes, and seeding the file
// again rehashes it and is refused.
func TestSeedCorruptedOnDiskIsDroppedAndRefused(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 4<<20)
	path, f := spoolFile(t, content)
	a := startNode(t, tr, "127.0.0.31", "", nil)
	if err := a.Seed(context.Background(), dgst, int64(len(content)), f); err != nil {
		t.Fatal(err)
	}
	tr.announce(dgst, a)
	corruptEveryPiece(t, path, int64(len(content)))

	d := startNode(t, tr, "127.0.0.32", "", func(c *Config) { c.StallTimeout = 2 * time.Second })
	if got, err := readBlob(t, d, dgst, 0); err == nil {
		t.Fatalf("read %d bytes of a blob whose only seeder is corrupted, want an error", len(got))
	}
	waitFor(t, "the corrupted seed to be dropped", func() bool { return a.seeded(dgst) == nil })
	if _, err := a.meta.load(dgst); err == nil {
		t.Error("the corrupted seed's metainfo is still cached")
	}
	if err := a.Seed(context.Background(), dgst, int64(len(content)), f); err == nil {
		t.Error("seeding the corrupted file again was accepted")
	}
}

// blockingReaderAt holds every read until release is closed.
type blockingReaderAt struct {
	content []byte
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (r *blockingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	r.once.Do(func() { close(r.started) })
	<-r.release
	return copy(p, r.content[off:]), nil
}

// The library asks a piece's Completion with its client lock held (every
// torrent of the node waits meanwhile), so Completion must not wait for a
// first-read hash in flight, which reads containerd's content and may take
// long.
func TestSeedCompletionDoesNotWaitForAPieceHash(t *testing.T) {
	const piece = 256 << 10
	content, dgst := randomBlob(t, 2*piece)
	b := mustHash(t, content, dgst)
	slow := &blockingReaderAt{content: content, started: make(chan struct{}), release: make(chan struct{})}
	st := seedStorage{content: slow, corrupt: func(int) {}}
	ti, err := st.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := ti.Piece(b.info.Piece(0)).ReadAt(make([]byte, 100), 0)
		read <- err
	}()
	select {
	case <-slow.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first read of piece 0 did not start hashing it")
	}
	done := make(chan struct{})
	go func() {
		for i := range 2 {
			if c := ti.Piece(b.info.Piece(i)).Completion(); !c.Ok || !c.Complete {
				t.Errorf("piece %d: completion %+v while piece 0 is hashed", i, c)
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Completion waited for the hash of a piece in flight")
	}
	close(slow.release)
	select {
	case err := <-read:
		if err != nil {
			t.Fatalf("read of an intact piece: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read did not finish")
	}
}
