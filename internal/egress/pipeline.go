package egress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry"
)

// Pipeline streams a blob from the swarm while its owner still fetches it
// (swarm.Swarm.Follow): chunk metainfo from the member whose peer endpoint
// is ownerHTTP (host:port) as the owner's spool grows, pieces from every
// peer. Its reads must verify the whole blob's digest before the last byte
// (as registry.Blob says) and fail on no progress within a bound; it fails
// at once when the owner does not know the blob.
type Pipeline interface {
	Follow(ctx context.Context, dgst digest.Digest, size int64, ownerHTTP string) (registry.Blob, error)
}

// errMethod is an owner refusing a method on a path: it predates the path.
var errMethod = errors.New("owner does not support the method")

// startReply is the owner's answer to a POST of fetchPath.
type startReply struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// Start begins the download of dgst from ref's upstream, or joins the one
// running or kept, and returns the blob's size once the upstream gave it.
// The download then runs to its end with no reader (bounded by
// StallTimeout), for OnStart's Progress and OnComplete.
func (f *Fetcher) Start(ctx context.Context, ref registry.Ref, dgst digest.Digest) (int64, error) {
	b, err := f.Fetch(ctx, ref, dgst)
	if err != nil {
		return 0, err
	}
	size := b.Size()
	if err := b.Close(); err != nil {
		return 0, fmt.Errorf("egress: start %s: %w", dgst, err)
	}
	return size, nil
}

// servePeerFetch answers a member's POST of fetchPath: the download runs
// on, whether or not the member stays.
func (s *Source) servePeerFetch(w http.ResponseWriter, r *http.Request, ref registry.Ref, dgst digest.Digest) {
	size, err := s.cfg.Fetcher.Start(r.Context(), ref, dgst)
	if err != nil {
		s.peerError(w, r, err)
		return
	}
	body, err := json.Marshal(startReply{Digest: dgst, Size: size})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Docker-Content-Digest", dgst.String())
	_, _ = w.Write(body)
}

// remoteStart asks owner m to start fetching dgst and returns its size.
func (s *Source) remoteStart(ctx context.Context, m Member, ref registry.Ref, dgst digest.Digest) (int64, error) {
	resp, err := s.peerDo(ctx, http.MethodPost, m, fetchPath+dgst.String(), ref)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDescriptor+1))
	if err != nil {
		return 0, fmt.Errorf("start %s on %s: %w", dgst, m.Name, err)
	}
	var reply startReply
	if len(body) > maxDescriptor {
		return 0, fmt.Errorf("start %s on %s: reply larger than %d bytes", dgst, m.Name, maxDescriptor)
	}
	if err := json.Unmarshal(body, &reply); err != nil {
		return 0, fmt.Errorf("start %s on %s: %w", dgst, m.Name, err)
	}
	if reply.Digest != dgst || reply.Size < 0 {
		return 0, fmt.Errorf("start %s on %s: reply names %q of %d bytes", dgst, m.Name, reply.Digest, reply.Size)
	}
	return reply.Size, nil
}

// pipelinedBlob asks owner m to start the download and follows it in the
// swarm, so the waiting nodes trade pieces instead of each streaming the
// blob from m. Blobs under PipelineMin, an owner without the start path and
// a Follow that fails before its first byte take the stream from m.
func (s *Source) pipelinedBlob(ctx context.Context, m Member, owners []Member, ref registry.Ref, dgst digest.Digest) (registry.Blob, error) {
	stream := func() (registry.Blob, error) { return s.remoteBlob(ctx, m, owners, ref, dgst) }
	size, err := s.remoteStart(ctx, m, ref, dgst)
	switch {
	case errors.Is(err, errMethod):
		return stream()
	case err != nil:
		return nil, err
	case size < s.cfg.PipelineMin:
		return stream()
	}
	follow, err := s.cfg.Pipeline.Follow(ctx, dgst, size, m.HTTPAddr)
	if err == nil && follow.Size() != size {
		follow.Close()
		err = fmt.Errorf("the swarm says %d bytes, the owner %d", follow.Size(), size)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("follow %s: %w", dgst, err)
		}
		s.log.Info("cannot follow the owner's download in the swarm; streaming it from the owner",
			"digest", dgst, "owner", m.Name, "err", err)
		return stream()
	}
	return &followedBlob{src: s, dgst: dgst, owner: m.Name, size: size, follow: follow, stream: stream}, nil
}

