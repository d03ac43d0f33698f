package egress

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry"
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
func (p *pipeUpstream) Resolve(context.Context, registry.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, registry.ErrNotFound
}
func (p *pipeUpstream) Manifest(context.Context, registry.Ref, digest.Digest) (*registry.Manifest, error) {
	return nil, registry.ErrNotFound
}
func (p *pipeUpstream) Blob(context.Context, registry.Ref, digest.Digest) (registry.Blob, error) {
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
	c := sourcetest.NewContent(registry.Ref{Registry: "127.0.0.1:1", Repository: "x/y"}, "v1", 256<<10, 10)
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
