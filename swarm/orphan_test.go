package swarm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/registry/oci"
)

// A download whose only seeder leaves (its containerd dropped the blob)
// fails its waiting read after OrphanTimeout, not after StallTimeout, and
// says why; while a connection to the seeder lasts, it waits.
func TestDownloadLeftWithNoPeerFailsItsReadSoon(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 4<<20)
	seeder := startNode(t, tr, "127.0.0.21", "", nil)
	// The metainfo endpoint answers; the pieces never come.
	stall := stallingReaderAt{release: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			released = true
			close(stall.release)
		}
	}
	defer release()
	seedRaw(t, seeder, tr, mustHash(t, content, dgst), stall)
	d := startNode(t, tr, "127.0.0.22", "", func(c *Config) {
		c.StallTimeout = 5 * time.Minute // far past every wait below
		c.OrphanTimeout = 300 * time.Millisecond
	})
	done := drainInBackground(t, d, dgst)
	connected := func() bool {
		d.mu.Lock()
		e := d.torrents[dgst]
		d.mu.Unlock()
		if e == nil {
			return false
		}
		for _, c := range d.chunksOf(e) {
			if len(c.t.PeerConns()) > 0 {
				return true
			}
		}
		return false
	}
	waitFor(t, "the download to connect to its seeder", connected)
	// The tracker forgets the seeder, but the connection stays: the read
	// keeps waiting well past OrphanTimeout.
	tr.withdraw(dgst, seeder)
	select {
	case err := <-done:
		t.Fatalf("read ended while a peer was still connected: %v", err)
	case <-time.After(10 * 300 * time.Millisecond):
	}
	// The seeder drops the blob: no peer is left.
	release()
	seeder.Unseed(dgst)
	select {
	case err := <-done:
		if !errors.Is(err, errNoPeer) || !errors.Is(err, oci.ErrStalled) {
			t.Fatalf("read failed with %v, want the no-peer stall", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the read still waits a minute after its last peer went")
	}
}

// A piece that arrives more slowly than StallTimeout, but moves, does not
// cut the stream: the watchdog counts its chunk's bytes as they come.
func TestSlowPieceThatMovesDoesNotStallTheStream(t *testing.T) {
	tr := newTracker()
	// 6 pieces of 256 KiB: the seeder's limiter lets its first MiB go at
	// once (its burst), then 64 KiB/s: each of the last pieces takes about
	// 4 s, far past the downloader's StallTimeout, in requests of 16 KiB.
	content, dgst := randomBlob(t, 3<<19)
	small := func(c *Config) { c.ChunkSize = 16 << 10 }
	seeder := startNode(t, tr, "127.0.0.23", "", func(c *Config) {
		small(c)
		c.UploadLimit = 64 << 10
	})
	seed(t, seeder, tr, content, dgst)
	var logs syncBuffer
	d := startNode(t, tr, "127.0.0.24", "", func(c *Config) {
		small(c)
		c.StallTimeout = 1500 * time.Millisecond
		logTo(&logs)(c)
	})
	got, err := readBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatalf("read: %v\n%s", err, logs.String())
	}
	mustEqual(t, got, content)
	if !strings.Contains(logs.String(), "slow chunk that still moves") {
		t.Fatalf("no wait outlasted StallTimeout, so the test proved nothing:\n%s", logs.String())
	}
}
