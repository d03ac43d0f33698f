package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dregistry/dregistry/swarm"
)

// closeGrace is how long content the swarm stopped seeding stays open, so
// transfers already reading it (peer HTTP, torrent pieces) finish rather
// than break off; a deleted file stays readable through its descriptor.
const closeGrace = time.Minute

// announceInterval is how often the announcements are reconciled with what
// the swarm holds (downloads that started, verified or went away).
const announceInterval = time.Second

// seedRetryMin and seedRetryMax bound the backoff between attempts to seed
// a blob whose Seed failed (a read error of containerd's content, a full
// metainfo dir): retried while it stays held, never faster than this.
const (
	seedRetryMin = time.Second
	seedRetryMax = 5 * time.Minute
)

// contentStore is what the seeding loop reads of containerd.
type contentStore interface {
	ReaderAt(context.Context, digest.Digest) (content.ReaderAt, error)
}

// announcer is the seeding loop's side of the tracker.
type announcer interface {
	Resync(complete []digest.Digest) error
	Announce(d digest.Digest, complete bool) error
	Withdraw(d digest.Digest) error
}

// seeding keeps three views in step: what containerd holds (the inventory),
// what the swarm seeds, and what the tracker announces. One goroutine owns
// it; the inventory's callback only records what changed.
//
// Locks: seeding.mu guards only pending, spooled, grown and evicted, and is
// a leaf:
// it is held for a map update, never across a call. The callbacks run
// under other components' locks — changed under the inventory's notifyMu,
// egressComplete and egressGrown on the egress download's goroutine,
// spoolEvicted on whatever goroutine made the cache evict — so
// they take mu,
// record, poke the buffered wake channel without blocking, and return. run
// calls the swarm (which takes its lock, then the torrent client's), the
// tracker (its lock; it calls memberlist only outside it), containerd and
// the fetcher's Release with no lock of its own held. Never call the
// inventory, the swarm, the tracker or the fetcher while holding mu.
type seeding struct {
	store   contentStore
	swarm   *swarm.Swarm
	tracker announcer
	log     *slog.Logger
	// failures counts failed attempts to seed (dregistry_seed_failures_total).
	failures prometheus.Counter

	mu      sync.Mutex
	pending map[digest.Digest]bool // true: containerd has it now; false: gone
	wake    chan struct{}

	spooled map[digest.Digest]spoolFile // verified egress downloads to seed
	grown   map[digest.Digest]*os.File  // their files the swarm seeds already (growing.Complete)
	evicted map[digest.Digest]bool      // spools the data dir's cache deleted

	// Owned by run.
	held    map[digest.Digest]heldContent // content the swarm seeds
	partial map[digest.Digest]bool        // downloads announced as partial
	release func(digest.Digest) error     // drops the egress spool of a digest
	retry   map[digest.Digest]*seedRetry  // blobs whose Seed failed
	now     func() time.Time

	alive *heartbeat // beats on every pass of run and every blob apply seeds
}

// seedRetry is a blob to seed again once next has passed: containerd's copy,
// a verified egress spool, or both.
type seedRetry struct {
	attempts   int
	next       time.Time
	containerd bool
	spool      *spoolFile
}

// spoolFile is a verified blob the egress fetched from upstream.
type spoolFile struct {
	path string
	size int64
}

// heldContent is what the swarm seeds a digest from: containerd's content,
// or the egress spool until containerd holds the blob.
type heldContent struct {
	ra    io.ReaderAt
	size  int64
	close func() error
	spool bool
}

// newSeeding links the three views; release drops an egress spool once
// containerd holds the blob (nil when there is no egress fetcher).
func newSeeding(store contentStore, sw *swarm.Swarm, tr announcer, release func(digest.Digest) error, log *slog.Logger) *seeding {
	return &seeding{
		store: store, swarm: sw, tracker: tr, log: log, release: release,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dregistry_seed_failures_total",
			Help: "Failed attempts to seed a blob containerd holds or the egress fetched (each is retried with backoff).",
		}),
		retry:   map[digest.Digest]*seedRetry{},
		now:     time.Now,
		pending: map[digest.Digest]bool{},
		spooled: map[digest.Digest]spoolFile{},
		grown:   map[digest.Digest]*os.File{},
		evicted: map[digest.Digest]bool{},
		wake:    make(chan struct{}, 1),
		held:    map[digest.Digest]heldContent{},
		partial: map[digest.Digest]bool{},
		alive:   newHeartbeat("the seeding and announce loop", seedingStuckAfter),
	}
}

// egressComplete is the egress fetcher's OnComplete: the verified spool is
// seeded (by run, since hashing pieces takes a while) and so announced.
func (s *seeding) egressComplete(d digest.Digest, path string, size int64) {
	s.mu.Lock()
	s.spooled[d] = spoolFile{path: path, size: size}
	s.mu.Unlock()
	s.poke()
}

