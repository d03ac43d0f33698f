package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dregistry/dregistry/registry/oci"
)

// The degraded mode: when the data dir's cache cannot hold a spool even
// after evicting every entry nobody holds (the spools and downloads being
// served fill it), the blob is served without a spool: every Open is a
// stream of its own from the upstream, verified as the bytes pass, and
// nothing is written to disk. The data dir never holds more than
// --cache-size, and the node never stops serving.
//
// Each caller gets its own upstream stream, rather than sharing one
// through a bounded memory window: a shared window moves at the pace of its
// slowest reader (one stalled member would hold every other back until the
// stall timeout cuts it), and a caller that comes late or resumes with a
// Range past the window needs a stream of its own anyway. A private stream
// costs no memory beyond the caller's read buffer. The price is one
// upstream fetch per caller instead of one per cluster, which is why the
// mode is logged and counted (dregistry_egress_unkept_streams_total): it
// lasts only while the cache is full of blobs being served, and each
// new caller asks the cache again. Members following the owner's chunks in
// the swarm (Pipeline) are told at the start (startReply.Unkept) that no
// chunk will be published, and stream from the owner at once.

// unkeptMetric counts the upstream streams served without a spool.
func unkeptMetric() prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dregistry_egress_unkept_streams_total",
		Help: "Blob streams from the upstream served without a spool because the data dir's cache (--cache-size) was full of blobs being served: each is an upstream fetch of its own.",
	})
}

// Metrics is the Fetcher's collector: dregistry_egress_unkept_streams_total.
func (f *Fetcher) Metrics() prometheus.Collector { return f.unkept }

// unkeptBlob is a blob served without a spool: each Open asks the upstream.
type unkeptBlob struct {
	f    *Fetcher
	ref  oci.Ref
	dgst digest.Digest
	size int64
}

func (b *unkeptBlob) Size() int64 { return b.size }

func (b *unkeptBlob) Close() error { return nil }

// Open streams the blob from the upstream from offset: the bytes before it
// are fetched and hashed too, since the digest is checked over the whole
// blob, and the last byte comes only once it matched.
func (b *unkeptBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	if offset < 0 || offset > b.size {
		return nil, fmt.Errorf("offset %d outside blob %s of %d bytes", offset, b.dgst, b.size)
	}
	f := b.f
	// The reader depends on the context the upstream's Blob gets: the
	// lookup is bounded by a timer on it, and so are stalls after it.
	sctx, cancel := context.WithCancelCause(ctx)
	lookup := time.AfterFunc(f.cfg.LookupTimeout, func() { cancel(errLookupTimeout) })
	up, err := f.cfg.Upstream.Blob(sctx, b.ref, b.dgst)
	var rc io.ReadCloser
	if err == nil {
		rc, err = b.openVerified(sctx, up, offset)
		if err != nil {
			up.Close()
		}
	}
	if !lookup.Stop() {
		err = errors.Join(err, context.Cause(sctx))
		if rc != nil {
			rc.Close()
			up.Close()
		}
	}
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("egress: stream %s from the upstream: %w", b.dgst, err)
	}
	f.unkept.Inc()
	f.log.Info("streaming from the upstream without a spool (the cache is full)", "digest", b.dgst, "offset", offset, "size", b.size)
	r := &unkeptReader{rc: rc, blob: up, ctx: sctx, cancel: cancel, dgst: b.dgst, stallFor: f.cfg.StallTimeout}
	r.stall = time.AfterFunc(f.cfg.StallTimeout, func() { cancel(oci.ErrStalled) })
	return r, nil
}

// openVerified opens up at offset with a reader that checks the digest.
func (b *unkeptBlob) openVerified(ctx context.Context, up oci.Blob, offset int64) (io.ReadCloser, error) {
	if up.Size() != b.size {
		return nil, fmt.Errorf("the upstream says %d bytes, it said %d", up.Size(), b.size)
	}
	if vb, ok := up.(oci.VerifyingBlob); ok && vb.VerifiesDigest() == b.dgst {
		return up.Open(ctx, offset)
	}
	body, err := up.Open(ctx, 0)
	if err != nil {
		return nil, err
	}
	return oci.NewVerifyingReader(body, "upstream", b.dgst, b.size, offset), nil
}

// unkeptReader is one caller's upstream stream, cut when a read makes no
// progress within the stall timeout.
type unkeptReader struct {
	rc       io.ReadCloser
	blob     oci.Blob
	ctx      context.Context
	cancel   context.CancelCauseFunc
	stall    *time.Timer
	stallFor time.Duration
	dgst     digest.Digest
	once     sync.Once
}

func (r *unkeptReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	switch {
	case err == nil || err == io.EOF:
		r.stall.Reset(r.stallFor)
	case r.ctx.Err() != nil:
		err = fmt.Errorf("egress: upstream stream of %s: %w", r.dgst, errors.Join(err, context.Cause(r.ctx)))
	}
	return n, err
}

func (r *unkeptReader) Close() error {
	var err error
	r.once.Do(func() {
		r.stall.Stop()
		err = errors.Join(r.rc.Close(), r.blob.Close())
		r.cancel(nil)
	})
	return err
}
