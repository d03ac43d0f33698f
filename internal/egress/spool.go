package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/registry/oci"
)

// errReleased is a kept spool deleted between a caller finding and opening it.
var errReleased = errors.New("spool released")

// spool is one upstream download: a file that grows as bytes arrive, read
// by any number of callers at once. The download goroutine is its only
// writer; readers learn of progress through changed.
type spool struct {
	dgst  digest.Digest
	ref   oci.Ref       // the repository the download asks
	ready chan struct{} // closed once the size is known or the download failed

	mu       sync.Mutex
	path     string // the partial file, renamed when verified
	size     int64
	written  int64
	verified bool
	prefix   int64 // bytes the cluster gave before the upstream (resume.go)
	released bool  // the kept file is gone (Release, or evicted)
	// noRoom: the cache had no room for the spool, so there is no file;
	// each caller streams from the upstream (unkeptBlob).
	noRoom bool
	err    error
	// disk is the spool's entry in the data dir's cache (nil without one):
	// pinned by the download until it ends and by every open handle.
	disk    *diskcache.Entry
	changed chan struct{} // closed and replaced on every change
}

func newSpool(ref oci.Ref, dgst digest.Digest, path string) *spool {
	return &spool{dgst: dgst, ref: ref, path: path, size: -1,
		ready: make(chan struct{}), changed: make(chan struct{})}
}

// notifyLocked wakes every waiting reader.
func (s *spool) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *spool) setSize(size int64) {
	s.mu.Lock()
	s.size = size
	s.mu.Unlock()
	close(s.ready)
}

func (s *spool) progress(n int64) {
	s.mu.Lock()
	s.written += int64(n)
	s.notifyLocked()
	s.mu.Unlock()
}

// resumed reports whether the download started from the cluster's prefix.
func (s *spool) resumed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prefix > 0
}

// fail ends the download: readers fail, the file goes. The size may never
// have been known, so ready is closed here too when it is still open.
func (s *spool) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
	if rmErr := os.Remove(s.path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		s.err = errors.Join(err, rmErr)
	}
	s.notifyLocked()
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
}

// unkept ends the download before it wrote anything: the cache had no
// room for size bytes. The partial file goes; its callers stream.
func (s *spool) unkept(size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.size, s.noRoom = size, true
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.err = fmt.Errorf("remove the spool of %s: %w", s.dgst, err)
	}
	s.notifyLocked()
	close(s.ready)
}

// streams says whether the spool has no file and its size: callers
// stream from the upstream.
func (s *spool) streams() (bool, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.noRoom && s.err == nil, s.size
}

// complete marks the spool verified under its final path.
func (s *spool) complete(final string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Rename(s.path, final); err != nil {
		return fmt.Errorf("keep spool: %w", err)
	}
	s.path = final
	s.verified = true
	s.notifyLocked()
	return nil
}

// view is what a reader may read now: bytes below avail, the whole blob
// only once verified (the last byte is held back until then).
func (s *spool) view() (avail, size int64, verified bool, err error, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	avail = s.written
	if !s.verified {
		avail = min(s.written, s.size-1)
	}
	return avail, s.size, s.verified, s.err, s.changed
}

// open returns a handle on the spool for one caller. Its own descriptor
// keeps the bytes readable after Release or a rename.
func (s *spool) open(stall time.Duration) (oci.Blob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if s.released {
		return nil, errReleased
	}
	if s.disk != nil && !s.disk.Pin() {
		return nil, errReleased // evicted; its evict is on its way
	}
	unpin := func() {
		if s.disk != nil {
			s.disk.Unpin()
		}
	}
	f, err := os.Open(s.path)
	if err != nil {
		if s.disk != nil {
			// Unpin may evict, and an evict takes s.mu: not here.
			go unpin()
		}
		return nil, fmt.Errorf("open spool of %s: %w", s.dgst, err)
	}
	h := &handle{file: f, unpin: unpin}
	if s.verified {
		return &keptBlob{handle: h, size: s.size}, nil
	}
	return &growingBlob{s: s, handle: h, stall: stall}, nil
}

// handle is one caller's hold on a spool: its descriptor and its pin of
// the spool's cache entry, both let go by Close.
type handle struct {
	file  *os.File
	unpin func()
	once  sync.Once
}

func (h *handle) Close() error {
	err := h.file.Close()
	h.once.Do(h.unpin)
	return err
}

// growingBlob is a blob still downloading.
type growingBlob struct {
	*handle
	s     *spool
	stall time.Duration
}

func (b *growingBlob) Size() int64 {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	return b.s.size
}

