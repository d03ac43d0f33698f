package seeding

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	dto "github.com/prometheus/client_model/go"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// fakeContent is containerd's content store as the seeding loop reads it:
// blobs by digest, and an error to answer instead while fail is set.
type fakeContent struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
	fail  error
	reads int
}

type contentReader struct {
	*bytes.Reader
}

func (contentReader) Close() error { return nil }

func (c *fakeContent) ReaderAt(_ context.Context, d digest.Digest) (content.ReaderAt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	if c.fail != nil {
		return nil, c.fail
	}
	b, ok := c.blobs[d]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	return contentReader{bytes.NewReader(b)}, nil
}

func (c *fakeContent) readCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

// fakeAnnouncer records what the seeding loop tells the tracker, with the
// tracker's rules: a partial announcement of a complete digest changes
// nothing, a complete one replaces a partial one.
type fakeAnnouncer struct {
	complete map[digest.Digest]bool // announced complete, not withdrawn
	partial  map[digest.Digest]bool // announced partial, not withdrawn
	calls    int                    // Announce and Withdraw calls
	lookup   map[digest.Digest][]tracker.Seeder
}

func newFakeAnnouncer() *fakeAnnouncer {
	return &fakeAnnouncer{complete: map[digest.Digest]bool{}, partial: map[digest.Digest]bool{}, lookup: map[digest.Digest][]tracker.Seeder{}}
}

func (a *fakeAnnouncer) Announce(d digest.Digest, complete bool) error {
	a.calls++
	switch {
	case complete:
		a.complete[d] = true
		delete(a.partial, d)
	case !a.complete[d]:
		a.partial[d] = true
	}
	return nil
}

func (a *fakeAnnouncer) Withdraw(d digest.Digest) error {
	a.calls++
	delete(a.complete, d)
	delete(a.partial, d)
	return nil
}

func (a *fakeAnnouncer) Lookup(d digest.Digest) []tracker.Seeder { return a.lookup[d] }

// peers is the swarm's view of the tracker in these tests: loopback
// addresses are members, seeders are listed by hand.
type peers struct {
	mu      sync.Mutex
	seeders map[digest.Digest][]swarm.Peer
}

func (p *peers) Seeders(d digest.Digest) []swarm.Peer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seeders[d])
}

func (p *peers) IsMember(a netip.Addr) bool { return a.IsLoopback() }

// testSwarm is an in-process swarm on ip with its peer endpoint.
type testSwarm struct {
	*swarm.Swarm
	http *httptest.Server
}

func startSwarm(t *testing.T, ip string, p *peers) *testSwarm {
	t.Helper()
	sw, err := swarm.New(swarm.Config{
		DataDir:       t.TempDir(),
		ListenAddr:    net.JoinHostPort(ip, "0"),
		Seeders:       p,
		Members:       p,
		Gate:          &peerauth.Gate{Member: p.IsMember}, // keyless, as the daemon's gate
		Logger:        quietLog(),
		SmallBlobSize: 1 << 20, // the 4 MiB test blobs take the torrent path
		PeerRefresh:   100 * time.Millisecond,
		StallTimeout:  10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		sw.Close()
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: sw.PeerHandler()}}
	srv.Start()
	t.Cleanup(func() { srv.Close(); sw.Close() })
	return &testSwarm{Swarm: sw, http: srv}
}

func (s *testSwarm) peer() swarm.Peer {
	return swarm.Peer{TorrentAddr: s.TorrentAddr(), HTTPAddr: s.http.Listener.Addr().String()}
}

// serves reports whether sw's peer endpoint answers a member with the blob.
func serves(sw *swarm.Swarm, d digest.Digest) bool {
	req := httptest.NewRequest(http.MethodGet, "/peer/v1/blobs/"+d.String(), nil)
	req.RemoteAddr = "127.0.0.9:4000"
	rec := httptest.NewRecorder()
	sw.PeerHandler().ServeHTTP(rec, req)
	return rec.Code == http.StatusOK
}

