package registry

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"sync"

	"github.com/opencontainers/go-digest"
)

// errDigestMismatch marks content that is not what its digest names.
var errDigestMismatch = errors.New("digest mismatch")

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
	return &verifyingReader{
		body: body, url: b.url, want: b.dgst, hash: b.dgst.Algorithm().Hash(),
		size: b.size, skip: offset,
	}, nil
}

// verifyingReader hashes a blob as it passes and withholds the final bytes
// until the hash matches: on a mismatch the last read fails, so a client
// never receives a complete blob that is wrong.
type verifyingReader struct {
	body io.ReadCloser
	url  string
	want digest.Digest
	hash hash.Hash
	size int64 // bytes the blob has
	pos  int64 // bytes read from body
	skip int64 // bytes still to drop before the caller's offset

	scratch []byte // for dropped bytes
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.skip > 0 {
		// Drop at most discardStep per call and report "nothing yet", so a
		// caller's stall watch sees the upstream is alive during a long skip.
		return 0, v.discard(discardStep)
	}
	if v.pos == v.size {
		if err := v.verify(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p = p[:min(int64(len(p)), v.size-v.pos)]
	n, err := v.body.Read(p)
	v.hash.Write(p[:n])
	v.pos += int64(n)
	if v.pos == v.size {
		if verr := v.verify(); verr != nil {
			return 0, verr // hold back the final chunk
		}
		return n, nil
	}
	switch {
	case err == io.EOF:
		return n, fmt.Errorf("GET %s: body ended at %d of %d bytes: %w", v.url, v.pos, v.size, io.ErrUnexpectedEOF)
	case err != nil:
		return n, fmt.Errorf("GET %s: at %d of %d bytes: %w", v.url, v.pos, v.size, err)
	}
	return n, nil
}

// discardStep bounds the bytes skipped by one Read.
const discardStep = 8 << 20

// discard reads and hashes up to limit of the bytes before the caller's offset.
func (v *verifyingReader) discard(limit int64) error {
	if v.scratch == nil {
		v.scratch = make([]byte, min(v.skip, 64<<10))
	}
	buf := v.scratch
	for v.skip > 0 && limit > 0 {
		n, err := v.body.Read(buf[:min(int64(len(buf)), v.skip)])
		v.hash.Write(buf[:n])
		v.pos += int64(n)
		v.skip -= int64(n)
		limit -= int64(n)
		if v.skip == 0 {
			break
		}
		if err == io.EOF {
			return fmt.Errorf("GET %s: body ended at %d of %d bytes: %w", v.url, v.pos, v.size, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("GET %s: at %d of %d bytes: %w", v.url, v.pos, v.size, err)
		}
	}
	return nil
}

func (v *verifyingReader) verify() error {
	if got := digest.NewDigest(v.want.Algorithm(), v.hash); got != v.want {
		return fmt.Errorf("GET %s: content hashes to %s: %w", v.url, got, errDigestMismatch)
	}
	return nil
}

func (v *verifyingReader) Close() error { return v.body.Close() }
