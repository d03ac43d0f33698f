package egress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// The download hashes only what the upstream's own readers do not verify:
// registry's upstream verifies (its blobs are oci.VerifyingBlob, and
// stay so through the ops meter); a source whose blobs do not is hashed by
// the download, which fails a wrong blob before its last byte.
func TestFetchHashesWhatTheUpstreamDoesNotVerify(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1<<20+3, 7)
	b, err := up.source().Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	vb, ok := b.(oci.VerifyingBlob)
	_ = b.Close()
	if !ok || vb.VerifiesDigest() != c.BlobDigest() {
		t.Fatalf("registry's upstream blob: VerifyingBlob %v, digest %v", ok, vb)
	}

	wrong := bytes.Clone(c.Blob)
	wrong[len(wrong)/2] ^= 1
	plain := &plainSource{blob: wrong, dgst: c.BlobDigest()}
	n := newNode(t, "a", true, plain, &cluster{}, nil)
	// The download may fail before Fetch joins it (then Fetch returns its
	// error) or after (then the read does): either way with the mismatch,
	// and never with the whole blob.
	var got []byte
	fb, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
	if err == nil {
		got, err = readAllAt(ctx, fb, 0)
		_ = fb.Close()
	}
	if !errors.Is(err, errDigestMismatch) || len(got) >= len(wrong) {
		t.Errorf("a wrong blob from a source that does not verify: %d of %d bytes, err %v, want the digest mismatch", len(got), len(wrong), err)
	}
	if files := n.spoolFiles(t); len(files) != 0 {
		t.Errorf("spool dir holds %v after a failed download", files)
	}
	if calls := n.done.list(); len(calls) != 0 {
		t.Errorf("OnComplete called for a wrong blob: %v", calls)
	}
}

// plainSource serves one blob's bytes as they are, checking nothing.
type plainSource struct {
	blob []byte
	dgst digest.Digest
}

func (p *plainSource) Name() string { return "plain" }
func (p *plainSource) Resolve(context.Context, oci.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, oci.ErrNotFound
}
func (p *plainSource) Manifest(context.Context, oci.Ref, digest.Digest) (*oci.Manifest, error) {
	return nil, oci.ErrNotFound
}
func (p *plainSource) Blob(_ context.Context, _ oci.Ref, d digest.Digest) (oci.Blob, error) {
	if d != p.dgst {
		return nil, oci.ErrNotFound
	}
	return plainBlob(p.blob), nil
}

type plainBlob []byte

func (b plainBlob) Size() int64  { return int64(len(b)) }
func (b plainBlob) Close() error { return nil }
func (b plainBlob) Open(_ context.Context, off int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b[off:])), nil
}
