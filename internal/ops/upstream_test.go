package ops

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// fakeUpstream stands in for the upstream registry client, which this test
// does not test: one blob and one manifest.
type fakeUpstream struct {
	blob, manifest []byte
}

func (f *fakeUpstream) Name() string { return "upstream" }
func (f *fakeUpstream) Resolve(context.Context, oci.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{Digest: digest.FromBytes(f.manifest), Size: int64(len(f.manifest))}, nil
}
func (f *fakeUpstream) Manifest(_ context.Context, _ oci.Ref, d digest.Digest) (*oci.Manifest, error) {
	if d != digest.FromBytes(f.manifest) {
		return nil, oci.ErrNotFound
	}
	return &oci.Manifest{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Content: f.manifest}, nil
}
func (f *fakeUpstream) Blob(_ context.Context, _ oci.Ref, d digest.Digest) (oci.Blob, error) {
	if d != digest.FromBytes(f.blob) {
		return nil, oci.ErrNotFound
	}
	return fakeBlob(f.blob), nil
}

type fakeBlob []byte

func (b fakeBlob) Size() int64  { return int64(len(b)) }
func (b fakeBlob) Close() error { return nil }
func (b fakeBlob) Open(_ context.Context, off int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b[off:])), nil
}

// readUpstream fetches blob (whole, then its second half) and manifest
// through the meter: len(blob)*3/2 + len(manifest) bytes, give or take the
// rounding of the half.
func readUpstream(t *testing.T, s *Server, blob, manifest []byte) {
	t.Helper()
	ctx := context.Background()
	src := s.MeterUpstream(&fakeUpstream{blob: blob, manifest: manifest})
	if _, err := src.Resolve(ctx, oci.Ref{}, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Manifest(ctx, oci.Ref{}, digest.FromBytes(manifest)); err != nil {
		t.Fatal(err)
	}
	b, err := src.Blob(ctx, oci.Ref{}, digest.FromBytes(blob))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, off := range []int64{0, int64(len(blob)) / 2} {
		rc, err := b.Open(ctx, off)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, blob[off:]) {
			t.Fatalf("blob from %d: %q, %v", off, got, err)
		}
	}
	if _, err := src.Blob(ctx, oci.Ref{}, digest.FromString("missing")); err == nil {
		t.Fatal("missing blob found")
	}
}

func TestUpstreamMeterCountsBytesFetchedNotServed(t *testing.T) {
	s, _, _ := newTestServer(t)
	blob, manifest := []byte("0123456789"), []byte(`{"m":1}`)
	readUpstream(t, s, blob, manifest)
	// Serving is not fetching: a response served from the egress spool
	// adds nothing here.
	s.Observer().Served("blob", "egress", 200, 10, 0, 0)
	if got, want := s.snapshot().Totals.UpstreamFetched, int64(10+5+len(manifest)); got != want {
		t.Fatalf("upstream fetched %d bytes, want %d", got, want)
	}
}

// verifyingFakeBlob claims what registry's upstream blobs claim.
type verifyingFakeBlob struct{ fakeBlob }

func (b verifyingFakeBlob) VerifiesDigest() digest.Digest { return digest.FromBytes(b.fakeBlob) }

type verifyingFakeUpstream struct{ fakeUpstream }

func (f *verifyingFakeUpstream) Blob(ctx context.Context, ref oci.Ref, d digest.Digest) (oci.Blob, error) {
	b, err := f.fakeUpstream.Blob(ctx, ref, d)
	if err != nil {
		return nil, err
	}
	return verifyingFakeBlob{b.(fakeBlob)}, nil
}

// The meter keeps a blob that verifies its own reads one (the egress
// download relies on it not to hash twice), and never makes a plain blob
// claim it.
func TestUpstreamMeterKeepsVerifyingBlobs(t *testing.T) {
	s, _, _ := newTestServer(t)
	ctx := context.Background()
	blob := []byte("0123456789")
	for _, tc := range []struct {
		name string
		src  oci.Source
		want bool
	}{
		{"verifying", &verifyingFakeUpstream{fakeUpstream{blob: blob}}, true},
		{"plain", &fakeUpstream{blob: blob}, false},
	} {
		b, err := s.MeterUpstream(tc.src).Blob(ctx, oci.Ref{}, digest.FromBytes(blob))
		if err != nil {
			t.Fatal(err)
		}
		vb, ok := b.(oci.VerifyingBlob)
		if ok != tc.want || (ok && vb.VerifiesDigest() != digest.FromBytes(blob)) {
			t.Errorf("%s: metered blob is VerifyingBlob %v (want %v)", tc.name, ok, tc.want)
		}
	}
}
