package swarm

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// peerStatus is what n's peer endpoint answers a member for path.
func peerStatus(n *node, path string) int {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = "127.0.0.9:4000"
	rec := httptest.NewRecorder()
	n.PeerHandler().ServeHTTP(rec, req)
	return rec.Code
}

// statsOf returns n's stats of dgst.
func statsOf(t *testing.T, n *node, dgst digest.Digest) TorrentStats {
	t.Helper()
	for _, ts := range n.Stats().Torrents {
		if ts.Digest == dgst {
			return ts
		}
	}
	t.Fatalf("no torrent of %s", dgst)
	return TorrentStats{}
}

// Stats.Seeding is what the daemon announces as complete, so it must be
// exactly what the peer endpoints serve: a verified download is neither
// (it was once announced complete and answered 404), its seed is both.
func TestStatsSeedingIsWhatThePeerEndpointsServe(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	b := startNode(t, tr, "127.0.0.3", "", nil)
	content, dgst := randomBlob(t, 4<<20)
	seed(t, a, tr, content, dgst)

	got, err := readBlob(t, b, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)

	check := func(when string, wantServed bool) {
		t.Helper()
		ts := statsOf(t, b, dgst)
		if !ts.Verified {
			t.Fatalf("%s: the download is not verified", when)
		}
		for _, path := range []string{blobPathPrefix + dgst.String(), metainfoPathPrefix + dgst.String()} {
			served := peerStatus(b, path) == http.StatusOK
			if served != ts.Seeding || served != wantServed {
				t.Fatalf("%s: GET %s served=%v, Stats.Seeding=%v; want both %v", when, path, served, ts.Seeding, wantServed)
			}
		}
	}
	check("verified download", false)
	if err := b.Seed(context.Background(), dgst, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	check("seeded", true)
}

// Replace swaps the content a digest is seeded from (the egress spool for
// containerd's copy) without a moment where the digest is not served.
func TestReplaceKeepsTheDigestServedThroughout(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	content, dgst := randomBlob(t, 2<<20)
	seed(t, a, tr, content, dgst)

	var gaps, polls atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			polls.Add(1)
			if peerStatus(a, blobPathPrefix+dgst.String()) != http.StatusOK {
				gaps.Add(1)
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 50 && time.Now().Before(deadline); i++ {
		if err := a.Replace(context.Background(), dgst, int64(len(content)), bytes.NewReader(content)); err != nil {
			t.Fatalf("replace %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	if gaps.Load() > 0 {
		t.Fatalf("%d of %d peer requests during Replace were not served", gaps.Load(), polls.Load())
	}
	if n := len(a.Stats().Torrents); n != 1 {
		t.Fatalf("%d torrents after replacing, want 1", n)
	}
}

// Content that does not match the digest is refused and the old seed stays.
func TestReplaceWithWrongContentKeepsTheOldSeed(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	content, dgst := randomBlob(t, 2<<20)
	seed(t, a, tr, content, dgst)
	a.meta.remove(dgst) // so Replace hashes what it is given

	wrong := bytes.Repeat([]byte{1}, len(content))
	if err := a.Replace(context.Background(), dgst, int64(len(wrong)), bytes.NewReader(wrong)); err == nil {
		t.Fatal("Replace accepted content that does not match the digest")
	}
	if code := peerStatus(a, blobPathPrefix+dgst.String()); code != http.StatusOK {
		t.Fatalf("after a refused Replace the seed answers %d, want 200", code)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, blobPathPrefix+dgst.String(), nil)
	req.RemoteAddr = "127.0.0.9:4000"
	a.PeerHandler().ServeHTTP(rec, req)
	mustEqual(t, rec.Body.Bytes(), content)
}
