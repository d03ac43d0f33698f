package containerd

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/dregistry/dregistry/internal/testenv"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readAll reads a content.ReaderAt whole and checks its reported size.
func readAll(t *testing.T, ra content.ReaderAt, want []byte) {
	t.Helper()
	if ra.Size() != int64(len(want)) {
		t.Fatalf("Size() = %d, want %d", ra.Size(), len(want))
	}
	got, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes that differ from the %d written", len(got), len(want))
	}
	// A read in the middle, as a Range request makes.
	mid := make([]byte, 100)
	if _, err := ra.ReadAt(mid, 1000); err != nil {
		t.Fatalf("ReadAt(1000): %v", err)
	}
	if !bytes.Equal(mid, want[1000:1100]) {
		t.Fatal("ReadAt(1000) returned other bytes")
	}
}

func TestStoreReaderAtServesEveryNamespaceFromFileAndOverGRPC(t *testing.T) {
	ctd := testenv.StartContainerd(t, "")
	w := newWriter(t, ctd)
	s := newTestStore(t, ctd, Config{})
	ctx := testContext(t)
	if !s.Ready() {
		t.Fatal("Store not Ready with containerd up")
	}

	data := randomBytes(t, 256<<10)
	dgst := w.keptBlob("k8s.io", data) // not in "default": every namespace is searched

	t.Run("file", func(t *testing.T) {
		ra, err := s.ReaderAt(ctx, dgst)
		if err != nil {
			t.Fatal(err)
		}
		defer ra.Close()
		fr, ok := ra.(interface{ File() *os.File })
		if !ok || fr.File() == nil {
			t.Fatalf("reader %T has no file though the content directory is readable", ra)
		}
		if want := filepath.Join(ctd.Root, "io.containerd.content.v1.content", "blobs", "sha256", dgst.Encoded()); fr.File().Name() != want {
			t.Fatalf("file %s, want %s", fr.File().Name(), want)
		}
		readAll(t, ra, data)
	})

	t.Run("grpc when the directory is not visible", func(t *testing.T) {
		// As from another mount namespace: the reported root does not exist here.
		s.contentRoot = filepath.Join(t.TempDir(), "elsewhere")
		ra, err := s.ReaderAt(ctx, dgst)
		if err != nil {
			t.Fatal(err)
		}
		defer ra.Close()
		if _, ok := ra.(interface{ File() *os.File }); ok {
			t.Fatalf("reader %T claims a file that is not there", ra)
		}
		readAll(t, ra, data)
	})

	t.Run("grpc when the file disagrees with the metadata", func(t *testing.T) {
		root := t.TempDir()
		bad := filepath.Join(root, "blobs", "sha256", dgst.Encoded())
		if err := os.MkdirAll(filepath.Dir(bad), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bad, data[:len(data)-1], 0o600); err != nil {
			t.Fatal(err)
		}
		s.contentRoot = root
		ra, err := s.ReaderAt(ctx, dgst)
		if err != nil {
			t.Fatal(err)
		}
		defer ra.Close()
		if _, ok := ra.(interface{ File() *os.File }); ok {
			t.Fatal("a file of the wrong size was served")
		}
		readAll(t, ra, data)
	})
}

func TestStoreReaderAtRefusesWhatItCannotServe(t *testing.T) {
	ctd := testenv.StartContainerd(t, "")
	w := newWriter(t, ctd)
	ctx := testContext(t)
	held := w.keptBlob("moby", randomBytes(t, 4096))

	tests := []struct {
		name  string
		cfg   Config
		dgst  digest.Digest
		check func(error) bool
	}{
		{"unknown digest", Config{}, digest.FromString("never written"), errdefs.IsNotFound},
		{"namespace not chosen", Config{Namespaces: []string{"default", "k8s.io"}}, held, errdefs.IsNotFound},
		{"malformed digest", Config{}, "sha256:zz", errdefs.IsInvalidArgument},
		{"path traversal", Config{}, "sha256:../../../etc/passwd", errdefs.IsInvalidArgument},
		{"empty digest", Config{}, "", errdefs.IsInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t, ctd, tc.cfg)
			ra, err := s.ReaderAt(ctx, tc.dgst)
			if err == nil {
				ra.Close()
				t.Fatalf("ReaderAt(%q) succeeded", tc.dgst)
			}
			if !tc.check(err) {
				t.Fatalf("ReaderAt(%q): wrong kind of error: %v", tc.dgst, err)
			}
		})
	}
}

