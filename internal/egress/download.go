package egress

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/registry/oci"
)

// downloadBuffer is the chunk the download reads, hashes and writes.
const downloadBuffer = 1 << 20

// maxEmptyReads fails an upstream whose reads return nothing, no error.
const maxEmptyReads = 100

// errLookupTimeout is the cause when the upstream did not answer in time.
var errLookupTimeout = errors.New("upstream did not answer within the lookup timeout")

// download fetches s from upstream into file, hashing as it writes; it
// ends verified and kept, or failed and deleted.
func (f *Fetcher) download(s *spool, file *os.File) {
	defer f.wg.Done()
	start := time.Now()
	var progress Progress // set by copyUpstream once the size is known
	size, err := f.copyUpstream(s, file, &progress)
	if cerr := file.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("spool: %w", cerr)
	}
	if errors.Is(err, errNoRoom) {
		// Its callers stream from the upstream, each on its own
		// (unkeptBlob); the table forgets the spool once its partial
		// file is gone, so the next caller asks the cache again.
		s.unkept(size)
		f.forget(s)
		f.log.Warn("the cache is full of blobs being served: this blob streams from the upstream without being kept",
			"ref", s.ref.String(), "digest", s.dgst, "size", size,
			"cache_used", f.cfg.Cache.Used(), "cache_limit", f.cfg.Cache.Limit())
		return
	}
	if err == nil {
		err = s.complete(f.spoolPath(s.dgst))
	}
	if err != nil {
		// The file and the Progress go before the table entry, so a new
		// download of the digest never finds the old file or the old
		// growth in its way.
		if s.resumed() && errors.Is(err, errDigestMismatch) {
			f.markBadPrefix(s.dgst)
		}
		s.fail(err)
		if d := s.cacheEntry(); d != nil {
			d.Remove()
		}
		if progress != nil {
			progress.Fail(err)
		}
		f.forget(s)
		f.log.Warn("upstream fetch failed", "ref", s.ref.String(), "digest", s.dgst, "err", err)
		return
	}
	f.log.Info("fetched from upstream", "ref", s.ref.String(), "digest", s.dgst, "size", size,
		"duration", time.Since(start))
	if progress != nil {
		progress.Complete()
	}
	if f.cfg.OnComplete != nil {
		s.mu.Lock()
		path := s.path
		s.mu.Unlock()
		f.cfg.OnComplete(s.dgst, path, size)
	}
	// The download's pin goes: from now on the spool stays while callers
	// hold it, then by LRU.
	if d := s.cacheEntry(); d != nil {
		d.Unpin()
	}
}

// errNoRoom is a spool the data dir's cache cannot hold even after
// evicting every entry nobody holds.
var errNoRoom = errors.New("no room in the cache for the spool")

// admit accounts the spool of size bytes in the data dir's cache, pinned
// for the download, making room by evicting least recently used entries.
// errNoRoom when the entries being read or written leave no room: the
// data dir never holds more than --cache-size, so the blob is then served
// without a spool (unkeptBlob).
func (f *Fetcher) admit(s *spool, size int64) error {
	if f.cfg.Cache == nil {
		return nil
	}
	var d *diskcache.Entry
	d, err := f.cfg.Cache.Admit(spoolKey(s.dgst), spoolBytes(size), func() { f.evict(s, d) })
	if errors.Is(err, diskcache.ErrFull) {
		return fmt.Errorf("%w: %w", errNoRoom, err)
	}
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.dgst, err)
	}
	s.mu.Lock()
	s.disk = d
	s.mu.Unlock()
	return nil
}

func spoolKey(d digest.Digest) string { return "egress/spool/" + d.String() }

// spoolBytes is what a spool of size bytes takes on disk: whole blocks,
// so the account is never below what the data dir holds.
func spoolBytes(size int64) int64 {
	const block = 4096
	return (size + block - 1) / block * block
}

// cacheEntry is the spool's cache entry, nil without one.
func (s *spool) cacheEntry() *diskcache.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.disk
}

// evict deletes a verified spool the cache chose (nobody holds it) and
// tells OnEvict. Descriptors open already keep their bytes.
func (f *Fetcher) evict(s *spool, d *diskcache.Entry) {
	f.mu.Lock()
	if f.spools[s.dgst] == s {
		delete(f.spools, s.dgst)
	}
	f.mu.Unlock()
	s.mu.Lock()
	s.released = true
	path := s.path
	s.mu.Unlock()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.log.Warn("evict spool", "digest", s.dgst, "err", err)
	}
	f.log.Info("egress spool evicted from the cache", "digest", s.dgst, "size", d.Size())
	if f.cfg.OnEvict != nil {
		f.cfg.OnEvict(s.dgst)
	}
}

// copyUpstream streams the blob into file and checks its digest. Once the
// size is known it sets *progress (OnStart) and advances it as bytes land.
// With a Prefix, the spool starts with what the cluster holds of the blob
// and the upstream is asked for the rest only (resume.go).
func (f *Fetcher) copyUpstream(s *spool, file *os.File, progress *Progress) (int64, error) {
	ctx, cancel := context.WithCancelCause(f.ctx)
	defer cancel(nil)
	blob, body, size, err := f.openUpstream(ctx, cancel, s)
	if err != nil {
		return size, err
	}
	defer blob.Close()
	if body != nil {
		defer func() { body.Close() }()
	}
	if f.cfg.OnStart != nil {
		// Before setSize: whoever learns the size may rely on it.
		*progress = f.cfg.OnStart(s.dgst, size, file.Name())
	}
	s.setSize(size)

	// A blob whose reader verifies itself (registry's upstream) is not
	// hashed a second time: that reader fails instead of returning the
	// blob's last byte unless the digest matched, so written reaches size
	// only for the right bytes. A spool that starts with a prefix from
	// the cluster is always hashed here, the prefix included.
	var sum hash.Hash
	if vb, ok := blob.(oci.VerifyingBlob); !ok || vb.VerifiesDigest() != s.dgst {
		sum = s.dgst.Algorithm().Hash()
	}
	var written int64
	if body == nil {
		var prefixSum hash.Hash
		if body, written, prefixSum, err = f.resumeUpstream(ctx, cancel, s, file, blob, size, progress); err != nil {
			return 0, err
		}
		defer func() { body.Close() }()
		if written > 0 {
			sum = prefixSum
		}
	}
	return f.copyBody(ctx, cancel, s, file, body, sum, written, size, progress)
}

