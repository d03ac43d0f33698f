package ops

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// MeterUpstream wraps the source that reaches upstream registries so every
// byte read from it (blob bodies as they are read, manifests whole) counts
// in dregistry_upstream_bytes_total: what the node fetched, however many
// clients it then served. Its blobs are plain oci.Blob values, or
// oci.VerifyingBlob and oci.ResumableBlob ones when the
// source's are.
func (s *Server) MeterUpstream(src oci.Source) oci.Source {
	return &upstreamMeter{Source: src, m: s.metrics}
}

type upstreamMeter struct {
	oci.Source
	m *metrics
}

func (u *upstreamMeter) Manifest(ctx context.Context, ref oci.Ref, dgst digest.Digest) (*oci.Manifest, error) {
	mf, err := u.Source.Manifest(ctx, ref, dgst)
	if err == nil {
		u.m.addUpstream(int64(len(mf.Content)))
	}
	return mf, err
}

func (u *upstreamMeter) Resolve(ctx context.Context, ref oci.Ref, tag string) (ocispec.Descriptor, error) {
	return u.Source.Resolve(ctx, ref, tag) // a HEAD: no body to count
}

func (u *upstreamMeter) Blob(ctx context.Context, ref oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	b, err := u.Source.Blob(ctx, ref, dgst)
	if err != nil {
		return nil, err
	}
	mb := meteredBlob{b: b, m: u.m}
	rb, resumable := b.(oci.ResumableBlob)
	if vb, ok := b.(oci.VerifyingBlob); ok {
		// Counting changes no byte and no error, so the readers still verify.
		vmb := verifyingMeteredBlob{meteredBlob: mb, dgst: vb.VerifiesDigest()}
		if resumable {
			return resumableVerifyingBlob{verifyingMeteredBlob: vmb, from: meteredFrom{rb, u.m}}, nil
		}
		return vmb, nil
	}
	if resumable {
		return resumableMeteredBlob{meteredBlob: mb, from: meteredFrom{rb, u.m}}, nil
	}
	return mb, nil
}

// meteredFrom counts the bodies of an oci.ResumableBlob's OpenFrom.
type meteredFrom struct {
	b oci.ResumableBlob
	m *metrics
}

func (f meteredFrom) OpenFrom(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
	rc, start, err := f.b.OpenFrom(ctx, offset)
	if err != nil {
		return nil, 0, err
	}
	return meteredReader{rc: rc, m: f.m}, start, nil
}

type resumableMeteredBlob struct {
	meteredBlob
	from meteredFrom
}

func (b resumableMeteredBlob) OpenFrom(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
	return b.from.OpenFrom(ctx, offset)
}

type resumableVerifyingBlob struct {
	verifyingMeteredBlob
	from meteredFrom
}

func (b resumableVerifyingBlob) OpenFrom(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
	return b.from.OpenFrom(ctx, offset)
}

// verifyingMeteredBlob keeps an oci.VerifyingBlob one through the meter.
type verifyingMeteredBlob struct {
	meteredBlob
	dgst digest.Digest
}

func (b verifyingMeteredBlob) VerifiesDigest() digest.Digest { return b.dgst }

type meteredBlob struct {
	b oci.Blob
	m *metrics
}

func (b meteredBlob) Size() int64  { return b.b.Size() }
func (b meteredBlob) Close() error { return b.b.Close() }

func (b meteredBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	rc, err := b.b.Open(ctx, offset)
	if err != nil {
		return nil, err
	}
	return meteredReader{rc: rc, m: b.m}, nil
}

type meteredReader struct {
	rc io.ReadCloser
	m  *metrics
}

func (r meteredReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.m.addUpstream(int64(n))
	return n, err
}

func (r meteredReader) Close() error { return r.rc.Close() }
