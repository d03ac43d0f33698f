package oci

import (
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
)

// ErrDigestMismatch marks content that is not what its digest names, or a
// registry's answer that names another digest than asked for.
var ErrDigestMismatch = errors.New("digest mismatch")

// discardStep bounds the bytes skipped by one Read.
const discardStep = 8 << 20

// NewVerifyingReader reads the blob want of size bytes from body, starting
// at the caller's offset skip: the bytes before it are read and hashed but
// not returned. The read that would end the blob is held back until the
// hash matches, so a caller never receives a complete blob that is wrong;
// a short or failing body is an error wrapping io.ErrUnexpectedEOF or the
// body's error. from names the body in errors ("GET <url>").
func NewVerifyingReader(body io.ReadCloser, from string, want digest.Digest, size, skip int64) io.ReadCloser {
	return &verifyingReader{body: body, from: from, want: want, hash: want.Algorithm().Hash(), size: size, skip: skip}
}

// NewResumedVerifyingReader reads the blob want of size bytes from body,
// which starts at byte pos of it: h holds the hash of bytes [0,pos), which
// the caller got elsewhere (and delivered). As NewVerifyingReader, the
// read that would end the blob is held back until the hash of the whole
// matches.
func NewResumedVerifyingReader(body io.ReadCloser, from string, want digest.Digest, size, pos int64, h hash.Hash) io.ReadCloser {
	return &verifyingReader{body: body, from: from, want: want, hash: h, size: size, pos: pos}
}

type verifyingReader struct {
	body io.ReadCloser
	from string
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
		// caller's stall watch sees the body is alive during a long skip.
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
	return n, v.readErr(err)
}

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
			if v.pos == v.size {
				return v.verify()
			}
			return nil
		}
		if err := v.readErr(err); err != nil {
			return err
		}
	}
	return nil
}

func (v *verifyingReader) readErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%s: body ended at %d of %d bytes: %w", v.from, v.pos, v.size, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("%s: at %d of %d bytes: %w", v.from, v.pos, v.size, err)
}

func (v *verifyingReader) verify() error {
	if got := digest.NewDigest(v.want.Algorithm(), v.hash); got != v.want {
		return fmt.Errorf("%s: content hashes to %s, not %s: %w", v.from, got, v.want, ErrDigestMismatch)
	}
	return nil
}

func (v *verifyingReader) Close() error { return v.body.Close() }