func quietLog() *slog.Logger {
	if os.Getenv("SEEDING_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newTestSeeder is New with the default backoff, quiet.
func newTestSeeder(t *testing.T, store ContentStore, sw Swarm, ann Announcer, release func(digest.Digest) error) *Seeder {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Store, cfg.Swarm, cfg.Tracker, cfg.Release, cfg.Logger = store, sw, ann, release, quietLog()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func blobOf(t *testing.T, size int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, digest.FromBytes(b)
}

// A verified download not yet seeded is not served by /peer/v1/blobs, so it
// must not be announced as complete (a member listed as a complete seeder
// answered 404): it is announced partial until containerd's copy is seeded.
func TestAnnouncesCompleteOnlyWhatThePeerEndpointsServe(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	a := startSwarm(t, "127.0.0.2", p)
	b := startSwarm(t, "127.0.0.3", p)
	blob, d := blobOf(t, 4<<20)
	if err := a.Seed(context.Background(), d, int64(len(blob)), bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	p.seeders[d] = []swarm.Peer{a.peer()}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := b.Blob(ctx, oci.Ref{Registry: "docker.io", Repository: "library/test"}, d)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := src.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("download: %d bytes, err %v", len(got), err)
	}

	store := &fakeContent{blobs: map[digest.Digest][]byte{}}
	ann := newFakeAnnouncer()
	s := newTestSeeder(t, store, b.Swarm, ann, nil)
	s.announce()
	if ann.complete[d] || serves(b.Swarm, d) {
		t.Fatalf("verified download: announced complete=%v, served=%v; want neither", ann.complete[d], serves(b.Swarm, d))
	}
	if !ann.partial[d] {
		t.Fatal("a verified download is not announced as partial")
	}

	// containerd commits the blob: the seed replaces the download.
	store.blobs[d] = blob
	s.Changed([]digest.Digest{d}, nil)
	s.apply(ctx)
	s.announce()
	if !ann.complete[d] || !serves(b.Swarm, d) {
		t.Fatalf("seeded: announced complete=%v, served=%v; want both", ann.complete[d], serves(b.Swarm, d))
	}
	if ann.partial[d] {
		t.Fatal("seeded blob still announced partial")
	}
}

// When containerd gains a blob the egress spooled, containerd's copy is
// seeded first and only then the spool released: the digest is served at
// every moment in between.
func TestSpoolIsReleasedOnlyOnceContainerdsCopyIsSeeded(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	blob, d := blobOf(t, 4<<20)
	spool := filepath.Join(t.TempDir(), "spool")
	if err := os.WriteFile(spool, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	store := &fakeContent{blobs: map[digest.Digest][]byte{}}
	var s *Seeder
	released := 0
	release := func(rd digest.Digest) error {
		released++
		if h := s.held[rd]; h.spool {
			t.Error("spool released while the swarm still seeds it")
		}
		if !serves(sw.Swarm, rd) {
			t.Error("spool released while containerd's copy is not served")
		}
		return nil
	}
	s = newTestSeeder(t, store, sw.Swarm, newFakeAnnouncer(), release)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	s.EgressComplete(d, spool, int64(len(blob)))
	s.apply(ctx)
	if !s.held[d].spool || !serves(sw.Swarm, d) {
		t.Fatal("the verified spool is not seeded")
	}

	var gaps, polls atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			polls.Add(1)
			if !serves(sw.Swarm, d) {
				gaps.Add(1)
			}
		}
	}()
	store.blobs[d] = blob
	s.Changed([]digest.Digest{d}, nil)
	s.apply(ctx)
	close(stop)
	<-done

	if released != 1 {
		t.Fatalf("spool released %d times, want 1", released)
	}
	if s.held[d].spool {
		t.Fatal("still seeding the spool after containerd gained the blob")
	}
	if gaps.Load() > 0 {
		t.Fatalf("%d of %d peer requests found the digest unserved while the spool was swapped", gaps.Load(), polls.Load())
	}
}

// A failed Seed is logged, counted and retried on later passes of the loop
// with a growing, bounded delay, until it works or containerd drops the blob.
func TestFailedSeedIsRetriedWithBackoff(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	blob, d := blobOf(t, 64<<10)
	store := &fakeContent{blobs: map[digest.Digest][]byte{d: blob}, fail: errors.New("containerd: read failed")}
	s := newTestSeeder(t, store, sw.Swarm, newFakeAnnouncer(), nil)
	clock := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return clock }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	s.Changed([]digest.Digest{d}, nil)
	s.apply(ctx)
	if got := counted(t, s); got != 1 {
		t.Fatalf("failures counted: %v, want 1", got)
	}
	// Each failure doubles the wait; nothing is retried before it is due.
	for attempt, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		reads := store.readCount()
		clock = clock.Add(wait - time.Millisecond)
		s.retryDue(ctx)
		if store.readCount() != reads {
			t.Fatalf("attempt %d: retried before its %v backoff", attempt+2, wait)
		}
		clock = clock.Add(time.Millisecond)
		s.retryDue(ctx)
		if store.readCount() != reads+1 {
			t.Fatalf("attempt %d: not retried after its %v backoff", attempt+2, wait)
		}
	}
	if got := counted(t, s); got != 4 {
		t.Fatalf("failures counted: %v, want 4", got)
	}

	// The backoff is bounded.
	for range 30 {
		clock = clock.Add(s.cfg.RetryMax)
		s.retryDue(ctx)
	}
	if r := s.retry[d]; r == nil || r.next.Sub(clock) != s.cfg.RetryMax {
		t.Fatalf("backoff after many failures: %+v, want %v", r, s.cfg.RetryMax)
	}

	store.mu.Lock()
	store.fail = nil
	store.mu.Unlock()
	clock = clock.Add(s.cfg.RetryMax)
	s.retryDue(ctx)
	if !serves(sw.Swarm, d) {
		t.Fatal("not seeding after the store recovered")
	}
	if len(s.retry) != 0 {
		t.Fatalf("retries left after success: %v", s.retry)
	}

	// containerd dropping a blob ends its retries.
	_, gone := blobOf(t, 1024)
	store.mu.Lock()
	store.blobs[gone] = []byte("x")
	store.fail = errors.New("containerd: read failed")
	store.mu.Unlock()
	s.Changed([]digest.Digest{gone}, nil)
	s.apply(ctx)
	if s.retry[gone] == nil {
		t.Fatal("failed seed not scheduled for retry")
	}
	s.Changed(nil, []digest.Digest{gone})
	s.apply(ctx)
	if s.retry[gone] != nil {
		t.Fatal("retrying a blob containerd no longer holds")
	}
}

