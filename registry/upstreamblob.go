package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/opencontainers/go-digest"
)

// upstreamBlob is a blob the upstream has; Open downloads and verifies it.
type upstreamBlob struct {
	u    *Upstream
	r    repository
	url  string
	dgst digest.Digest
	size int64

	mu      sync.Mutex
	pending io.ReadCloser // body of the GET that found the size, if any
}

func (b *upstreamBlob) Size() int64 { return b.size }

// VerifiesDigest implements VerifyingBlob: Open's reader is a verifying reader.
func (b *upstreamBlob) VerifiesDigest() digest.Digest { return b.dgst }

func (b *upstreamBlob) Close() error {
	if body := b.takePending(); body != nil {
		return body.Close()
	}
	return nil
}

// takePending hands out the body Blob already has, once.
func (b *upstreamBlob) takePending() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	body := b.pending
	b.pending = nil
	return body
}

// Open GETs the whole blob even for offset > 0: a digest cannot be checked
// from the middle, and bytes from a ranged upstream GET could not be checked
// at all. The first offset bytes are hashed and dropped.
func (b *upstreamBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	if offset < 0 || offset > b.size {
		return nil, fmt.Errorf("offset %d outside blob of %d bytes", offset, b.size)
	}
	body := b.takePending()
	if body == nil {
		resp, err := b.u.do(ctx, b.r, http.MethodGet, b.url, "")
		if err != nil {
			return nil, err
		}
		if err := checkStatus(resp, http.MethodGet, b.url); err != nil {
			return nil, err
		}
		if resp.ContentLength >= 0 && resp.ContentLength != b.size {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: Content-Length %d, but the blob has %d bytes", b.url, resp.ContentLength, b.size)
		}
		body = resp.Body
	}
	return NewVerifyingReader(body, "GET "+b.url, b.dgst, b.size, offset), nil
}

var _ VerifyingBlob = (*upstreamBlob)(nil)