// openUpstream looks the blob up upstream within the lookup timeout,
// admits its size to the cache and, without a Prefix, opens its body (nil
// with a Prefix: resumeUpstream opens it). On error the blob is closed
// already and the int64 is what copyUpstream returns.
func (f *Fetcher) openUpstream(ctx context.Context, cancel context.CancelCauseFunc, s *spool) (oci.Blob, io.ReadCloser, int64, error) {
	// The blob's readers depend on the context Blob gets, so the lookup is
	// bounded by a timer, not by a context that would end with it.
	lookup := time.AfterFunc(f.cfg.LookupTimeout, func() { cancel(errLookupTimeout) })
	blob, err := f.cfg.Upstream.Blob(ctx, s.ref, s.dgst)
	if err != nil {
		lookup.Stop()
		return nil, nil, 0, fmt.Errorf("upstream %s: %w", s.dgst, errors.Join(err, context.Cause(ctx)))
	}
	size := blob.Size()
	if size < 0 || (size == 0 && s.dgst != s.dgst.Algorithm().FromBytes(nil)) {
		lookup.Stop()
		blob.Close()
		return nil, nil, 0, fmt.Errorf("upstream %s: impossible size %d", s.dgst, size)
	}
	// Accounted before the body is asked for: a spool without room is
	// not written at all, and its body is left to the callers' streams.
	if err := f.admit(s, size); err != nil {
		lookup.Stop()
		blob.Close()
		return nil, nil, size, err
	}
	if f.cfg.Prefix != nil && size != 0 {
		lookup.Stop()
		return blob, nil, size, nil
	}
	body, err := blob.Open(ctx, 0)
	if !lookup.Stop() {
		err = errors.Join(err, context.Cause(ctx))
	}
	if err != nil {
		if body != nil {
			body.Close()
		}
		blob.Close()
		return nil, nil, 0, fmt.Errorf("upstream %s: open: %w", s.dgst, err)
	}
	return blob, body, size, nil
}

// resumeUpstream writes to file the prefix of the blob the cluster holds,
// hashing it into prefixSum, then opens the upstream body positioned at
// the prefix's end.
func (f *Fetcher) resumeUpstream(ctx context.Context, cancel context.CancelCauseFunc, s *spool, file *os.File, blob oci.Blob, size int64, progress *Progress) (io.ReadCloser, int64, hash.Hash, error) {
	prefixSum := s.dgst.Algorithm().Hash()
	written, err := f.fillPrefix(ctx, s, file, prefixSum, size)
	if err != nil {
		return nil, 0, nil, err
	}
	if written > 0 && *progress != nil {
		(*progress).Advance(written)
	}
	body, start, err := f.openRest(ctx, cancel, s, blob, written)
	if err != nil {
		return nil, 0, nil, err
	}
	if err := f.skip(ctx, cancel, s, body, written-start); err != nil {
		body.Close()
		return nil, 0, nil, err
	}
	return body, written, prefixSum, nil
}

// copyBody copies body into file from written up to size, cut when no byte
// arrives for the stall timeout, and checks sum (nil: the blob verifies
// itself) against the digest.
func (f *Fetcher) copyBody(ctx context.Context, cancel context.CancelCauseFunc, s *spool, file *os.File, body io.Reader, sum hash.Hash, written, size int64, progress *Progress) (int64, error) {
	stall := time.AfterFunc(f.cfg.StallTimeout, func() { cancel(oci.ErrStalled) })
	defer stall.Stop()
	buf := make([]byte, downloadBuffer)
	for empty := 0; written < size; {
		n, rerr := body.Read(buf[:min(int64(len(buf)), size-written)])
		if n > 0 {
			empty = 0
			stall.Reset(f.cfg.StallTimeout)
			if sum != nil {
				sum.Write(buf[:n])
			}
			if _, err := file.Write(buf[:n]); err != nil {
				return 0, fmt.Errorf("spool %s: %w", s.dgst, err)
			}
			written += int64(n)
			s.progress(int64(n))
			if *progress != nil {
				(*progress).Advance(written)
			}
		}
		switch {
		case written == size:
		case rerr == io.EOF:
			return 0, fmt.Errorf("upstream %s: body ended at %d of %d bytes: %w", s.dgst, written, size, io.ErrUnexpectedEOF)
		case rerr != nil:
			return 0, fmt.Errorf("upstream %s: at %d of %d bytes: %w", s.dgst, written, size, errors.Join(rerr, context.Cause(ctx)))
		case n == 0:
			if empty++; empty > maxEmptyReads {
				return 0, fmt.Errorf("upstream %s: %w", s.dgst, io.ErrNoProgress)
			}
		}
	}
	if sum == nil {
		return size, nil
	}
	if got := digest.NewDigest(s.dgst.Algorithm(), sum); got != s.dgst {
		return 0, fmt.Errorf("upstream %s: content hashes to %s: %w", s.dgst, got, errDigestMismatch)
	}
	return size, nil
}
