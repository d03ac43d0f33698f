package swarm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// countingReader counts the reads of a seed's content.
type countingReader struct {
	r     *bytes.Reader
	reads atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.r.ReadAt(p, off)
}

// spoolFile writes content to a file of the test and opens it (closed at
// the test's end).
func spoolFile(t *testing.T, content []byte) (string, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spool")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return path, f
}

// growAndComplete grows content on owner from a spool file and completes
// it: owner seeds the spool, as the egress does once its fetch ended.
func growAndComplete(t *testing.T, owner *node, content []byte, dgst digest.Digest) {
	t.Helper()
	_, f := spoolFile(t, content)
	g, err := owner.Grow(dgst, int64(len(content)), f)
	if err != nil {
		t.Fatal(err)
	}
	g.Advance(int64(len(content)))
	g.Complete()
	waitFor(t, "the grown blob to become a seed", func() bool { return owner.seeded(dgst) != nil })
}

// Replacing the egress spool by containerd's copy keeps the blob's chunk
// torrents, whose drop closed the connections of every peer downloading
// from the egress (its uplink idled 1-2 s in BenchmarkRollout, just as it
// finished its fetch), and the pieces come from the new content from then
// on.
func TestReplaceOfAGrownSeedKeepsItsTorrents(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 4*testChunk)
	// 1 MiB/s: the download spans the Replace.
	owner := startNode(t, tr, "127.0.4.41", "", chunked(func(c *Config) { c.UploadLimit = 1 << 20 }))
	growAndComplete(t, owner, content, dgst)
	tr.announce(dgst, owner)
	before := joinedChunks(owner, dgst)

	dl := startNode(t, tr, "127.0.4.42", "", chunked())
	done := drainInBackground(t, dl, dgst)
	waitFor(t, "the downloader to connect to the owner", func() bool {
		for _, c := range joinedChunks(owner, dgst) {
			if len(c.t.PeerConns()) > 0 {
				return true
			}
		}
		return false
	})
	fresh := &countingReader{r: bytes.NewReader(content)}
	if err := owner.Replace(context.Background(), dgst, int64(len(content)), fresh); err != nil {
		t.Fatal(err)
	}
	after := joinedChunks(owner, dgst)
	if len(after) != len(before) {
		t.Fatalf("%d chunk torrents after Replace, %d before", len(after), len(before))
	}
	for k := range after {
		if after[k].t != before[k].t {
			t.Fatalf("chunk %d's torrent was dropped and added again", k)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("download across the Replace: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the download did not end within a minute")
	}
	if fresh.reads.Load() == 0 {
		t.Error("no piece was read from the new content")
	}
}

// The new content is checked on each piece's first read, as any Seed's: a
// copy that differs from the blob (the metainfo is cached, so Replace
// hashes nothing) is caught and the seed dropped, and no byte of it
// reaches a peer as good data.
func TestReplaceOfAGrownSeedChecksTheNewContent(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 3*testChunk)
	owner := startNode(t, tr, "127.0.4.43", "", chunked())
	growAndComplete(t, owner, content, dgst)
	tr.announce(dgst, owner)
	bad := bytes.Clone(content)
	for off := 100; off < len(bad); off += int(PieceLength(int64(len(bad)))) {
		bad[off] ^= 0xff
	}
	if err := owner.Replace(context.Background(), dgst, int64(len(bad)), bytes.NewReader(bad)); err != nil {
		t.Fatal(err)
	}
	corruptSeedIsDropped(t, tr, owner, dgst, "127.0.4.44")
}

// corruptSeedIsDropped checks that a node started on ip cannot read dgst,
// whose only seed, owner's, is corrupted, that owner drops that seed, and
// that no byte of it reached the node.
func corruptSeedIsDropped(t *testing.T, tr *tracker, owner *node, dgst digest.Digest, ip string) {
	t.Helper()
	late := startNode(t, tr, ip, "", chunked(func(c *Config) { c.StallTimeout = 2 * time.Second }))
	if got, err := readBlob(t, late, dgst, 0); err == nil {
		t.Fatalf("read %d bytes of a blob whose only seed is corrupted, want an error", len(got))
	}
	waitFor(t, "the corrupted seed to be dropped", func() bool { return owner.seeded(dgst) == nil })
	if st, _ := lookupStats(late, dgst); st.ReceivedFrom[owner.ip] != 0 {
		t.Fatalf("the corrupted seed sent %d bytes", st.ReceivedFrom[owner.ip])
	}
}

