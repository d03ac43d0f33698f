package egress

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// Resuming a download another owner left (FetcherConfig.Prefix). When the
// owner of a blob dies mid-download, the members that followed it in the
// swarm hold its first chunks, checked piece by piece. The candidate that
// takes over writes those into its spool, then asks the upstream for the
// rest only (Range: bytes=<prefix>-) and hashes the whole blob — prefix
// and rest — before the last byte is released, as for any download. An
// upstream that ignores the Range (200) sends the whole blob: its first
// bytes are read and dropped. One that answers another range is asked
// again for the whole blob, dropped up to the same point. The bytes of two
// sources are never spliced unchecked: a blob that does not match its
// digest fails every reader and its spool is deleted, and the next
// download of the digest starts from byte 0 (badPrefixes), so a prefix
// that was wrong is not taken twice.

// maxBadPrefixes bounds the digests remembered as resumed and failed.
const maxBadPrefixes = 1024

// errDigestMismatch is a spool whose bytes, as this Fetcher hashed them,
// are not the blob: after a resume, the prefix or the upstream lied.
var errDigestMismatch = errors.New("digest mismatch")

// errPrefixTooLong is a Prefix that wrote past the blob's end: the bytes
// before are kept, the rest is the upstream's.
var errPrefixTooLong = errors.New("prefix longer than the blob")

// errPrefixStalled ends a prefix that got no byte within PrefixStall.
var errPrefixStalled = errors.New("no byte of the prefix within the prefix stall bound")

// badPrefixes are digests whose resumed download did not match: their next
// download takes nothing from the cluster. Guarded by Fetcher.mu.
type badPrefixes map[digest.Digest]struct{}

// markBadPrefix remembers that a download of dgst that started from the
// cluster's prefix did not match its digest.
func (f *Fetcher) markBadPrefix(dgst digest.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.badPrefix) >= maxBadPrefixes {
		clear(f.badPrefix)
	}
	f.badPrefix[dgst] = struct{}{}
}

// takeBadPrefix reports (once) that dgst's last resumed download failed.
func (f *Fetcher) takeBadPrefix(dgst digest.Digest) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, bad := f.badPrefix[dgst]
	delete(f.badPrefix, dgst)
	return bad
}

// fillPrefix writes what the cluster holds of s's blob at the start of
// file, hashing it into sum, and returns how many bytes it wrote. Running
// out of time or a failing Prefix leaves the bytes written so far (each
// one checked); only a failed write to the spool is an error.
func (f *Fetcher) fillPrefix(ctx context.Context, s *spool, file *os.File, sum hash.Hash, size int64) (int64, error) {
	if f.takeBadPrefix(s.dgst) {
		f.log.Info("the last download that resumed from the cluster's prefix did not match: fetching from byte 0", "digest", s.dgst)
		return 0, nil
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The first byte is waited for a quarter of the lookup budget at most:
	// followers wait for this download's first byte within their lookup
	// budget, and the upstream still has to send it if no prefix comes.
	// (With PrefixStall alone, 5 s, a prefix read from a download of this
	// node that made no progress kept the first byte past the followers'
	// 5 s, and containerd went to the upstream itself.)
	stall := time.AfterFunc(min(f.cfg.PrefixStall, f.cfg.LookupTimeout/4), func() { cancel(errPrefixStalled) })
	defer stall.Stop()
	w := &prefixWriter{file: file, sum: sum, s: s, size: size, touch: func() { stall.Reset(f.cfg.PrefixStall) }}
	start := time.Now()
	n, err := f.cfg.Prefix.Prefix(pctx, s.dgst, size, w)
	written, werr := w.end()
	if werr != nil {
		return 0, werr
	}
	if n != written {
		f.log.Warn("the prefix counted other bytes than it wrote; the written ones count", "digest", s.dgst, "said", n, "wrote", written)
	}
	if err != nil && written == 0 {
		f.log.Info("no prefix of the blob from the cluster: fetching it from byte 0", "digest", s.dgst, "err", errors.Join(err, context.Cause(pctx)))
	} else if written > 0 {
		s.mu.Lock()
		s.prefix = written
		s.mu.Unlock()
		f.log.Info("download resumed from the prefix the cluster holds", "digest", s.dgst, "bytes", written, "size", size,
			"duration", time.Since(start), "err", err)
	}
	return written, nil
}

// prefixWriter writes a Prefix's bytes to the spool and lets its readers
// have them; it takes no byte past the blob's size or after end.
type prefixWriter struct {
	file  *os.File
	sum   hash.Hash
	s     *spool
	size  int64
	touch func()

	mu      sync.Mutex
	written int64
	err     error
	ended   bool
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.err != nil:
		return 0, w.err
	case w.ended:
		return 0, errors.New("egress: prefix written after its end")
	case w.written+int64(len(p)) > w.size:
		w.err = fmt.Errorf("egress: %s of %d bytes: %w", w.s.dgst, w.size, errPrefixTooLong)
		return 0, w.err
	}
	n, err := w.file.Write(p)
	w.sum.Write(p[:n])
	w.written += int64(n)
	if n > 0 {
		w.s.progress(int64(n))
		w.touch()
	}
	if err != nil {
		w.err = fmt.Errorf("spool %s: %w", w.s.dgst, err)
		return n, w.err
	}
	return n, nil
}

