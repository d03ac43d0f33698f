package swarm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// Two downloads whose only seeder leaves (its containerd dropped the blob)
// fail their waiting reads after OrphanTimeout, not after StallTimeout,
// and say why: each still names the other, a partial peer, but that one
// lacks the same pieces. While the tracker names a complete seeder, even
// one that sends nothing, they wait (StallTimeout's business).
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
	var dones []<-chan error
	for _, ip := range []string{"127.0.0.22", "127.0.0.27"} {
		d := startNode(t, tr, ip, "", func(c *Config) {
			c.StallTimeout = 5 * time.Minute // far past every wait below
			c.OrphanTimeout = 300 * time.Millisecond
		})
		dones = append(dones, drainInBackground(t, d, dgst))
		tr.announcePartial(dgst, d) // as the daemon announces a download
	}
	for _, done := range dones {
		select {
		case err := <-done:
			t.Fatalf("read ended while a complete seeder was named: %v", err)
		case <-time.After(10 * 300 * time.Millisecond):
		}
	}
	// The seeder drops the blob and the tracker forgets it: only the two
	// downloads are left, and neither has a byte.
	tr.withdraw(dgst, seeder)
	release()
	seeder.Unseed(dgst)
	for _, done := range dones {
		select {
		case err := <-done:
			if !errors.Is(err, errNoPeer) || !errors.Is(err, oci.ErrStalled) {
				t.Fatalf("read failed with %v, want the no-peer stall", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("a read still waits a minute after the last complete seeder went")
		}
	}
}

// A download whose complete seeder is gone from the tracker but whose
// partial peers still pass it bytes is not orphaned, however slowly they
// come.
func TestDownloadFromPartialPeersThatMoveIsNotOrphaned(t *testing.T) {
	tr := newTracker()
	seeder, d, dgst, _, logs := startSlowPair(t, tr, "127.0.0.25", "127.0.0.26", func(c *Config) {
		c.OrphanTimeout = 1500 * time.Millisecond
	})
	done := drainInBackground(t, d, dgst)
	// Now the tracker knows it only as a node that is still downloading.
	tr.withdraw(dgst, seeder)
	tr.announcePartial(dgst, seeder)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read: %v\n%s", err, logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the read did not end within a minute")
	}
	if strings.Contains(logs.String(), "no complete peer") {
		t.Fatalf("the download was taken for orphaned:\n%s", logs.String())
	}
}

// A piece that arrives more slowly than StallTimeout, but moves, does not
// cut the stream: the watchdog counts its chunk's bytes as they come.
func TestSlowPieceThatMovesDoesNotStallTheStream(t *testing.T) {
	tr := newTracker()
	// Each of the last pieces takes about 4 s, far past the downloader's
	// StallTimeout.
	_, d, dgst, content, logs := startSlowPair(t, tr, "127.0.0.23", "127.0.0.24", func(c *Config) {
		c.StallTimeout = 1500 * time.Millisecond
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

// startSlowPair starts a seeder of a new 1.5 MiB blob (6 pieces of
// 256 KiB) whose upload is slow, and a downloader tuned by tune that logs
// to the returned buffer. The seeder's limiter lets its first MiB go at
// once (its burst), the last 512 KiB at 64 KiB/s: 8 s, in requests of
// 16 KiB.
func startSlowPair(t *testing.T, tr *tracker, seederIP, downloaderIP string, tune func(*Config)) (seeder, d *node, dgst digest.Digest, content []byte, logs *syncBuffer) {
	t.Helper()
	content, dgst = randomBlob(t, 3<<19)
	small := func(c *Config) { c.ChunkSize = 16 << 10 }
	seeder = startNode(t, tr, seederIP, "", func(c *Config) {
		small(c)
		c.UploadLimit = 64 << 10
	})
	seed(t, seeder, tr, content, dgst)
	logs = &syncBuffer{}
	d = startNode(t, tr, downloaderIP, "", func(c *Config) {
		small(c)
		tune(c)
		logTo(logs)(c)
	})
	return seeder, d, dgst, content, logs
}
