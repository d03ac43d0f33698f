package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// upstreamBlob is a blob the upstream has; Open downloads and verifies it.
type upstreamBlob struct {
	u    *Client
	r    repository
	url  string
	dgst digest.Digest
	size int64

	mu      sync.Mutex
	pending io.ReadCloser // body of the GET that found the size, if any
}

func (b *upstreamBlob) Size() int64 { return b.size }

// VerifiesDigest implements oci.VerifyingBlob: Open's reader is a verifying reader.
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
		var err error
		if body, err = b.openWhole(ctx); err != nil {
			return nil, err
		}
	}
	return oci.NewVerifyingReader(body, "GET "+b.url, b.dgst, b.size, offset), nil
}

// openWhole GETs the whole blob's body, unverified.
func (b *upstreamBlob) openWhole(ctx context.Context) (io.ReadCloser, error) {
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
	return resp.Body, nil
}

// OpenFrom implements oci.ResumableBlob: a GET with Range bytes=<offset>-. A
// 206 must carry exactly "bytes <offset>-<size-1>/<size>"; a 200 (a
// registry or storage that ignores Range) is the whole blob, start 0.
func (b *upstreamBlob) OpenFrom(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
	if offset < 0 || offset >= b.size {
		return nil, 0, fmt.Errorf("offset %d outside blob of %d bytes", offset, b.size)
	}
	if body := b.takePending(); body != nil {
		return body, 0, nil // the GET that found the size: from byte 0
	}
	if offset == 0 {
		rc, err := b.openWhole(ctx)
		return rc, 0, err
	}
	h := http.Header{}
	h.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	resp, err := b.u.doHeader(ctx, b.r, http.MethodGet, b.url, h)
	if err != nil {
		return nil, 0, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != b.size {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("GET %s: Content-Length %d, but the blob has %d bytes", b.url, resp.ContentLength, b.size)
		}
		return resp.Body, 0, nil
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		if err := checkContentRange(cr, offset, b.size); err != nil {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("GET %s from byte %d: %w", b.url, offset, err)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != b.size-offset {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("GET %s from byte %d: Content-Length %d, want %d: %w", b.url, offset, resp.ContentLength, b.size-offset, oci.ErrBadContentRange)
		}
		return resp.Body, offset, nil
	}
	return nil, 0, checkStatus(resp, http.MethodGet, b.url)
}

// checkContentRange accepts exactly "bytes <offset>-<size-1>/<size>".
func checkContentRange(cr string, offset, size int64) error {
	want := fmt.Sprintf("bytes %d-%d/%d", offset, size-1, size)
	if strings.TrimSpace(cr) != want {
		return fmt.Errorf("Content-Range %q, want %q: %w", cr, want, oci.ErrBadContentRange)
	}
	return nil
}

var (
	_ oci.VerifyingBlob = (*upstreamBlob)(nil)
	_ oci.ResumableBlob = (*upstreamBlob)(nil)
)