func TestStoreImageTargetPrefersTheNewestRecord(t *testing.T) {
	ctd := testenv.StartContainerd(t, "")
	w := newWriter(t, ctd)
	s := newTestStore(t, ctd, Config{})
	ctx := testContext(t)
	const name = "docker.io/library/alpine:3.20"

	older := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("older"), Size: 5}
	newer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("newer"), Size: 5}

	if _, err := s.ImageTarget(ctx, name); !errdefs.IsNotFound(err) {
		t.Fatalf("ImageTarget before any record: %v, want not found", err)
	}
	first := w.image("k8s.io", name, older)
	// UpdatedAt has nanoseconds, yet make sure the second record is later.
	for i := 0; i < 100 && !time.Now().After(first.UpdatedAt); i++ {
		time.Sleep(time.Millisecond)
	}
	w.image("default", name, newer)

	got, err := s.ImageTarget(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != newer.Digest || got.MediaType != newer.MediaType || got.Size != newer.Size {
		t.Fatalf("ImageTarget = %+v, want %+v", got, newer)
	}

	only := newTestStore(t, ctd, Config{Namespaces: []string{"k8s.io"}})
	if got, err := only.ImageTarget(ctx, name); err != nil || got.Digest != older.Digest {
		t.Fatalf("ImageTarget in k8s.io only = %v, %v; want %s", got.Digest, err, older.Digest)
	}
	// A record made by ctr, the way users name images.
	const tagged = "docker.io/library/alpine:latest"
	if out, err := ctd.Ctr(t, "-n", "moby", "images", "tag", name, tagged); err == nil {
		t.Fatalf("ctr tagged an image that moby does not have: %s", out)
	}
	if _, err := ctd.Ctr(t, "-n", "default", "images", "tag", name, tagged); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ImageTarget(ctx, tagged); err != nil || got.Digest != newer.Digest {
		t.Fatalf("ImageTarget(%s) after ctr images tag = %v, %v; want %s", tagged, got.Digest, err, newer.Digest)
	}

	if _, err := s.ImageTarget(ctx, ""); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("ImageTarget(\"\"): %v, want invalid argument", err)
	}
}

func TestStoreBecomesReadyWhenContainerdStartsLate(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	addr := filepath.Join(dir, "containerd.sock") // where testenv puts the socket
	if len(addr) > 100 {
		t.Skipf("temp dir too long for a socket: %s", addr)
	}
	s, err := New(testContext(t), Config{Address: addr, ConnectWait: 200 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New must not fail for a containerd that is not up yet: %v", err)
	}
	defer s.Close()
	if s.Ready() {
		t.Fatal("Ready with no containerd")
	}
	if err := s.Ping(testContext(t)); err == nil || !errdefs.IsUnavailable(err) {
		t.Fatalf("Ping with no containerd: %v, want unavailable", err)
	}
	if _, err := s.ReaderAt(testContext(t), digest.FromString("x")); err == nil || errdefs.IsNotFound(err) {
		t.Fatalf("ReaderAt with no containerd: %v; must not claim not-found", err)
	}

	ctd := testenv.StartContainerd(t, dir)
	if ctd.Address != addr {
		t.Fatalf("testenv socket %s, expected %s", ctd.Address, addr)
	}
	eventually(t, "Ready after containerd started", func() bool {
		return s.Ping(testContext(t)) == nil && s.Ready()
	})
}
