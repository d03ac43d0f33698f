package swarm

import (
	"bytes"
	"context"
	"testing"
)

// A seeder counts what it sent, per digest and in total, and the per-digest
// count survives the torrent being dropped and seeded again.
func TestUploadedBytesAreCountedAndOutliveTheTorrent(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	b := startNode(t, tr, "127.0.0.3", "", nil)
	content, dgst := randomBlob(t, 8<<20+3)
	size := int64(len(content))
	if st := a.Stats(); st.UploadedBytes != 0 || st.DownloadedBytes != 0 {
		t.Fatalf("fresh node: %+v", st)
	}
	seed(t, a, tr, content, dgst)
	got, err := readBlob(t, b, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)

	sa, sb := a.Stats(), b.Stats()
	if len(sa.Torrents) != 1 || sa.Torrents[0].UploadedBytes < size || sa.UploadedBytes < size {
		t.Fatalf("seeder after one download of %d bytes: %+v", size, sa)
	}
	if sb.DownloadedBytes < size || sb.Torrents[0].UploadedBytes != 0 {
		t.Fatalf("downloader: %+v", sb)
	}
	before := sa.Torrents[0].UploadedBytes

	a.Unseed(dgst)
	if err := a.Seed(context.Background(), dgst, size, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); len(st.Torrents) != 1 || st.Torrents[0].UploadedBytes != before || st.UploadedBytes < before {
		t.Fatalf("after unseed and seed again, uploaded %+v, want %d kept", st, before)
	}
}

// Traffic per peer address counts what a seeder sent to each downloader and
// what the downloader received from it, and keeps the counts after the
// connections closed and the torrent was dropped.
func TestPeerTrafficCountsBothDirectionsPerAddress(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	b := startNode(t, tr, "127.0.0.3", "", nil)
	content, dgst := randomBlob(t, 8<<20+3)
	size := int64(len(content))
	seed(t, a, tr, content, dgst)
	got, err := readBlob(t, b, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)

	if down := b.Stats().Peers["127.0.0.2"]; down.Downloaded < size || down.Uploaded != 0 {
		t.Fatalf("downloader's traffic with the seeder: %+v, want %d down", down, size)
	}
	up := a.Stats().Peers["127.0.0.3"]
	if up.Uploaded < size || up.Downloaded != 0 {
		t.Fatalf("seeder's traffic with the downloader: %+v, want %d up", up, size)
	}
	// Dropping the seed closes its connections: their counts stay.
	a.Unseed(dgst)
	st := a.Stats()
	if again := st.Peers["127.0.0.3"]; again.Uploaded < up.Uploaded || again.Uploaded > st.UploadedBytes {
		t.Fatalf("after unseed %+v, before %+v, node total %d", again, up, st.UploadedBytes)
	}
}