// end closes the writer and returns what it wrote, and a spool write error.
func (w *prefixWriter) end() (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = true
	if w.err != nil && !errors.Is(w.err, errPrefixTooLong) {
		return w.written, w.err
	}
	return w.written, nil
}

// openRest opens the upstream's body for the blob from byte from (the
// prefix's end) and returns it with the offset its first byte is at: from
// when the upstream honoured the Range, 0 when it sent the whole blob (or
// answered another range and was asked again for the whole).
func (f *Fetcher) openRest(ctx context.Context, cancel context.CancelCauseFunc, s *spool, blob oci.Blob, from int64) (io.ReadCloser, int64, error) {
	if from == blob.Size() {
		return io.NopCloser(eofReader{}), from, nil
	}
	lookup := time.AfterFunc(f.cfg.LookupTimeout, func() { cancel(errLookupTimeout) })
	body, start, err := f.openFrom(ctx, s, blob, from)
	if !lookup.Stop() {
		err = errors.Join(err, context.Cause(ctx))
	}
	if err != nil {
		if body != nil {
			body.Close()
		}
		return nil, 0, fmt.Errorf("upstream %s: open from byte %d: %w", s.dgst, from, err)
	}
	return body, start, nil
}

func (f *Fetcher) openFrom(ctx context.Context, s *spool, blob oci.Blob, from int64) (io.ReadCloser, int64, error) {
	rb, ok := blob.(oci.ResumableBlob)
	if from == 0 || !ok {
		body, err := blob.Open(ctx, 0)
		return body, 0, err
	}
	body, start, err := rb.OpenFrom(ctx, from)
	switch {
	case err == nil && (start == from || start == 0):
		if start == 0 {
			f.log.Warn("the upstream ignored the Range of a resumed download and sends the whole blob; its first bytes are dropped",
				"digest", s.dgst, "from", from)
		}
		return body, start, nil
	case err == nil:
		body.Close()
		err = fmt.Errorf("body starts at byte %d: %w", start, oci.ErrBadContentRange)
	}
	if !errors.Is(err, oci.ErrBadContentRange) {
		return nil, 0, err
	}
	f.log.Warn("the upstream answered another range than a resumed download asked; fetching the whole blob, its first bytes dropped",
		"digest", s.dgst, "from", from, "err", err)
	body, err = blob.Open(ctx, 0)
	return body, 0, err
}

// skip reads and drops n bytes of body: the part of a whole blob the
// prefix holds already. It fails when the body ends early or stalls.
func (f *Fetcher) skip(ctx context.Context, cancel context.CancelCauseFunc, s *spool, body io.Reader, n int64) error {
	if n <= 0 {
		return nil
	}
	stall := time.AfterFunc(f.cfg.StallTimeout, func() { cancel(oci.ErrStalled) })
	defer stall.Stop()
	buf := make([]byte, downloadBuffer)
	for empty := 0; n > 0; {
		got, err := body.Read(buf[:min(int64(len(buf)), n)])
		n -= int64(got)
		if got > 0 {
			empty = 0
			stall.Reset(f.cfg.StallTimeout)
		}
		switch {
		case n == 0:
		case err == io.EOF:
			return fmt.Errorf("upstream %s: body ended before the prefix's end: %w", s.dgst, io.ErrUnexpectedEOF)
		case err != nil:
			return fmt.Errorf("upstream %s: skipping the prefix: %w", s.dgst, errors.Join(err, context.Cause(ctx)))
		case got == 0:
			if empty++; empty > maxEmptyReads {
				return fmt.Errorf("upstream %s: %w", s.dgst, io.ErrNoProgress)
			}
		}
	}
	return nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
