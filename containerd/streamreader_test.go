package containerd

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/dregistry/dregistry/internal/testenv"
	"google.golang.org/grpc"
)

func TestStreamReaderAtReadsAnyOffsetRight(t *testing.T) {
	ctd := testenv.StartContainerd(t, "")
	w := newWriter(t, ctd)
	data := randomBytes(t, 300<<10+17) // not a multiple of containerd's 32 KiB messages
	dgst := w.keptBlob("default", data)
	api := contentapi.NewContentClient(w.c.Conn().(*grpc.ClientConn))
	ctx := namespaces.WithNamespace(testContext(t), "default")
	size := int64(len(data))

	type read struct{ off, n int64 }
	tests := []struct {
		name  string
		reads []read
	}{
		{"sequential small reads", []read{{0, 1000}, {1000, 1000}, {2000, 40000}, {42000, 100}}},
		{"skip forward within a message", []read{{0, 10}, {20, 10}}},
		{"jump forward and back", []read{{200000, 5000}, {10, 10}, {size - 5, 5}}},
		{"last bytes", []read{{size - 1, 1}}},
		{"whole blob at once", []read{{0, size}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newStreamReaderAt(ctx, api, dgst, size)
			defer r.Close()
			for _, rd := range tc.reads {
				p := make([]byte, rd.n)
				n, err := r.ReadAt(p, rd.off)
				if err != nil || int64(n) != rd.n {
					t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", rd.n, rd.off, n, err)
				}
				if !bytes.Equal(p, data[rd.off:rd.off+rd.n]) {
					t.Fatalf("ReadAt(%d bytes at %d) returned other bytes", rd.n, rd.off)
				}
			}
		})
	}

	t.Run("read past the end gives what is there and io.EOF", func(t *testing.T) {
		r := newStreamReaderAt(ctx, api, dgst, size)
		defer r.Close()
		p := make([]byte, 100)
		n, err := r.ReadAt(p, size-40)
		if n != 40 || err != io.EOF || !bytes.Equal(p[:40], data[size-40:]) {
			t.Fatalf("ReadAt across the end = %d, %v", n, err)
		}
		if n, err := r.ReadAt(p, size); n != 0 || err != io.EOF {
			t.Fatalf("ReadAt at the end = %d, %v", n, err)
		}
		if _, err := r.ReadAt(p, -1); err == nil {
			t.Fatal("ReadAt at a negative offset succeeded")
		}
	})

	t.Run("a blob shorter than promised fails, never ends cleanly", func(t *testing.T) {
		r := newStreamReaderAt(ctx, api, dgst, size+10)
		defer r.Close()
		got, err := io.ReadAll(io.NewSectionReader(r, 0, size+10))
		if err == nil || errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("read %d bytes of a short blob with error %v; want unexpected EOF", len(got), err)
		}
	})

	t.Run("concurrent readers at random offsets", func(t *testing.T) {
		r := newStreamReaderAt(ctx, api, dgst, size)
		defer r.Close()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for g := range 4 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 1))
				for range 50 {
					off := rng.Int64N(size)
					n := min(rng.Int64N(70000)+1, size-off)
					p := make([]byte, n)
					if _, err := r.ReadAt(p, off); err != nil || !bytes.Equal(p, data[off:off+n]) {
						errs <- errors.Join(errors.New("wrong read"), err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})

	t.Run("closed reader refuses", func(t *testing.T) {
		r := newStreamReaderAt(ctx, api, dgst, size)
		r.Close()
		if _, err := r.ReadAt(make([]byte, 1), 0); err == nil {
			t.Fatal("read after Close succeeded")
		}
	})
}
