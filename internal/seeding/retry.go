package seeding

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"
)

// seedRetry is a blob to seed again once next has passed: containerd's copy,
// a verified egress spool, or both.
type seedRetry struct {
	attempts   int
	next       time.Time
	containerd bool
	spool      *spoolFile
}

// failed logs and counts a failed Seed and schedules the next attempt,
// backing off from RetryMin to RetryMax. A cancelled context is the
// daemon stopping: nothing to retry or report.
func (s *Seeder) failed(ctx context.Context, d digest.Digest, spool *spoolFile, err error) {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return
	}
	r := s.retry[d]
	if r == nil {
		r = &seedRetry{}
		s.retry[d] = r
	}
	if spool != nil {
		r.spool = spool
	} else {
		r.containerd = true
	}
	r.attempts++
	wait := s.cfg.RetryMax
	if r.attempts < 20 {
		wait = min(s.cfg.RetryMin<<(r.attempts-1), s.cfg.RetryMax)
	}
	r.next = s.now().Add(wait)
	s.failures.Inc()
	s.log.Warn("not seeding; will retry", "digest", d, "attempt", r.attempts, "retry_in", wait, "err", err)
}

// succeeded ends the retries of containerd's copy of d (or of its spool):
// it is seeded, or there is nothing left to seed.
func (s *Seeder) succeeded(d digest.Digest, spool bool) {
	r := s.retry[d]
	if r == nil {
		return
	}
	if spool {
		r.spool = nil
	} else {
		r.containerd = false
	}
	if r.spool == nil && !r.containerd {
		s.log.Info("seed retries ended", "digest", d, "failed_attempts", r.attempts)
		delete(s.retry, d)
	}
}

// retryDue seeds again the blobs whose backoff has passed.
func (s *Seeder) retryDue(ctx context.Context) {
	now := s.now()
	for d, r := range s.retry {
		if ctx.Err() != nil {
			return
		}
		if now.Before(r.next) {
			continue
		}
		s.seedAlive.beat()
		if r.spool != nil {
			s.seedSpool(ctx, d, *r.spool)
		}
		if r.containerd {
			s.seed(ctx, d)
		}
	}
}

// nextRetry is how long until the earliest retry is due; false if none is
// scheduled.
func (s *Seeder) nextRetry() (time.Duration, bool) {
	var first time.Time
	for _, r := range s.retry {
		if first.IsZero() || r.next.Before(first) {
			first = r.next
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return max(first.Sub(s.now()), 0), true
}