// finishedDownload has a node seed content and a second node, uploading at
// 1 MiB/s, download it whole; it returns the second.
func finishedDownload(t *testing.T, tr *tracker, content []byte, dgst digest.Digest, seederIP, ip string) *node {
	t.Helper()
	a := startNode(t, tr, seederIP, "", chunked())
	seed(t, a, tr, content, dgst)
	b := startNode(t, tr, ip, "", chunked(func(c *Config) { c.UploadLimit = 1 << 20 }))
	got, err := fetch(t, b, dgst)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)
	tr.withdraw(dgst, a)
	a.stop() // b is the blob's only source
	tr.announce(dgst, b)
	return b
}

// Seeding containerd's copy of a blob this node downloaded keeps the
// download's chunk torrents, whose drop closed the connections of every
// peer downloading from the node just as it had finished (BenchmarkRollout
// at N = 16: the rollout's last piece waited on such a node, then came from
// the egress); the pieces come from the copy from then on, and the
// download's files and cache account go at once.
func TestSeedOfAFinishedDownloadKeepsItsTorrents(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 4*testChunk)
	b := finishedDownload(t, tr, content, dgst, "127.0.4.45", "127.0.4.46")
	before := joinedChunks(b, dgst)

	c := startNode(t, tr, "127.0.4.47", "", chunked())
	// b is no seed yet, so its endpoints give no metainfo (the followers
	// of a rollout have it from the egress): c has it already.
	bi, err := b.meta.load(dgst)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.meta.store(bi); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		got, err := readBlob(t, c, dgst, 0)
		if err == nil && !bytes.Equal(got, content) {
			err = errors.New("the bytes read differ from the blob")
		}
		done <- err
	}()
	waitFor(t, "the downloader to connect to the finished node", func() bool {
		for _, ch := range joinedChunks(b, dgst) {
			if len(ch.t.PeerConns()) > 0 {
				return true
			}
		}
		return false
	})
	fresh := &countingReader{r: bytes.NewReader(content)}
	if err := b.Seed(context.Background(), dgst, int64(len(content)), fresh); err != nil {
		t.Fatal(err)
	}
	if b.seeded(dgst) == nil {
		t.Fatal("the local copy is not seeded")
	}
	after := joinedChunks(b, dgst)
	if len(after) != len(before) {
		t.Fatalf("%d chunk torrents after the Seed, %d before", len(after), len(before))
	}
	for k := range after {
		if after[k].t != before[k].t {
			t.Fatalf("chunk %d's torrent was dropped and added again", k)
		}
	}
	if files := downloadFiles(t, b, dgst); len(files) > 0 {
		t.Fatalf("download files left once the local copy is seeded: %v", files)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("download across the Seed: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the download did not end within a minute")
	}
	if fresh.reads.Load() == 0 {
		t.Error("no piece was read from the local copy")
	}
}

// The copy that takes a finished download's place is checked on each
// piece's first read, as any Seed's: the download cached the blob's
// metainfo, so a copy that differs (changed on disk) is not hashed at the
// Seed, and the check must catch it before a byte of it reaches a peer.
func TestSeedOfAFinishedDownloadChecksTheCopy(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 3*testChunk)
	b := finishedDownload(t, tr, content, dgst, "127.0.4.48", "127.0.4.49")
	bad := bytes.Clone(content)
	for off := 100; off < len(bad); off += int(PieceLength(int64(len(bad)))) {
		bad[off] ^= 0xff
	}
	if err := b.Seed(context.Background(), dgst, int64(len(bad)), bytes.NewReader(bad)); err != nil {
		t.Fatal(err)
	}
	corruptSeedIsDropped(t, tr, b, dgst, "127.0.4.50")
}
