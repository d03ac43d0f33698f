package egress

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/sourcetest"
)

// pipeUpstream is an upstream client that checks nothing: the test writes
// the body, so the Fetcher's own digest check is all that stands between
// wrong bytes and the readers.
type pipeUpstream struct {
	size int64
	body *io.PipeReader
}

func (p *pipeUpstream) Name() string { return "pipe" }
func (p *pipeUpstream) Resolve(context.Context, oci.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, oci.ErrNotFound
}
func (p *pipeUpstream) Manifest(context.Context, oci.Ref, digest.Digest) (*oci.Manifest, error) {
	return nil, oci.ErrNotFound
}
func (p *pipeUpstream) Blob(context.Context, oci.Ref, digest.Digest) (oci.Blob, error) {
	return p, nil
}
func (p *pipeUpstream) Size() int64 { return p.size }
func (p *pipeUpstream) Open(context.Context, int64) (io.ReadCloser, error) {
	return p.body, nil
}
func (p *pipeUpstream) Close() error { return nil }

// Readers waiting at the edge of a download whose bytes are all there but
// wrong never get the last byte: the read fails instead.
func TestFetchHoldsBackTheLastByteUntilVerified(t *testing.T) {
	ctx := testCtx(t)
	c := sourcetest.NewContent(oci.Ref{Registry: "127.0.0.1:1", Repository: "x/y"}, "v1", 256<<10, 10)
	bad := bytes.Clone(c.Blob)
	bad[100] ^= 1
	size := int64(len(bad))
	pr, pw := io.Pipe()
	n := newNode(t, "a", true, &pipeUpstream{size: size, body: pr}, &cluster{}, nil)

	const readers = 6
	var wg sync.WaitGroup
	atEdge := make(chan struct{}, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
			if err != nil {
				t.Error(err)
				atEdge <- struct{}{}
				return
			}
			defer b.Close()
			off := int64(i * 1000)
			rc, _ := b.Open(ctx, off)
			defer rc.Close()
			head := make([]byte, size-2-off)
			if _, err := io.ReadFull(rc, head); err != nil {
				t.Error(err)
			}
			atEdge <- struct{}{}
			rest, err := io.ReadAll(rc)
			if err == nil || int64(len(head)+len(rest)) >= size-off {
				t.Errorf("reader at %d: %d bytes, %v; want the last byte held back and an error", off, len(head)+len(rest), err)
			}
		}()
	}
	if _, err := pw.Write(bad[:size-2]); err != nil {
		t.Fatal(err)
	}
	for range readers {
		<-atEdge
	}
	if _, err := pw.Write(bad[size-2:]); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if files := n.spoolFiles(t); len(files) != 0 {
		t.Errorf("spool dir holds %v", files)
	}
	if calls := n.done.list(); len(calls) != 0 {
		t.Errorf("OnComplete called: %v", calls)
	}
}

// A growing spool's reader offers its bytes as file spans (the handler
// sends them with sendfile) under the same rule as Read: the last byte only
// once the digest matched; a wrong blob fails the span that would end it.
func TestSpoolSpansHoldBackTheLastByteUntilVerified(t *testing.T) {
	for _, wrong := range []bool{false, true} {
		t.Run(map[bool]string{false: "right", true: "wrong"}[wrong], func(t *testing.T) {
			ctx := testCtx(t)
			c := sourcetest.NewContent(oci.Ref{Registry: "127.0.0.1:1", Repository: "x/y"}, "v1", 256<<10, 11)
			blob := bytes.Clone(c.Blob)
			if wrong {
				blob[100] ^= 1
			}
			size := int64(len(blob))
			pr, pw := io.Pipe()
			n := newNode(t, "a", true, &pipeUpstream{size: size, body: pr}, &cluster{}, nil)
			b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			const off = 7
			rc, err := b.Open(ctx, off)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			spans, ok := rc.(oci.FileSpans)
			if !ok {
				t.Fatalf("reader %T is not oci.FileSpans", rc)
			}
			// read takes spans until want bytes came or a span fails.
			var got []byte
			read := func(want int64) error {
				for int64(len(got)) < want {
					f, avail, err := spans.Span()
					if err != nil {
						return err
					}
					buf := make([]byte, min(avail, want-int64(len(got))))
					if _, err := io.ReadFull(f, buf); err != nil {
						t.Fatal(err)
					}
					spans.Sent(int64(len(buf)))
					got = append(got, buf...)
				}
				return nil
			}
			// Everything but the last byte is readable whatever the digest;
			// the last one is written once the reader is at the edge.
			atEdge := make(chan struct{})
			go func() {
				_, _ = pw.Write(blob[:size-1])
				<-atEdge
				_, _ = pw.Write(blob[size-1:])
			}()
			err = read(size - 1 - off)
			close(atEdge)
			if err != nil {
				t.Fatal(err)
			}
			err = read(size - off)
			if wrong {
				if err == nil || int64(len(got)) != size-1-off {
					t.Errorf("wrong blob: %d of %d bytes, %v; want the last byte held back and an error", len(got), size-off, err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, c.Blob[off:]) {
				t.Fatalf("right blob: %d of %d bytes, %v", len(got), size-off, err)
			}
			if _, _, err := spans.Span(); err != io.EOF {
				t.Errorf("span at the end: %v, want io.EOF", err)
			}
		})
	}
}
