// Package sourcetest is the conformance suite of oci.Source: every
// implementation (containerd, upstream, swarm and egress) runs it, so the
// handler can rely on one behaviour.
package sourcetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// Content is one small image a harness puts into its source.
type Content struct {
	Ref      oci.Ref
	Tag      string
	Manifest oci.Manifest // an OCI image manifest whose config is Blob
	Blob     []byte
}

// BlobDigest is the digest of c.Blob.
func (c Content) BlobDigest() digest.Digest { return digest.FromBytes(c.Blob) }

// NewContent builds an image of one pseudo-random blob of size bytes.
func NewContent(ref oci.Ref, tag string, size int, seed uint64) Content {
	r := rand.New(rand.NewPCG(seed, ^seed))
	blob := make([]byte, size+8)
	for i := 0; i < size; i += 8 {
		binary.LittleEndian.PutUint64(blob[i:], r.Uint64())
	}
	blob = blob[:size:size]
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(blob), Size: int64(size)},
		Layers:    []ocispec.Descriptor{},
	}
	m.SchemaVersion = 2
	body, err := json.Marshal(m)
	if err != nil {
		panic(err) // a fixed struct always marshals
	}
	return Content{
		Ref: ref, Tag: tag, Blob: blob,
		Manifest: oci.Manifest{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(body), Content: body},
	}
}

// Harness describes the source under test.
type Harness struct {
	// New returns a source holding c (its tag, manifest and blob).
	New func(t *testing.T, c Content) oci.Source
	// ResolvesTags is false for sources that only serve by digest.
	ResolvesTags bool
	// ServesManifests is false for blob-only sources.
	ServesManifests bool
	// Registry is the registry of the content's Ref; default "127.0.0.1:5000".
	Registry string
}

// Run checks the Source contract.
func Run(t *testing.T, h Harness) {
	if h.Registry == "" {
		h.Registry = "127.0.0.1:5000"
	}
	ref := oci.Ref{Registry: h.Registry, Repository: "conformance/app"}
	c := NewContent(ref, "v1", 1<<20+13, 42)
	src := h.New(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	missing := digest.FromString("not in any source")

	if src.Name() == "" {
		t.Error("Name is empty")
	}
	if h.ResolvesTags {
		t.Run("Resolve", func(t *testing.T) {
			desc, err := src.Resolve(ctx, ref, c.Tag)
			if err != nil {
				t.Fatal(err)
			}
			if desc.Digest != c.Manifest.Digest {
				t.Errorf("tag resolves to %s, want %s", desc.Digest, c.Manifest.Digest)
			}
			if desc.Size != 0 && desc.Size != int64(len(c.Manifest.Content)) {
				t.Errorf("descriptor size %d, want %d", desc.Size, len(c.Manifest.Content))
			}
			if desc.MediaType != "" && desc.MediaType != c.Manifest.MediaType {
				t.Errorf("descriptor media type %q, want %q", desc.MediaType, c.Manifest.MediaType)
			}
			if _, err := src.Resolve(ctx, ref, "no-such-tag"); !errors.Is(err, oci.ErrNotFound) {
				t.Errorf("unknown tag: %v, want ErrNotFound", err)
			}
		})
	}
	if h.ServesManifests {
		t.Run("Manifest", func(t *testing.T) {
			m, err := src.Manifest(ctx, ref, c.Manifest.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if m.Digest != c.Manifest.Digest || m.MediaType != c.Manifest.MediaType || !bytes.Equal(m.Content, c.Manifest.Content) {
				t.Errorf("Manifest = %s %q %d bytes, want %s %q %d bytes", m.Digest, m.MediaType, len(m.Content),
					c.Manifest.Digest, c.Manifest.MediaType, len(c.Manifest.Content))
			}
			if _, err := src.Manifest(ctx, ref, missing); !errors.Is(err, oci.ErrNotFound) {
				t.Errorf("unknown manifest: %v, want ErrNotFound", err)
			}
		})
	}
	t.Run("Blob", func(t *testing.T) {
		b, err := src.Blob(ctx, ref, c.BlobDigest())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		size := int64(len(c.Blob))
		if b.Size() != size {
			t.Fatalf("Size %d, want %d", b.Size(), size)
		}
		for _, offset := range []int64{0, 1, size / 2, size - 1, size} {
			rc, err := b.Open(ctx, offset)
			if err != nil {
				t.Fatalf("Open(%d): %v", offset, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, c.Blob[offset:]) {
				t.Fatalf("Open(%d): %d bytes, %v; want blob[%d:]", offset, len(got), err, offset)
			}
		}
		if sb, ok := b.(oci.SeekableBlob); ok {
			rs := sb.ReadSeeker()
			if _, err := rs.Seek(size/3, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rs)
			if err != nil || !bytes.Equal(got, c.Blob[size/3:]) {
				t.Fatalf("ReadSeeker from %d: %d bytes, %v", size/3, len(got), err)
			}
		}
		if _, err := src.Blob(ctx, ref, missing); !errors.Is(err, oci.ErrNotFound) {
			t.Errorf("unknown blob: %v, want ErrNotFound", err)
		}
	})
	t.Run("OtherRepositoryOrRegistry", func(t *testing.T) {
		// A source keyed by repository must not answer for another one; a
		// content-addressed one (containerd) may. Either way: no error
		// other than ErrNotFound, and right bytes when it answers.
		other := oci.Ref{Registry: h.Registry, Repository: "conformance/other"}
		b, err := src.Blob(ctx, other, c.BlobDigest())
		switch {
		case errors.Is(err, oci.ErrNotFound):
		case err != nil:
			t.Errorf("blob in another repository: %v", err)
		default:
			rc, err := b.Open(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			b.Close()
			if err != nil || !bytes.Equal(got, c.Blob) {
				t.Errorf("blob from another repository: %d bytes, %v", len(got), err)
			}
		}
	})
}
