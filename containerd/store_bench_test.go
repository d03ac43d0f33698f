package containerd

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dregistry/dregistry/internal/testenv"
)

// BenchmarkReaderAt reads a 64 MiB blob whole from the content directory and
// over gRPC, the two ways the registry serves containerd's content.
func BenchmarkReaderAt(b *testing.B) {
	ctd := testenv.StartContainerd(b, "")
	w := newWriter(b, ctd)
	const size = 64 << 20
	dgst := w.keptBlob("default", randomBytes(b, size))
	s := newTestStore(b, ctd, Config{})
	ctx := testContext(b)

	for _, mode := range []string{"file", "grpc"} {
		b.Run(mode, func(b *testing.B) {
			if mode == "grpc" {
				s.contentRoot = filepath.Join(b.TempDir(), "not-visible")
			}
			b.SetBytes(size)
			for b.Loop() {
				ra, err := s.ReaderAt(ctx, dgst)
				if err != nil {
					b.Fatal(err)
				}
				var src io.Reader = io.NewSectionReader(ra, 0, ra.Size())
				if fr, ok := ra.(interface{ File() *os.File }); ok {
					src = fr.File() // io.Copy to a socket would use sendfile
				}
				n, err := io.Copy(io.Discard, src)
				ra.Close()
				if err != nil || n != size {
					b.Fatalf("copied %d of %d: %v", n, size, err)
				}
			}
		})
	}
}
