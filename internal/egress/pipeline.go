package egress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// Pipeline streams a blob from the swarm while its owner still fetches it
// (swarm.Swarm.Follow): chunk metainfo from the member whose peer endpoint
// is ownerHTTP (host:port) as the owner's spool grows, pieces from every
// peer. Its reads must verify the whole blob's digest before the last byte
// (as oci.Blob says) and fail on no progress within a bound; it fails
// at once when the owner does not know the blob.
type Pipeline interface {
	Follow(ctx context.Context, dgst digest.Digest, size int64, ownerHTTP string) (oci.Blob, error)
}

// errMethod is an owner refusing a method on a path: it predates the path.
var errMethod = errors.New("owner does not support the method")

// startReply is the owner's answer to a POST of fetchPath.
type startReply struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// Unkept: the owner's cache has no room for a spool, so no chunk of it
	// will be published to follow; stream it from the owner.
	Unkept bool `json:"unkept,omitempty"`
}

// Start begins the download of dgst from ref's upstream, or joins the one
// running or kept, and returns the blob's size once the upstream gave it.
// The download then runs to its end with no reader (bounded by
// StallTimeout), for OnStart's Progress and OnComplete. unkept says the
// cache had no room for a spool: there is no download to follow, and each
// caller streams from the upstream through Fetch.
func (f *Fetcher) Start(ctx context.Context, ref oci.Ref, dgst digest.Digest) (size int64, unkept bool, err error) {
	b, err := f.Fetch(ctx, ref, dgst)
	if err != nil {
		return 0, false, err
	}
	_, unkept = b.(*unkeptBlob)
	size = b.Size()
	if err := b.Close(); err != nil {
		return 0, false, fmt.Errorf("egress: start %s: %w", dgst, err)
	}
	return size, unkept, nil
}

// servePeerFetch answers a member's POST of fetchPath: the download runs
// on, whether or not the member stays.
func (s *Source) servePeerFetch(w http.ResponseWriter, r *http.Request, ref oci.Ref, dgst digest.Digest) {
	size, unkept, err := s.cfg.Fetcher.Start(r.Context(), ref, dgst)
	if err != nil {
		s.peerError(w, r, err)
		return
	}
	body, err := json.Marshal(startReply{Digest: dgst, Size: size, Unkept: unkept})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Docker-Content-Digest", dgst.String())
	_, _ = w.Write(body)
}

// remoteStart asks owner m to start fetching dgst and returns its reply.
func (s *Source) remoteStart(ctx context.Context, m Member, ref oci.Ref, dgst digest.Digest) (startReply, error) {
	var reply startReply
	resp, err := s.peerDo(ctx, http.MethodPost, m, fetchPath+dgst.String(), ref)
	if err != nil {
		return reply, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDescriptor+1))
	if err != nil {
		return reply, fmt.Errorf("start %s on %s: %w", dgst, m.Name, err)
	}
	if len(body) > maxDescriptor {
		return reply, fmt.Errorf("start %s on %s: reply larger than %d bytes", dgst, m.Name, maxDescriptor)
	}
	if err := json.Unmarshal(body, &reply); err != nil {
		return startReply{}, fmt.Errorf("start %s on %s: %w", dgst, m.Name, err)
	}
	if reply.Digest != dgst || reply.Size < 0 {
		return startReply{}, fmt.Errorf("start %s on %s: reply names %q of %d bytes", dgst, m.Name, reply.Digest, reply.Size)
	}
	return reply, nil
}

// pipelinedBlob asks owner m to start the download and follows it in the
// swarm, so the waiting nodes trade pieces instead of each streaming the
// blob from m. Blobs under PipelineMin, an owner without the start path and
// a failed Follow take the stream from m, and so does a blob m serves
// without a spool (its cache is full: no chunk of it will be published);
// a followed read that fails or stalls switches to the owners' stream
// (followReader).
func (s *Source) pipelinedBlob(ctx context.Context, m Member, owners []Member, ref oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	reply, err := s.remoteStart(ctx, m, ref, dgst)
	size := reply.Size
	switch {
	case errors.Is(err, errMethod):
		return s.remoteBlob(ctx, m, owners, ref, dgst)
	case err != nil:
		return nil, err
	case reply.Unkept:
		s.log.Info("the owner serves this blob without a spool (its cache is full); streaming it from the owner",
			"digest", dgst, "owner", m.Name, "size", size)
		return s.remoteBlob(ctx, m, owners, ref, dgst)
	case size < s.cfg.PipelineMin:
		return s.remoteBlob(ctx, m, owners, ref, dgst)
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
		return s.remoteBlob(ctx, m, owners, ref, dgst)
	}
	return &followedBlob{src: s, ref: ref, dgst: dgst, owner: m, owners: owners, size: size, follow: follow,
		seed: maphash.MakeSeed()}, nil
}

