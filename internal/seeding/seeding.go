package seeding

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
	"golang.org/x/sync/errgroup"
)

// closeGrace is how long content the swarm stopped seeding stays open, so
// transfers already reading it (peer HTTP, torrent pieces) finish rather
// than break off; a deleted file stays readable through its descriptor.
const closeGrace = time.Minute

// stuckAfter: the loops beat after each blob they seed and each
// announcement pass (hashing one multi-GiB blob on a slow disk takes tens
// of seconds), so two minutes busy without a beat is a loop that is
// blocked.
const stuckAfter = 2 * time.Minute

// ContentStore is what the seeding loop reads of containerd.
type ContentStore interface {
	ReaderAt(context.Context, digest.Digest) (content.ReaderAt, error)
}

// Swarm is the seeding loop's side of the swarm (*swarm.Swarm).
type Swarm interface {
	Seed(ctx context.Context, d digest.Digest, size int64, content io.ReaderAt) error
	// Replace seeds content in place of what the swarm seeds d from,
	// with no moment unserved.
	Replace(ctx context.Context, d digest.Digest, size int64, content io.ReaderAt) error
	Unseed(d digest.Digest)
	// Holdings is every blob of the swarm: true for what its peer
	// endpoints serve whole. Changes signals when it may have changed.
	Holdings() map[digest.Digest]bool
	Changes() <-chan struct{}
}

// Announcer is the seeding loop's side of the tracker.
type Announcer interface {
	Announce(d digest.Digest, complete bool) error
	Withdraw(d digest.Digest) error
}

// Config configures a Seeder.
type Config struct {
	Store   ContentStore // required
	Swarm   Swarm        // required
	Tracker Announcer    // required
	// Release drops the egress spool of a digest once containerd holds it;
	// nil when there is no egress fetcher.
	Release func(digest.Digest) error
	// RetryMin and RetryMax bound the backoff between attempts to seed a
	// blob whose Seed failed.
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger
}

// DefaultConfig returns the defaults; the caller sets the required fields.
func DefaultConfig() Config {
	return Config{RetryMin: time.Second, RetryMax: 5 * time.Minute, Logger: slog.Default()}
}

// Validate reports a Config New cannot run with.
func (c Config) Validate() error {
	if c.Store == nil || c.Swarm == nil || c.Tracker == nil {
		return errors.New("seeding: Config.Store, Swarm and Tracker are required")
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		return fmt.Errorf("seeding: retry backoff %v..%v: want 0 < RetryMin <= RetryMax", c.RetryMin, c.RetryMax)
	}
	if c.Logger == nil {
		return errors.New("seeding: Config.Logger is required")
	}
	return nil
}

// Seeder keeps three views in step: what containerd holds (the
// inventory), what the swarm seeds, and what the tracker announces. See
// the package doc for its goroutines and locks.
type Seeder struct {
	cfg     Config
	store   ContentStore
	swarm   Swarm
	tracker Announcer
	log     *slog.Logger
	// failures counts failed attempts to seed (dregistry_seed_failures_total).
	failures prometheus.Counter

	mu         sync.Mutex
	pending    map[digest.Digest]bool // true: containerd has it now; false: gone
	wake       chan struct{}
	spooled    map[digest.Digest]spoolFile // verified egress downloads to seed
	grown      map[digest.Digest]*os.File  // their files the swarm seeds already (growing.Complete)
	evicted    map[digest.Digest]bool      // spools the data dir's cache deleted
	reannounce map[digest.Digest]bool      // announced by others meanwhile (Growing)
	rewake     chan struct{}

	// Owned by the seed loop.
	held  map[digest.Digest]heldContent // content the swarm seeds
	retry map[digest.Digest]*seedRetry  // blobs whose Seed failed
	now   func() time.Time

	// Owned by the announcer.
	announced map[digest.Digest]bool // true complete, false partial

	seedAlive, announceAlive *heartbeat
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

// New links the three views; Run starts the loops.
func New(cfg Config) (*Seeder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Seeder{
		cfg: cfg, store: cfg.Store, swarm: cfg.Swarm, tracker: cfg.Tracker, log: cfg.Logger,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dregistry_seed_failures_total",
			Help: "Failed attempts to seed a blob containerd holds or the egress fetched (each is retried with backoff).",
		}),
		pending:       map[digest.Digest]bool{},
		wake:          make(chan struct{}, 1),
		spooled:       map[digest.Digest]spoolFile{},
		grown:         map[digest.Digest]*os.File{},
		evicted:       map[digest.Digest]bool{},
		reannounce:    map[digest.Digest]bool{},
		rewake:        make(chan struct{}, 1),
		held:          map[digest.Digest]heldContent{},
		retry:         map[digest.Digest]*seedRetry{},
		now:           time.Now,
		announced:     map[digest.Digest]bool{},
		seedAlive:     newHeartbeat("the seeding loop", stuckAfter),
		announceAlive: newHeartbeat("the announce loop", stuckAfter),
	}, nil
}

