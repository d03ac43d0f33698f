package swarm

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
)

// tracker is the in-process stand-in for the gossip tracker: a seeder list
// per digest that tests edit, and membership by address.
type tracker struct {
	mu      sync.Mutex
	seeders map[digest.Digest][]Peer
	outside map[netip.Addr]bool
}

func newTracker() *tracker {
	return &tracker{seeders: map[digest.Digest][]Peer{}, outside: map[netip.Addr]bool{}}
}

func (tr *tracker) Seeders(d digest.Digest) []Peer {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]Peer(nil), tr.seeders[d]...)
}

func (tr *tracker) IsMember(a netip.Addr) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return a.IsLoopback() && !tr.outside[a]
}

func (tr *tracker) announce(d digest.Digest, n *node) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.seeders[d] = append(tr.seeders[d], n.peer())
}

func (tr *tracker) withdraw(d digest.Digest, n *node) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var keep []Peer
	for _, p := range tr.seeders[d] {
		if p != n.peer() {
			keep = append(keep, p)
		}
	}
	tr.seeders[d] = keep
}

// node is one in-process daemon: a Swarm on its own loopback address with
// its peer HTTP endpoint.
type node struct {
	*Swarm
	http *httptest.Server
	ip   string
}

func (n *node) peer() Peer {
	return Peer{TorrentAddr: n.TorrentAddr(), HTTPAddr: n.http.Listener.Addr().String()}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SWARM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startNode starts a node on 127.0.0.<host>; every node of a test gets its
// own address so a ban of one does not hit the others.
func startNode(t testing.TB, tr *tracker, ip string, dir string, tune func(*Config)) *node {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := Config{
		DataDir:      dir,
		ListenAddr:   net.JoinHostPort(ip, "0"),
		Seeders:      tr,
		Members:      tr,
		Logger:       testLogger(t),
		StallTimeout: 8 * time.Second,
		PeerRefresh:  100 * time.Millisecond,
		// Small, so the torrent path is tested with blobs of a few MiB.
		SmallBlobSize: 1 << 20,
	}
	if tune != nil {
		tune(&cfg)
	}
	if cfg.Gate == nil {
		// The node's one gate, as the daemon builds it.
		cfg.Gate = &peerauth.Gate{Keys: cfg.PeerKeys, Member: tr.IsMember}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		s.Close()
		t.Fatalf("listen: %v", err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: s.PeerHandler()}}
	srv.Start()
	n := &node{Swarm: s, http: srv, ip: ip}
	t.Cleanup(func() { n.stop() })
	return n
}

func (n *node) stop() {
	n.http.Close()
	n.Close()
}

// randomBlob returns size random bytes and their digest.
func randomBlob(t testing.TB, size int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, digest.FromBytes(b)
}

// openBlob opens dgst on n from offset; the stream ends with the test.
func openBlob(t testing.TB, n *node, dgst digest.Digest, offset int64) (io.ReadCloser, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	rc, err := openBlobIn(ctx, n, dgst, offset)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { rc.Close() })
	return rc, nil
}

// openBlobIn opens dgst on n from offset under ctx; the caller closes it.
func openBlobIn(ctx context.Context, n *node, dgst digest.Digest, offset int64) (io.ReadCloser, error) {
	b, err := n.Blob(ctx, refForTests(), dgst)
	if err != nil {
		return nil, err
	}
	return b.Open(ctx, offset)
}

// drainInBackground opens dgst on n from 0 and reads it to the end on
// another goroutine; the channel gets the read's error (nil at the end).
func drainInBackground(t testing.TB, n *node, dgst digest.Digest) <-chan error {
	t.Helper()
	rc, err := openBlob(t, n, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, rc)
		done <- err
	}()
	return done
}

// readBlob opens dgst on n from offset and reads it to the end.
func readBlob(t testing.TB, n *node, dgst digest.Digest, offset int64) ([]byte, error) {
	t.Helper()
	rc, err := openBlob(t, n, dgst, offset)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func mustEqual(t testing.TB, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("content differs: got %d bytes, want %d", len(got), len(want))
	}
}

func refForTests() oci.Ref {
	return oci.Ref{Registry: "docker.io", Repository: "library/test"}
}
