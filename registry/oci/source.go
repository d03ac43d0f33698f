package oci

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrNotFound is what a Source returns when it does not hold the content; the
// handler then tries the next source. It is containerd's not-found error, so a
// containerd lookup needs no translation.
var ErrNotFound = errdefs.ErrNotFound

// ErrStalled is the cause when a transfer made no progress within its stall
// timeout: a source that stopped delivering, a swarm download no piece
// arrived for, an upstream download that stopped. One error for every
// layer, so errors.Is tells a stall from a failure wherever it surfaces.
var ErrStalled = errors.New("no progress within the stall timeout")

// ErrBadContentRange marks a ranged reply whose Content-Range is not the
// range asked for (or not one range of this blob at all): see ResumableBlob.
var ErrBadContentRange = errors.New("upstream answered another range than asked")

// Ref names a repository of a registry, as containerd asks a mirror for it:
// /v2/<Repository>/...?ns=<Registry>.
type Ref struct {
	Registry   string // "docker.io", "ghcr.io", "127.0.0.1:5000"
	Repository string // "library/alpine"
}

// String returns the reference as containerd names images: registry/repository.
func (r Ref) String() string { return r.Registry + "/" + r.Repository }

// Blob is a blob one source is ready to serve.
type Blob interface {
	// Size is the blob's length in bytes.
	Size() int64
	// Open returns the bytes from offset to the end. A source that finds its
	// bytes wrong (digest mismatch, short body) fails the read with an error,
	// never with an early io.EOF, so a response is aborted rather than
	// completed with bad data. Reads must end once ctx (or the ctx given to
	// Blob) is cancelled: that is how the handler cuts off a stalled source.
	Open(ctx context.Context, offset int64) (io.ReadCloser, error)
	// Close releases what the source holds for the blob.
	Close() error
}

// SeekableBlob is a Blob with random access. The handler serves it through
// http.ServeContent, which sends an *os.File with sendfile.
type SeekableBlob interface {
	Blob
	ReadSeeker() io.ReadSeeker
}

// FileSpans is a blob reader whose bytes lie in a file it has opened for
// itself: the handler sends them with sendfile instead of copying them
// through user space. Span waits, as Read would, until bytes at the
// reader's position may be sent, then returns the file positioned there and
// how many bytes may be read from it (at least one); a failure Read would
// return is Span's error. Sent moves the reader past n bytes sent from the
// last span. Bytes a Read would hold back are held back by Span too.
type FileSpans interface {
	io.ReadCloser
	Span() (*os.File, int64, error)
	Sent(n int64)
}

// Progressing is a blob reader whose blob can move while a Read waits for
// its next byte: Progress grows as bytes of the blob come in where the
// reader gets them from (a followed download's pieces, its owner's fetch),
// though none can be read yet. The handler sends such a stream's headers
// once its first byte is late and the blob moved, and its stall watch
// waits as long as Progress grows. A reader whose failure before its first
// byte is best answered by the next source (a swarm download that lost its
// peers) must not be one: once the headers are out, a failure cuts the
// response. Progress takes the source's locks; it is called from another
// goroutine than Read, seldom.
type Progressing interface {
	io.ReadCloser
	Progress() int64
}

// VerifyingBlob is a Blob whose readers check every byte against the
// digest themselves: a reader opened at 0 returns the last byte of the blob
// (and so io.EOF) only once the whole blob hashed to VerifiesDigest; the
// read that would end a wrong blob fails instead. A consumer that would
// hash the bytes again (the egress spool) relies on it and does not.
type VerifyingBlob interface {
	Blob
	VerifiesDigest() digest.Digest
}

// BlobStater is a Source that can tell a blob's size from metadata (the
// owner's or the upstream's answer) without fetching it or reserving
// anything for it. The handler asks it for a HEAD instead of Blob: a
// source whose Blob starts a download (the egress) must not start one for
// a HEAD. Not-found is ErrNotFound, as for Blob.
type BlobStater interface {
	StatBlob(ctx context.Context, ref Ref, dgst digest.Digest) (int64, error)
}

// Manifest is a manifest or index with its exact bytes.
type Manifest struct {
	MediaType string
	Digest    digest.Digest
	Content   []byte
}

// Source is one place content comes from.
type Source interface {
	// Name labels the source in logs and metrics: "containerd", "swarm", "upstream".
	Name() string
	// Resolve returns the descriptor a tag points to.
	Resolve(ctx context.Context, ref Ref, tag string) (ocispec.Descriptor, error)
	// Manifest returns the manifest or index with the given digest.
	Manifest(ctx context.Context, ref Ref, dgst digest.Digest) (*Manifest, error)
	// Blob returns the blob with the given digest, ready to be opened. ctx
	// lives until the response ends, so the blob's readers may depend on it.
	Blob(ctx context.Context, ref Ref, dgst digest.Digest) (Blob, error)
}

// ResumableBlob is a Blob whose bytes can be fetched from an offset
// without those before it (an HTTP Range request to the upstream), for a
// caller that holds the blob's first bytes already and hashes the whole
// blob itself. OpenFrom returns the body and the blob offset its first
// byte is at: offset when the source honoured the range, 0 when it sent
// the whole blob instead (the caller drops what it has). A reply that
// names another range is an error wrapping ErrBadContentRange, never a
// body at the wrong place. Its bytes are not verified: a reader of them
// must hash the whole blob, its held prefix included.
type ResumableBlob interface {
	Blob
	OpenFrom(ctx context.Context, offset int64) (body io.ReadCloser, start int64, err error)
}