// Metrics is dregistry_seed_failures_total, for the ops registry.
func (s *Seeder) Metrics() prometheus.Collector { return s.failures }

// Stuck reports a loop that has been busy without progress for too long
// (a lock held for good); an idle loop is never stuck. It never blocks.
func (s *Seeder) Stuck() error {
	if err := s.seedAlive.Stuck(); err != nil {
		return err
	}
	return s.announceAlive.Stuck()
}

// Run runs the seed loop and the announcer until ctx ends, then closes
// what the swarm seeded from.
func (s *Seeder) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { s.seedLoop(gctx); return nil })
	g.Go(func() error { s.announceLoop(gctx); return nil })
	g.Go(func() error { logStuck(gctx, s.log, s.seedAlive, s.announceAlive); return nil })
	return g.Wait()
}

// Changed is the inventory's callback (containerd.ChangeFunc): it must
// not block.
func (s *Seeder) Changed(added, removed []digest.Digest) {
	s.mu.Lock()
	for _, d := range added {
		s.pending[d] = true
	}
	for _, d := range removed {
		s.pending[d] = false
	}
	s.mu.Unlock()
	poke(s.wake)
}

// EgressComplete is the egress fetcher's OnComplete: the verified spool is
// seeded (by the seed loop, since hashing pieces takes a while) and so
// announced.
func (s *Seeder) EgressComplete(d digest.Digest, path string, size int64) {
	s.mu.Lock()
	s.spooled[d] = spoolFile{path: path, size: size}
	s.mu.Unlock()
	poke(s.wake)
}

// EgressGrown is called, before EgressComplete, when a download the swarm
// seeded while it arrived (Growing) is verified: file is what the swarm
// seeds it from, so the spool's seed uses that file rather than opening
// the spool again.
func (s *Seeder) EgressGrown(d digest.Digest, file *os.File) {
	s.mu.Lock()
	old := s.grown[d]
	s.grown[d] = file
	s.mu.Unlock()
	if old != nil {
		closeLater(old.Close)
	}
}

// SpoolEvicted is the egress fetcher's OnEvict: the data dir's cache
// deleted the spool of d (nobody held it; it was the least recently used),
// so the seed loop stops seeding it and its descriptor lets go of the
// bytes.
func (s *Seeder) SpoolEvicted(d digest.Digest) {
	s.mu.Lock()
	s.evicted[d] = true
	s.mu.Unlock()
	poke(s.wake)
}

// takeGrown returns the file a growth of d left (nil if none); the caller
// owns it.
func (s *Seeder) takeGrown(d digest.Digest) *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.grown[d]
	delete(s.grown, d)
	return f
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// seedLoop applies the events and retries due until ctx ends.
func (s *Seeder) seedLoop(ctx context.Context) {
	defer s.closeAll()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			s.seedAlive.busy()
			s.apply(ctx)
		case <-retry.C:
			s.seedAlive.busy()
			s.retryDue(ctx)
		}
		s.seedAlive.idle()
		if wait, ok := s.nextRetry(); ok {
			retry.Reset(wait)
		}
	}
}

// apply seeds what containerd gained and stops seeding what it lost.
func (s *Seeder) apply(ctx context.Context) {
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
		s.seedAlive.beat()
		s.seedSpool(ctx, d, f)
	}
	for d, present := range work {
		if ctx.Err() != nil {
			return
		}
		s.seedAlive.beat()
		if present {
			s.seed(ctx, d)
		} else {
			s.unseed(d)
		}
	}
}

// seed seeds containerd's copy of d. A failure is logged, counted and
// retried with backoff while containerd holds d (see retryDue).
func (s *Seeder) seed(ctx context.Context, d digest.Digest) {
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
func (s *Seeder) seedSpool(ctx context.Context, d digest.Digest, f spoolFile) {
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

func (s *Seeder) unseed(d digest.Digest) {
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
func (s *Seeder) releaseSpool(d digest.Digest) {
	if s.cfg.Release == nil {
		return
	}
	if err := s.cfg.Release(d); err != nil {
		s.log.Warn("release egress spool", "digest", d, "err", err)
	}
}

// dropEvicted stops seeding spools the cache evicted. containerd's copy,
// if seeded meanwhile, stays.
func (s *Seeder) dropEvicted(evicted map[digest.Digest]bool) {
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

func (s *Seeder) closeAll() {
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
