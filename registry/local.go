package registry

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// ContentStore is what the local source needs from containerd; the
// containerd package implements it over every namespace.
type ContentStore interface {
	// ReaderAt opens dgst from whichever namespace holds it; errdefs.ErrNotFound otherwise.
	// A reader that also has File() *os.File is served by sendfile.
	ReaderAt(ctx context.Context, dgst digest.Digest) (content.ReaderAt, error)
	// ImageTarget is the target of the image record named name
	// (e.g. "docker.io/library/alpine:3.20") in any namespace.
	ImageTarget(ctx context.Context, name string) (ocispec.Descriptor, error)
}

// fileReader is a content.ReaderAt backed by a file in the content directory.
type fileReader interface {
	File() *os.File
}

// localSource serves this node's containerd content store.
type localSource struct {
	store ContentStore
}

// NewLocalSource returns the Source over containerd's content and image
// stores. Its blobs are seekable: a file when the store gives one, a
// section reader over the (gRPC) ReaderAt otherwise.
func NewLocalSource(store ContentStore) oci.Source {
	return &localSource{store: store}
}

func (l *localSource) Name() string { return "containerd" }

// Resolve answers from containerd's image records: the last known target of
// the tag, for when the upstream cannot be reached.
func (l *localSource) Resolve(ctx context.Context, ref oci.Ref, tag string) (ocispec.Descriptor, error) {
	name := ref.String() + ":" + tag
	desc, err := l.store.ImageTarget(ctx, name)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("image %s: %w", name, err)
	}
	return desc, nil
}

// Manifest reads a manifest from the content store, checks its digest and
// works out its media type.
func (l *localSource) Manifest(ctx context.Context, _ oci.Ref, dgst digest.Digest) (*oci.Manifest, error) {
	ra, err := l.store.ReaderAt(ctx, dgst)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	defer ra.Close()
	size := ra.Size()
	if size > oci.MaxManifestSize {
		return nil, fmt.Errorf("manifest %s: %d bytes, more than the %d a manifest may have", dgst, size, oci.MaxManifestSize)
	}
	if size < 0 {
		return nil, fmt.Errorf("manifest %s: store reports size %d", dgst, size)
	}
	body := make([]byte, size)
	if n, err := ra.ReadAt(body, 0); n < len(body) {
		return nil, fmt.Errorf("manifest %s: read %d of %d bytes: %w", dgst, n, size, err)
	}
	if got := dgst.Algorithm().FromBytes(body); got != dgst {
		return nil, fmt.Errorf("manifest %s: store content hashes to %s", dgst, got)
	}
	mt, err := oci.SniffManifestType(body)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	return &oci.Manifest{MediaType: mt, Digest: dgst, Content: body}, nil
}

// Blob opens a blob of the content store. The reader lives as long as the
// blob, so ctx must outlast the response (the handler's source context does).
func (l *localSource) Blob(ctx context.Context, _ oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	ra, err := l.store.ReaderAt(ctx, dgst)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", dgst, err)
	}
	if fr, ok := ra.(fileReader); ok {
		if f := fr.File(); f != nil {
			return &localBlob{ra: ra, rs: f}, nil
		}
	}
	return &localBlob{ra: ra, rs: io.NewSectionReader(ra, 0, ra.Size())}, nil
}

// localBlob is a SeekableBlob over a content store reader.
type localBlob struct {
	ra content.ReaderAt
	rs io.ReadSeeker
}

func (b *localBlob) Size() int64               { return b.ra.Size() }
func (b *localBlob) ReadSeeker() io.ReadSeeker { return b.rs }
func (b *localBlob) Close() error              { return b.ra.Close() }

func (b *localBlob) Open(_ context.Context, offset int64) (io.ReadCloser, error) {
	size := b.ra.Size()
	if offset < 0 || offset > size {
		return nil, fmt.Errorf("offset %d outside blob of %d bytes", offset, size)
	}
	return io.NopCloser(io.NewSectionReader(b.ra, offset, size-offset)), nil
}
