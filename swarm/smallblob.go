package swarm

import (
	"context"
	"fmt"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
)

// smallFetches runs the whole-blob HTTP fetches of small blobs (each
// buffered in memory, up to SmallBlobSize): callers asking for one digest
// at once share one fetch, and the fetches in flight hold at most
// SmallFetchBytes of buffers together, so a burst of pulls cannot make the
// daemon buffer every small blob of every image at once.
type smallFetches struct {
	flights singleflight.Group
	bytes   *semaphore.Weighted
	limit   int64
}

func newSmallFetches(limit int64) *smallFetches {
	return &smallFetches{bytes: semaphore.NewWeighted(limit), limit: limit}
}

// fetchSmallShared returns b's content, fetched once for every caller that
// asks meanwhile. The fetch does not end with the caller that started it
// (the others still want it); each caller waits at most until its own ctx
// ends, and the fetch itself at most twice StallTimeout, its wait for
// buffer space included.
func (s *Swarm) fetchSmallShared(ctx context.Context, b *blobInfo, peers []Peer) ([]byte, error) {
	ch := s.small.flights.DoChan(b.digest.String(), func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*s.cfg.StallTimeout)
		defer cancel()
		weight := min(b.size(), s.small.limit)
		if err := s.small.bytes.Acquire(fctx, weight); err != nil {
			return nil, fmt.Errorf("blob %s: waiting for room to buffer it: %w", b.digest, err)
		}
		defer s.small.bytes.Release(weight)
		return s.fetchSmall(fctx, b, peers)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]byte), nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}
