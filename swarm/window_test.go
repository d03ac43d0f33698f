package swarm

import (
	"testing"
	"time"
)

// A new chunk's pieces are wanted wantPace apart with no lock held: the
// swarm answers (Stats takes Swarm.mu) while a chunk's want is still
// pacing, and Close ends the pacing at once. With the pace under Swarm.mu,
// as 7f6cf9c left it, Stats waited out the whole want.
func TestPacedWantHoldsNoLock(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	b := startNode(t, tr, "127.0.0.3", "", nil)
	b.wantPace = time.Hour // before b's first download: nothing reads it yet
	content, dgst := randomBlob(t, 20<<20+7)
	seed(t, a, tr, content, dgst)

	// The stream's window adds chunk 0, whose want then paces for hours.
	read := drainInBackground(t, b, dgst)
	// Each question takes Swarm.mu, on a goroutine: the test does not wait
	// on a lock held for hours.
	ask := func(what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			f()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still waits after 10 s: Swarm.mu is held while a chunk's pieces are wanted", what)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for added := false; !added; {
		ask("the chunk table", func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			e := b.torrents[dgst]
			added = e != nil && e.chunks[0] != nil
		})
		if !added && time.Now().After(deadline) {
			t.Fatal("chunk 0 not added within 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ask("Stats", func() { b.Stats() })

	closed := make(chan struct{})
	go func() {
		b.stop()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close still waits 20 s later: it does not end a paced want")
	}
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("the stream ended whole, with peers given only after an hour's want")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream still reads 20 s after Close")
	}
}