// counted is the value of dregistry_seed_failures_total.
func counted(t *testing.T, s *Seeder) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.failures.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// An egress spool stays while the cluster seeds the blob elsewhere (there
// is no "released once others seed it" rule: the data dir's cache evicts it
// by LRU); a spool of a blob containerd holds already goes at once; and one
// the cache evicted is no longer seeded.
func TestSpoolLeavesOnlyByContainerdOrEviction(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	store := &fakeContent{blobs: map[digest.Digest][]byte{}}
	ann := newFakeAnnouncer()
	released := map[digest.Digest]int{}
	s := newTestSeeder(t, store, sw.Swarm, ann, func(d digest.Digest) error { released[d]++; return nil })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spoolOf := func(blob []byte) string {
		path := filepath.Join(t.TempDir(), "spool")
		if err := os.WriteFile(path, blob, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}

	blob, d := blobOf(t, 4<<20)
	s.EgressComplete(d, spoolOf(blob), int64(len(blob)))
	s.apply(ctx)
	ann.lookup[d] = []tracker.Seeder{{Node: "a", Complete: true}, {Node: "b", Complete: true}, {Node: "c", Complete: true}}
	s.announce()
	if !s.held[d].spool || released[d] != 0 {
		t.Fatalf("a spool others seed was released (held %+v, released %d)", s.held[d], released[d])
	}

	s.SpoolEvicted(d)
	s.apply(ctx)
	if _, ok := s.held[d]; ok || serves(sw.Swarm, d) {
		t.Fatal("an evicted spool is still seeded")
	}

	// containerd holds the blob before the egress's spool of it is seeded.
	blob2, d2 := blobOf(t, 4<<20)
	store.blobs[d2] = blob2
	s.Changed([]digest.Digest{d2}, nil)
	s.apply(ctx)
	s.EgressComplete(d2, spoolOf(blob2), int64(len(blob2)))
	s.apply(ctx)
	if released[d2] != 1 || s.held[d2].spool || !serves(sw.Swarm, d2) {
		t.Fatalf("spool of a blob containerd holds: released %d times, held %+v", released[d2], s.held[d2])
	}
}