// errNoProgress ends a followed read that got no byte, and whose blob did
// not move, within PipelineStall.
var errNoProgress = errors.New("nothing from the swarm within the pipeline stall bound")

// followedBlob is a blob followed in the swarm, with the owners' streams
// in reserve: a read that fails, or gets no byte within PipelineStall,
// switches to them from where it was, and so does every later Open.
type followedBlob struct {
	src    *Source
	ref    oci.Ref
	dgst   digest.Digest
	owner  Member   // whose download is followed
	owners []Member // the candidates, best first
	size   int64
	follow oci.Blob
	// seed keys the hash that checks the swarm's bytes against the
	// owners' stream: random, so no one can make two streams collide.
	seed maphash.Seed

	mu       sync.Mutex
	fallback oci.Blob // the owners' stream, once following failed
	closed   bool
}

func (b *followedBlob) Size() int64 { return b.size }

func (b *followedBlob) current() oci.Blob {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fallback
}

// streamed opens the blob as Source.Blob does without a pipeline: from
// the followed owner first (it has the bytes the swarm did not deliver),
// then from the other candidates, this node's Fetcher included.
func (b *followedBlob) streamed(ctx context.Context) (oci.Blob, error) {
	order := []Member{b.owner}
	for _, o := range b.owners {
		if o.Name != b.owner.Name {
			order = append(order, o)
		}
	}
	var errs []error
	for _, o := range order {
		var fb oci.Blob
		var err error
		if o.Name == b.src.cfg.Self {
			fb, err = b.src.cfg.Fetcher.Fetch(ctx, b.ref, b.dgst)
		} else {
			fb, err = b.src.remoteBlob(ctx, o, b.owners, b.ref, b.dgst)
		}
		if err == nil && fb.Size() != b.size {
			fb.Close()
			err = fmt.Errorf("owner says %d bytes, not %d", fb.Size(), b.size)
		}
		if err == nil || errors.Is(err, oci.ErrNotFound) {
			return fb, err
		}
		errs = append(errs, fmt.Errorf("owner %s: %w", o.Name, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// remote is the owners' stream, asked of the followed owner first, then
// of the other remote candidates, with no request made yet.
func (b *followedBlob) remote() *remoteBlob {
	order := []Member{b.owner}
	for _, o := range b.owners {
		if o.Name != b.owner.Name && o.Name != b.src.cfg.Self {
			order = append(order, o)
		}
	}
	return &remoteBlob{s: b.src, ref: b.ref, dgst: b.dgst, size: b.size, owners: order}
}

// keepFallback makes fb the stream of every later Open, unless one is set.
func (b *followedBlob) keepFallback(fb oci.Blob) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fallback == nil && !b.closed {
		b.fallback = fb
	}
}

// fallBack opens the owners' stream (once) after cause ended the swarm's.
func (b *followedBlob) fallBack(ctx context.Context, cause error) (oci.Blob, error) {
	if fb := b.current(); fb != nil {
		return fb, nil
	}
	if ctx.Err() != nil {
		return nil, cause
	}
	b.src.log.Info("following the owner's download in the swarm failed; streaming it from the owners",
		"digest", b.dgst, "owner", b.owner.Name, "err", cause)
	// Opened with no lock held: it asks the owners.
	fb, err := b.streamed(ctx)
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
	if offset == b.size {
		return io.NopCloser(failedReader{io.EOF}), nil
	}
	// The swarm's reader ends with fctx (oci.Blob's contract), which
	// the stall bound cancels.
	fctx, cancel := context.WithCancelCause(ctx)
	rc, err := b.follow.Open(fctx, offset)
	if err != nil {
		cancel(nil)
		fb, ferr := b.fallBack(ctx, err)
		if ferr != nil {
			return nil, ferr
		}
		return fb.Open(ctx, offset)
	}
	r := &followReader{b: b, ctx: ctx, fctx: fctx, cancel: cancel, start: offset, pos: offset, rc: rc}
	r.sum.SetSeed(b.seed)
	if offset == 0 {
		r.whole = b.dgst.Algorithm().Hash()
	}
	r.progress = r.progressNow()
	r.timer = time.AfterFunc(b.src.cfg.PipelineStall, r.stalled)
	return r, nil
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

// followReader reads the swarm's stream. When that fails, or gives no byte
// within PipelineStall, it switches to the owners' stream: that one is
// read from the same start and its bytes up to where the swarm stopped
// must hash as what the swarm delivered, so the response is exactly the
// owners' stream, whose digest it checks at the end. Read runs on one
// goroutine; Close may come from another (the handler's stall watch).
type followReader struct {
	b      *followedBlob
	ctx    context.Context // the caller's: the owners' stream ends with it
	fctx   context.Context // the swarm reader's, ended by cancel
	cancel context.CancelCauseFunc
	timer  *time.Timer
	start  int64        // the offset of the Open
	pos    int64        // the next byte to deliver
	sum    maphash.Hash // of the bytes the swarm delivered, [start,pos)
	// whole is the blob's digest hash over [0,pos) when the read began at
	// 0: an owner's stream can then resume at pos (remoteBlob.resume).
	whole hash.Hash
	err   error // the swarm reader's error that came with bytes

	mu       sync.Mutex
	rc       io.ReadCloser // the swarm's reader, then the owners'
	switched bool          // reading the owners' stream: its errors are final
	closed   bool
	progress int64 // the blob's Progress when the bound began
}

// stalled is the stall bound: it ends the swarm's reader, unless the
// blob moved since the bound began, as a swarm that says so through
// Progress counts it: bytes of it arrived at this node (a stream gets
// nothing of a piece until all of it is in, and a big piece from a busy
// peer takes seconds), or, with every published byte here, the owner's
// fetch from the upstream grew (a chunk can take longer than the bound to
// come from a slow upstream). The swarm's own watchdog still ends a read
// whose chunk stops moving. Falling back while the blob moves made the
// owner a star again (BenchmarkRollout: 1 GiB; N = 16 at 12 Mbit/s), and
// so did a limit on the wait for the first byte, however the blob moved
// (N = 16 at 8 Mbit/s: a chunk 0 slow from the upstream, then pieces many
// nodes wanted from few holders). The reader is oci.Progressing instead:
// the registry handler sends the headers before a late first byte while
// the blob moves, so containerd does not leave for the upstream, and its
// stall watch ends a wait once the blob stops moving.
func (r *followReader) stalled() {
	progress := r.progressNow() // without r.mu: it takes the swarm's locks
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.switched || r.closed:
	case progress <= r.progress:
		r.cancel(errNoProgress)
	default:
		r.progress = progress
		r.timer.Reset(r.b.src.cfg.PipelineStall)
	}
}

// Progress makes the read an oci.Progressing stream: while it follows the
// swarm, the followed blob's Progress; once it reads the owners' stream,
// which gives bytes as it gets them, the value it had then, for good.
func (r *followReader) Progress() int64 {
	r.mu.Lock()
	switched, last := r.switched, r.progress
	r.mu.Unlock()
	if switched {
		return last
	}
	return r.progressNow()
}

// progressNow is the followed blob's Progress, or -1 when the swarm does
// not say.
func (r *followReader) progressNow() int64 {
	if p, ok := r.b.follow.(interface{ Progress() int64 }); ok {
		return p.Progress()
	}
	return -1
}

func (r *followReader) reader() (io.ReadCloser, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rc, r.switched
}

func (r *followReader) Read(p []byte) (int, error) {
	rc, switched := r.reader()
	if switched || len(p) == 0 {
		return rc.Read(p)
	}
	n, err := 0, r.err
	if err == nil {
		n, err = rc.Read(p)
	}
	if n > 0 {
		r.timer.Reset(r.b.src.cfg.PipelineStall)
		r.sum.Write(p[:n])
		if r.whole != nil {
			r.whole.Write(p[:n])
		}
		r.pos += int64(n)
		if err != nil && err != io.EOF {
			r.err, err = err, nil // handled on the next Read
		}
		return n, err
	}
	if err == nil || (err == io.EOF && r.pos == r.b.size) {
		return 0, err
	}
	return r.switchToOwners(p, err)
}

// switchToOwners continues the read from the owners' stream after the
// swarm's failed with cause.
func (r *followReader) switchToOwners(p []byte, cause error) (int, error) {
	if context.Cause(r.fctx) == errNoProgress {
		cause = fmt.Errorf("%w (%s): %w", errNoProgress, r.b.src.cfg.PipelineStall, cause)
	}
	r.mu.Lock()
	swarm, closed := r.rc, r.closed
	r.switched = true
	r.mu.Unlock()
	r.timer.Stop()
	r.cancel(nil)
	if closed {
		return 0, cause
	}
	swarm.Close()
	rc, err := r.openOwners(cause)
	if err != nil {
		rc = io.NopCloser(failedReader{err})
	}
	r.mu.Lock()
	closed = r.closed
	if !closed {
		r.rc = rc
	}
	r.mu.Unlock()
	if closed {
		rc.Close()
		return 0, cause
	}
	return rc.Read(p)
}

// openOwners opens the owners' stream where the swarm stopped, when the
// read began at 0 and an owner streams it (the digest then covers both);
// else at the Open's offset, checked against what the swarm delivered so
// far (this node's own spool is read so: it is local).
func (r *followReader) openOwners(cause error) (io.ReadCloser, error) {
	if r.whole != nil && r.pos > 0 && r.pos < r.b.size {
		if rc := r.resume(cause); rc != nil {
			return rc, nil
		}
	}
	fb, err := r.b.fallBack(r.ctx, cause)
	if err != nil {
		return nil, err
	}
	rc, err := fb.Open(r.ctx, r.start)
	if err != nil || r.pos == r.start {
		return rc, err
	}
	var check maphash.Hash
	check.SetSeed(r.b.seed)
	if _, err := io.CopyN(&check, rc, r.pos-r.start); err != nil {
		rc.Close()
		return nil, fmt.Errorf("egress: blob %s: the owners' stream up to byte %d: %w", r.b.dgst, r.pos, err)
	}
	if check.Sum64() != r.sum.Sum64() {
		rc.Close()
		return nil, fmt.Errorf("egress: blob %s: the swarm's bytes [%d,%d) differ from the owners' stream", r.b.dgst, r.start, r.pos)
	}
	return rc, nil
}

// resume continues the read from a remote owner at pos, the blob's digest
// covering the swarm's bytes and the owner's (remoteBlob.resume); nil when
// none answers so, or when the read fell back to this node's own spool.
func (r *followReader) resume(cause error) io.ReadCloser {
	cur := r.b.current()
	rb, _ := cur.(*remoteBlob)
	if cur != nil && rb == nil {
		return nil
	}
	if rb == nil {
		rb = r.b.remote()
	}
	rc, err := rb.resume(r.ctx, r.pos, r.whole)
	if err != nil {
		r.b.src.log.Info("the owners' stream cannot resume where the swarm stopped; reading it from the start",
			"digest", r.b.dgst, "at", r.pos, "err", err)
		return nil
	}
	r.b.src.log.Info("following the owner's download in the swarm failed; streaming the rest from the owners",
		"digest", r.b.dgst, "owner", r.b.owner.Name, "at", r.pos, "err", cause)
	r.b.keepFallback(rb)
	return rc
}

func (r *followReader) Close() error {
	r.timer.Stop()
	r.mu.Lock()
	rc, closed := r.rc, r.closed
	r.closed = true
	r.mu.Unlock()
	r.cancel(nil)
	if closed {
		return nil
	}
	return rc.Close()
}

// failedReader keeps answering the error a reader failed with.
type failedReader struct{ err error }

func (f failedReader) Read([]byte) (int, error) { return 0, f.err }