// egressGrown is called, before egressComplete, when a download the swarm
// seeded while it arrived (growing) is verified: file is what the swarm
// seeds it from, so seedSpool seeds that file rather than opening the
// spool again.
func (s *seeding) egressGrown(d digest.Digest, file *os.File) {
	s.mu.Lock()
	old := s.grown[d]
	s.grown[d] = file
	s.mu.Unlock()
	if old != nil {
		closeLater(old.Close)
	}
}

// takeGrown returns the file a growth of d left (nil if none); the caller
// owns it.
func (s *seeding) takeGrown(d digest.Digest) *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.grown[d]
	delete(s.grown, d)
	return f
}

func (s *seeding) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// changed is the inventory's callback: it must not block.
func (s *seeding) changed(added, removed []digest.Digest) {
	s.mu.Lock()
	for _, d := range added {
		s.pending[d] = true
	}
	for _, d := range removed {
		s.pending[d] = false
	}
	s.mu.Unlock()
	s.poke()
}

func (s *seeding) run(ctx context.Context) error {
	tick := time.NewTicker(announceInterval)
	defer tick.Stop()
	defer s.closeAll()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
			s.apply(ctx)
		case <-tick.C:
		}
		s.retryDue(ctx)
		s.announce()
		s.alive.beat()
	}
}

// apply seeds what containerd gained and stops seeding what it lost.
func (s *seeding) apply(ctx context.Context) {
	s.mu.Lock()
	work, spools, evicted := s.pending, s.spooled, s.evicted
	s.pending, s.spooled, s.evicted = map[digest.Digest]bool{}, map[digest.Digest]spoolFile{}, map[digest.Digest]bool{}
	s.mu.Unlock()
	for d := range evicted {
		delete(spools, d) // not there any more: nothing to seed
	}
	s.dropEvicted(evicted)
	for d, f := range spools {
		if ctx.Err() != nil {
			return
		}
		s.alive.beat()
		s.seedSpool(ctx, d, f)
	}
	for d, present := range work {
		if ctx.Err() != nil {
			return
		}
		s.alive.beat()
		if present {
			s.seed(ctx, d)
		} else {
			s.unseed(d)
		}
	}
}

// seed seeds containerd's copy of d. A failure is logged, counted and
// retried with backoff while containerd holds d (see retryDue).
func (s *seeding) seed(ctx context.Context, d digest.Digest) {
	if d.Algorithm() != digest.SHA256 {
		return // torrents and gossip are keyed by sha256 digests
	}
	ra, err := s.store.ReaderAt(ctx, d)
	if err != nil {
		if errdefs.IsNotFound(err) {
			s.succeeded(d, false) // gone again: the inventory says so next
		} else {
			s.failed(ctx, d, nil, fmt.Errorf("read containerd's content: %w", err))
		}
		return
	}
	old, had := s.held[d]
	if had && !old.spool {
		// Seeded from containerd already (an event and a resync both
		// reported it): keep the reader the swarm uses.
		_ = ra.Close()
		if err := s.swarm.Seed(ctx, d, old.size, old.ra); err != nil {
			s.failed(ctx, d, nil, err)
			return
		}
		s.succeeded(d, false)
		return
	}
	if had && old.spool {
		// containerd now holds what the egress fetched: seed its copy in
		// place of the spool (never a moment unserved), then give the
		// spool back. A failure leaves the spool seeded.
		if err := s.swarm.Replace(ctx, d, ra.Size(), ra); err != nil {
			_ = ra.Close()
			s.failed(ctx, d, nil, err)
			return
		}
		s.held[d] = heldContent{ra: ra, size: ra.Size(), close: ra.Close}
		s.succeeded(d, false)
		closeLater(old.close)
		s.releaseSpool(d)
		return
	}
	if err := s.swarm.Seed(ctx, d, ra.Size(), ra); err != nil {
		_ = ra.Close()
		s.failed(ctx, d, nil, err)
		return
	}
	s.held[d] = heldContent{ra: ra, size: ra.Size(), close: ra.Close}
	s.succeeded(d, false)
}

// seedSpool seeds a blob the egress fetched, unless containerd's copy is
// already seeded. A blob the swarm seeded while it arrived is seeded from
// the file its growth reads, which Seed keeps as it is.
func (s *seeding) seedSpool(ctx context.Context, d digest.Digest, f spoolFile) {
	grown := s.takeGrown(d)
	if _, ok := s.held[d]; ok {
		if grown != nil {
			// containerd's copy is seeded; the swarm no longer reads it.
			closeLater(grown.Close)
		}
		s.succeeded(d, true)
		// containerd holds the blob: the data dir does not keep it twice.
		s.releaseSpool(d)
		return
	}
	file := grown
	if file == nil {
		var err error
		if file, err = os.Open(f.path); err != nil {
			s.failed(ctx, d, &f, fmt.Errorf("open egress spool: %w", err))
			return
		}
	}
	if err := s.swarm.Seed(ctx, d, f.size, file); err != nil {
		closeLater(file.Close) // a growth's torrents may still read it
		s.failed(ctx, d, &f, fmt.Errorf("egress spool: %w", err))
		return
	}
	s.held[d] = heldContent{ra: file, size: f.size, close: file.Close, spool: true}
	s.succeeded(d, true)
}

