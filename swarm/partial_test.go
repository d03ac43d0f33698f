package swarm

import (
	"context"
	"errors"
	"testing"

	"github.com/dregistry/dregistry/registry/oci"
)

// Peers that are themselves downloading may never hold every piece (the
// blob's complete copies may be gone), so they alone must not start or keep
// a download that could hang: the registry moves on to the next source.
func TestOnlyPartialSeedersIsNotFound(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	d := startNode(t, tr, "127.0.0.3", "", nil)
	content, dgst := randomBlob(t, 4<<20)
	seed(t, a, tr, content, dgst)

	tr.mu.Lock()
	tr.seeders[dgst] = []Peer{{TorrentAddr: a.TorrentAddr(), HTTPAddr: a.http.Listener.Addr().String(), Partial: true}}
	tr.mu.Unlock()
	if _, err := d.Blob(context.Background(), oci.Ref{}, dgst); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("only a partial seeder: err = %v, want not found", err)
	}
	if st := d.Stats().Torrents; len(st) != 0 {
		t.Fatalf("a download started with only a partial seeder: %+v", st)
	}

	tr.mu.Lock()
	tr.seeders[dgst] = []Peer{a.peer()}
	tr.mu.Unlock()
	got, err := readBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)

	// A download that started with a complete seeder is served as long as
	// one is listed; once only partial ones are, a new request is refused
	// unless the download is already complete.
	d.mu.Lock()
	e := d.torrents[dgst]
	d.mu.Unlock()
	if e == nil || !e.isVerified() {
		t.Fatal("download not complete after reading it whole")
	}
	tr.mu.Lock()
	tr.seeders[dgst] = []Peer{{TorrentAddr: a.TorrentAddr(), Partial: true}}
	tr.mu.Unlock()
	if b, err := d.Blob(context.Background(), oci.Ref{}, dgst); err != nil {
		t.Fatalf("complete download with only partial seeders listed: %v", err)
	} else {
		b.Close()
	}
}