func (b *growingBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	if size := b.Size(); offset < 0 || offset > size {
		return nil, fmt.Errorf("offset %d outside blob %s of %d bytes", offset, b.s.dgst, size)
	}
	r := &spoolReader{s: b.s, file: b.file, ctx: ctx, off: offset, stall: b.stall}
	// A descriptor of its own (a new open file description, so an offset
	// of its own) lets the handler send the spool with sendfile. Reopening
	// through /proc names exactly this spool's file, whatever its path now.
	own, err := reopen(b.file)
	if err != nil {
		return r, nil // the handler copies through Read instead
	}
	return &spanReader{spoolReader: r, own: own}, nil
}

// reopen opens f's file again, read-only, with an offset of its own.
func reopen(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var own *os.File
	var openErr error
	if err := rc.Control(func(fd uintptr) {
		own, openErr = os.Open(fmt.Sprintf("/proc/self/fd/%d", fd))
	}); err != nil {
		return nil, err
	}
	return own, openErr
}

// spoolReader follows the growing file from its offset: it returns what is
// there, waits for more when it is at the edge, and fails with the download.
type spoolReader struct {
	s     *spool
	file  *os.File
	ctx   context.Context
	off   int64
	stall time.Duration
	timer *time.Timer
}

func (r *spoolReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	avail, err := r.next()
	if err != nil {
		return 0, err
	}
	n, err := r.file.ReadAt(p[:min(int64(len(p)), avail)], r.off)
	r.off += int64(n)
	if n > 0 {
		return n, nil
	}
	return 0, fmt.Errorf("read spool of %s at %d: %w", r.s.dgst, r.off, err)
}

// next waits until bytes at the reader's offset may be read and returns
// how many; io.EOF at the end of a verified blob.
func (r *spoolReader) next() (int64, error) {
	for {
		avail, size, verified, err, changed := r.s.view()
		if err != nil {
			return 0, fmt.Errorf("egress download of %s failed: %w", r.s.dgst, err)
		}
		if verified && r.off >= size {
			return 0, io.EOF
		}
		if r.off < avail {
			return avail - r.off, nil
		}
		if err := r.wait(changed); err != nil {
			return 0, err
		}
	}
}

// wait blocks until the spool changes, bounded by the stall timeout.
func (r *spoolReader) wait(changed <-chan struct{}) error {
	if r.timer == nil {
		r.timer = time.NewTimer(r.stall)
	} else {
		r.timer.Reset(r.stall)
	}
	defer r.timer.Stop()
	select {
	case <-changed:
		return nil
	case <-r.ctx.Done():
		return context.Cause(r.ctx)
	case <-r.timer.C:
		return fmt.Errorf("egress download of %s at %d: %w (%s)", r.s.dgst, r.off, oci.ErrStalled, r.stall)
	}
}

func (r *spoolReader) Close() error { return nil }

// spanReader is a spoolReader that also hands out its spans of the file
// (oci.FileSpans), read from a descriptor of its own.
type spanReader struct {
	*spoolReader
	own *os.File
}

// Span returns the file positioned at the reader's offset and how many
// bytes may be read there: the download's bytes, the last one only once
// the digest matched.
func (r *spanReader) Span() (*os.File, int64, error) {
	avail, err := r.next()
	if err != nil {
		return nil, 0, err
	}
	// Read moves off without moving own's offset: set it each time.
	if _, err := r.own.Seek(r.off, io.SeekStart); err != nil {
		return nil, 0, fmt.Errorf("spool of %s: %w", r.s.dgst, err)
	}
	return r.own, avail, nil
}

func (r *spanReader) Sent(n int64) { r.off += n }

func (r *spanReader) Close() error { return r.own.Close() }

// keptBlob is a verified spool: random access, sent with sendfile.
type keptBlob struct {
	*handle
	size int64
}

func (b *keptBlob) Size() int64 { return b.size }

func (b *keptBlob) Open(_ context.Context, offset int64) (io.ReadCloser, error) {
	if offset < 0 || offset > b.size {
		return nil, fmt.Errorf("offset %d outside blob of %d bytes", offset, b.size)
	}
	return io.NopCloser(io.NewSectionReader(b.file, offset, b.size-offset)), nil
}

func (b *keptBlob) ReadSeeker() io.ReadSeeker { return b.file }

var (
	_ oci.Blob         = (*growingBlob)(nil)
	_ oci.FileSpans    = (*spanReader)(nil)
	_ oci.SeekableBlob = (*keptBlob)(nil)
)
