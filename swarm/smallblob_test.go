package swarm

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// fakeSmallSeeder serves whole small blobs on the peer blob path, counting
// requests and the most in flight at once; each answer waits for release
// (closed: at once).
type fakeSmallSeeder struct {
	srv            *httptest.Server
	blobs          map[digest.Digest][]byte
	release        chan struct{}
	requests       atomic.Int64
	inFlight, most atomic.Int64
	mu             sync.Mutex
}

func newFakeSmallSeeder(t *testing.T, blobs map[digest.Digest][]byte) *fakeSmallSeeder {
	f := &fakeSmallSeeder{blobs: blobs, release: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		content, ok := f.blobs[digest.Digest(strings.TrimPrefix(r.URL.Path, blobPathPrefix))]
		if !ok {
			http.NotFound(w, r)
			return
		}
		f.requests.Add(1)
		n := f.inFlight.Add(1)
		defer f.inFlight.Add(-1)
		f.mu.Lock()
		f.most.Store(max(f.most.Load(), n))
		f.mu.Unlock()
		select {
		case <-f.release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(content)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// peer lists the fake as a complete seeder (its torrent address is never
// dialled: small blobs come over HTTP only).
func (f *fakeSmallSeeder) peer() Peer {
	return Peer{TorrentAddr: netip.MustParseAddrPort("127.0.0.99:1"), HTTPAddr: f.srv.Listener.Addr().String()}
}

// smallNode is a node that knows the metainfo of each blob and finds the
// fake as their seeder.
func smallNode(t *testing.T, f *fakeSmallSeeder, tune func(*Config)) *node {
	tr := newTracker()
	n := startNode(t, tr, "127.0.0.3", "", tune)
	for d, content := range f.blobs {
		if err := n.meta.store(mustHash(t, content, d)); err != nil {
			t.Fatal(err)
		}
		tr.mu.Lock()
		tr.seeders[d] = []Peer{f.peer()}
		tr.mu.Unlock()
	}
	return n
}

// Concurrent requests for one small blob share one fetch from the seeder.
func TestConcurrentSmallBlobRequestsShareOneFetch(t *testing.T) {
	content, dgst := randomBlob(t, 300<<10)
	f := newFakeSmallSeeder(t, map[digest.Digest][]byte{dgst: content})
	n := smallNode(t, f, nil)
	const callers = 10
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := readBlob(t, n, dgst, 0)
			if err == nil && string(got) != string(content) {
				err = errors.New("content differs")
			}
			errs[i] = err
		}()
	}
	// Every caller is waiting on the fetch before it is answered.
	waitFor(t, "the fetch to reach the seeder", func() bool { return f.inFlight.Load() == 1 })
	time.Sleep(100 * time.Millisecond)
	close(f.release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if got := f.requests.Load(); got != 1 {
		t.Fatalf("the seeder got %d requests for one blob, want 1", got)
	}
}

// The small-blob fetches in flight hold at most SmallFetchBytes: the next
// waits for room, and a caller whose deadline passes meanwhile gets an
// error at its deadline, not after the fetch ahead of it.
func TestSmallBlobFetchesAreBoundedInBytes(t *testing.T) {
	blobs := map[digest.Digest][]byte{}
	var digests []digest.Digest
	for range 3 {
		content, d := randomBlob(t, 600<<10)
		blobs[d] = content
		digests = append(digests, d)
	}
	f := newFakeSmallSeeder(t, blobs)
	n := smallNode(t, f, func(c *Config) { c.SmallFetchBytes = 1 << 20 }) // room for one at a time
	first := make(chan error, 1)
	go func() { _, err := readBlob(t, n, digests[0], 0); first <- err }()
	waitFor(t, "the first fetch to reach the seeder", func() bool { return f.inFlight.Load() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := n.Blob(ctx, refForTests(), digests[1])
	if err == nil {
		t.Fatal("a fetch with no room finished while the first held the buffers")
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("the caller waited %s past its 300ms deadline", waited)
	}
	close(f.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, d := range digests[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := readBlob(t, n, d, 0); err != nil {
				t.Errorf("%s: %v", d, err)
			}
		}()
	}
	wg.Wait()
	if most := f.most.Load(); most != 1 {
		t.Fatalf("%d small-blob fetches ran at once with room for one", most)
	}
}