// failed logs and counts a failed Seed and schedules the next attempt,
// backing off from seedRetryMin to seedRetryMax. A cancelled context is the
// daemon stopping: nothing to retry or report.
func (s *seeding) failed(ctx context.Context, d digest.Digest, spool *spoolFile, err error) {
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
	wait := seedRetryMax
	if r.attempts < 20 {
		wait = min(seedRetryMin<<(r.attempts-1), seedRetryMax)
	}
	r.next = s.now().Add(wait)
	s.failures.Inc()
	s.log.Warn("not seeding; will retry", "digest", d, "attempt", r.attempts, "retry_in", wait, "err", err)
}

// succeeded ends the retries of containerd's copy of d (or of its spool):
// it is seeded, or there is nothing left to seed.
func (s *seeding) succeeded(d digest.Digest, spool bool) {
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
func (s *seeding) retryDue(ctx context.Context) {
	now := s.now()
	for d, r := range s.retry {
		if ctx.Err() != nil {
			return
		}
		if now.Before(r.next) {
			continue
		}
		s.alive.beat()
		if r.spool != nil {
			s.seedSpool(ctx, d, *r.spool)
		}
		if r.containerd {
			s.seed(ctx, d)
		}
	}
}

func (s *seeding) unseed(d digest.Digest) {
	s.succeeded(d, false) // containerd's copy is gone: nothing to retry
	h, ok := s.held[d]
	if !ok || h.spool {
		return
	}
	s.swarm.Unseed(d)
	closeLater(h.close)
	delete(s.held, d)
}

// releaseSpool gives an egress spool back to the fetcher.
func (s *seeding) releaseSpool(d digest.Digest) bool {
	if s.release == nil {
		return true
	}
	if err := s.release(d); err != nil {
		s.log.Warn("release egress spool", "digest", d, "err", err)
		return false
	}
	return true
}

// announce makes the tracker say exactly what the swarm can serve: what
// the peer endpoints serve (swarm.TorrentStats.Seeding) as complete, every
// other torrent as partial — a verified download trades pieces but is not
// served over HTTP until containerd's copy is seeded.
func (s *seeding) announce() {
	var complete []digest.Digest
	done := map[digest.Digest]bool{}
	partial := map[digest.Digest]bool{}
	for _, t := range s.swarm.Stats().Torrents {
		if t.Seeding {
			complete = append(complete, t.Digest)
			done[t.Digest] = true
		} else {
			partial[t.Digest] = true
		}
	}
	if err := s.tracker.Resync(complete); err != nil {
		s.log.Warn("announce", "err", err)
	}
	for d := range partial {
		if !s.partial[d] {
			if err := s.tracker.Announce(d, false); err != nil {
				s.log.Warn("announce download", "digest", d, "err", err)
			}
		}
	}
	for d := range s.partial {
		if !partial[d] && !done[d] {
			if err := s.tracker.Withdraw(d); err != nil {
				s.log.Warn("withdraw", "digest", d, "err", err)
			}
		}
	}
	s.partial = partial
}

// spoolEvicted is the egress fetcher's OnEvict: the data dir's cache
// deleted the spool of d (nobody held it; it was the least recently used),
// so run stops seeding it and its descriptor lets go of the bytes.
func (s *seeding) spoolEvicted(d digest.Digest) {
	s.mu.Lock()
	s.evicted[d] = true
	s.mu.Unlock()
	s.poke()
}

// dropEvicted stops seeding spools the cache evicted. containerd's copy,
// if seeded meanwhile, stays.
func (s *seeding) dropEvicted(evicted map[digest.Digest]bool) {
	for d := range evicted {
		if grown := s.takeGrown(d); grown != nil {
			closeLater(grown.Close)
		}
		if r := s.retry[d]; r != nil && r.spool != nil {
			s.succeeded(d, true) // nothing left to seed from
		}
		h, ok := s.held[d]
		if !ok || !h.spool {
			continue
		}
		s.swarm.Unseed(d)
		closeLater(h.close)
		delete(s.held, d)
		s.log.Debug("egress spool evicted: no longer seeded", "digest", d)
	}
}

func (s *seeding) closeAll() {
	for d, h := range s.held {
		_ = h.close()
		delete(s.held, d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for d, f := range s.grown {
		_ = f.Close()
		delete(s.grown, d)
	}
}

// closeLater closes content after closeGrace.
func closeLater(close func() error) {
	time.AfterFunc(closeGrace, func() { _ = close() })
}
