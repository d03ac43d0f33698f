package registry_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry"
	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/sourcetest"
)

func TestLocalConformance(t *testing.T) {
	sourcetest.Run(t, sourcetest.Harness{
		ResolvesTags: true, ServesManifests: true,
		New: func(t *testing.T, c sourcetest.Content) oci.Source {
			store := dirStore{dir: t.TempDir(), images: map[string]ocispec.Descriptor{
				c.Ref.String() + ":" + c.Tag: {MediaType: c.Manifest.MediaType, Digest: c.Manifest.Digest, Size: int64(len(c.Manifest.Content))},
			}}
			for _, b := range [][]byte{c.Blob, c.Manifest.Content} {
				if err := os.WriteFile(filepath.Join(store.dir, digest.FromBytes(b).Encoded()), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			return registry.NewLocalSource(store)
		},
	})
}

// dirStore stands in for the containerd package: files named by digest.
type dirStore struct {
	dir    string
	images map[string]ocispec.Descriptor
}

func (s dirStore) ReaderAt(_ context.Context, dgst digest.Digest) (content.ReaderAt, error) {
	f, err := os.Open(filepath.Join(s.dir, dgst.Encoded()))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dgst, oci.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileReaderAt{f: f, size: fi.Size()}, nil
}

func (s dirStore) ImageTarget(_ context.Context, name string) (ocispec.Descriptor, error) {
	d, ok := s.images[name]
	if !ok {
		return d, fmt.Errorf("image %s: %w", name, oci.ErrNotFound)
	}
	return d, nil
}

// fileReaderAt has File(), as the containerd package's reader has when
// the content directory is readable.
type fileReaderAt struct {
	f    *os.File
	size int64
}

func (r fileReaderAt) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r fileReaderAt) Close() error                            { return r.f.Close() }
func (r fileReaderAt) Size() int64                             { return r.size }
func (r fileReaderAt) File() *os.File                          { return r.f }
