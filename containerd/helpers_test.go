package containerd

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/dregistry/dregistry/internal/testenv"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testDeadline bounds every wait of these tests.
const testDeadline = 30 * time.Second

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newTestStore connects a Store to ctd with cfg's Address filled in.
func newTestStore(t testing.TB, ctd *testenv.Containerd, cfg Config) *Store {
	t.Helper()
	cfg.Address = ctd.Address
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(testContext(t), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writer is a plain containerd client that puts content where the tests need it.
type writer struct {
	t testing.TB
	c *client.Client
}

func newWriter(t testing.TB, ctd *testenv.Containerd) *writer {
	t.Helper()
	c, err := client.New(ctd.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &writer{t: t, c: c}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// blob writes data into namespace ns under a fresh lease and returns its
// digest and the function that deletes the lease and collects garbage at once.
func (w *writer) blob(ns string, data []byte, labels map[string]string) (digest.Digest, func()) {
	w.t.Helper()
	ctx := namespaces.WithNamespace(testContext(w.t), ns)
	lctx, _, err := w.c.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		w.t.Fatalf("lease: %v", err)
	}
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(lctx, w.c.ContentStore(), "test-"+desc.Digest.Encoded(), bytes.NewReader(data), desc, content.WithLabels(labels)); err != nil {
		w.t.Fatalf("write blob in %s: %v", ns, err)
	}
	l, _ := leases.FromContext(lctx)
	release := func() {
		w.t.Helper()
		if err := w.c.LeasesService().Delete(ctx, leases.Lease{ID: l}, leases.SynchronousDelete); err != nil {
			w.t.Fatalf("delete lease: %v", err)
		}
	}
	return desc.Digest, release
}

// keptBlob writes data labelled as a GC root, so it stays without a lease.
func (w *writer) keptBlob(ns string, data []byte) digest.Digest {
	w.t.Helper()
	d, _ := w.blob(ns, data, map[string]string{"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339)})
	return d
}

// image creates or updates an image record named name pointing at target.
func (w *writer) image(ns, name string, target ocispec.Descriptor) images.Image {
	w.t.Helper()
	ctx := namespaces.WithNamespace(testContext(w.t), ns)
	is := w.c.ImageService()
	img := images.Image{Name: name, Target: target}
	got, err := is.Create(ctx, img)
	if err != nil {
		got, err = is.Update(ctx, img, "target")
	}
	if err != nil {
		w.t.Fatalf("image %s in %s: %v", name, ns, err)
	}
	return got
}

func (w *writer) deleteBlob(ns string, d digest.Digest) {
	w.t.Helper()
	ctx := namespaces.WithNamespace(testContext(w.t), ns)
	if err := w.c.ContentStore().Delete(ctx, d); err != nil {
		w.t.Fatalf("delete %s in %s: %v", d, ns, err)
	}
}

// eventually polls cond until it holds, failing the test at testDeadline.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for i := 0; ; i++ {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: still not %s", testDeadline, what)
		}
		time.Sleep(min(time.Duration(i+1)*10*time.Millisecond, 200*time.Millisecond))
	}
}