// followedBlob is a blob followed in the swarm, with the owner's stream
// in reserve: a read that fails before its first byte switches to it, and
// so does every later Open.
type followedBlob struct {
	src    *Source
	dgst   digest.Digest
	owner  string
	size   int64
	follow registry.Blob
	stream func() (registry.Blob, error)

	mu       sync.Mutex
	fallback registry.Blob // the owner's stream, once Follow failed
	closed   bool
}

func (b *followedBlob) Size() int64 { return b.size }

func (b *followedBlob) current() registry.Blob {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fallback
}

// fallBack opens the owner's stream (once) after cause ended the swarm's.
func (b *followedBlob) fallBack(ctx context.Context, cause error) (registry.Blob, error) {
	if fb := b.current(); fb != nil {
		return fb, nil
	}
	if ctx.Err() != nil {
		return nil, cause
	}
	b.src.log.Info("following the owner's download in the swarm failed before its first byte; streaming it from the owner",
		"digest", b.dgst, "owner", b.owner, "err", cause)
	// Opened with no lock held: it is a request to the owner.
	fb, err := b.stream()
	if err != nil {
		return nil, fmt.Errorf("egress: blob %s: %w", b.dgst, errors.Join(cause, err))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		fb.Close()
		return nil, fmt.Errorf("egress: blob %s: closed", b.dgst)
	case b.fallback != nil: // another Open fell back first
		fb.Close()
		return b.fallback, nil
	}
	b.fallback = fb
	return fb, nil
}

func (b *followedBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	if offset < 0 || offset > b.size {
		return nil, fmt.Errorf("offset %d outside blob %s of %d bytes", offset, b.dgst, b.size)
	}
	if fb := b.current(); fb != nil {
		return fb.Open(ctx, offset)
	}
	rc, err := b.follow.Open(ctx, offset)
	if err != nil {
		fb, ferr := b.fallBack(ctx, err)
		if ferr != nil {
			return nil, ferr
		}
		return fb.Open(ctx, offset)
	}
	if offset == b.size {
		return rc, nil
	}
	return &followReader{b: b, ctx: ctx, off: offset, rc: rc}, nil
}

func (b *followedBlob) Close() error {
	b.mu.Lock()
	fb := b.fallback
	b.closed = true
	b.mu.Unlock()
	err := b.follow.Close()
	if fb != nil {
		err = errors.Join(err, fb.Close())
	}
	return err
}

// followReader reads the swarm's stream; until its first byte, a failure
// switches it to the owner's stream from the same offset.
type followReader struct {
	b       *followedBlob
	ctx     context.Context
	off     int64
	rc      io.ReadCloser
	started bool // a byte came, or the reader switched: errors are final
}

func (r *followReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if r.started || n > 0 || err == nil || len(p) == 0 {
		r.started = r.started || n > 0
		return n, err
	}
	r.started = true
	r.rc.Close()
	fb, ferr := r.b.fallBack(r.ctx, err)
	if ferr == nil {
		r.rc, ferr = fb.Open(r.ctx, r.off)
	}
	if ferr != nil {
		r.rc = io.NopCloser(failedReader{ferr})
		return 0, ferr
	}
	return r.rc.Read(p)
}

func (r *followReader) Close() error { return r.rc.Close() }

// failedReader keeps answering the error a reader failed with.
type failedReader struct{ err error }

func (f failedReader) Read([]byte) (int, error) { return 0, f.err }
