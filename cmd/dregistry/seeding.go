package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/containerd"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// spoolReleaseSeeders is how many other members must seed a blob
// completely before an egress node gives up its spooled copy of it (one it
// fetched for others, which its own containerd never pulled).
const spoolReleaseSeeders = 2

// closeGrace is how long content the swarm stopped seeding stays open, so
// transfers already reading it (peer HTTP, torrent pieces) finish rather
// than break off; a deleted file stays readable through its descriptor.
const closeGrace = time.Minute

// announceInterval is how often the announcements are reconciled with what
// the swarm holds (downloads that started, verified or went away).
const announceInterval = time.Second

// seeding keeps three views in step: what containerd holds (the inventory),
// what the swarm seeds, and what the tracker announces. One goroutine owns
// it; the inventory's callback only records what changed.
type seeding struct {
	store   *containerd.Store
	swarm   *swarm.Swarm
	tracker *tracker.Tracker
	log     *slog.Logger

	mu      sync.Mutex
	pending map[digest.Digest]bool // true: containerd has it now; false: gone
	wake    chan struct{}

	spooled map[digest.Digest]spoolFile // verified egress downloads to seed

	// Owned by run.
	held    map[digest.Digest]heldContent // content the swarm seeds
	partial map[digest.Digest]bool        // downloads announced as partial
	release func(digest.Digest) error     // drops the egress spool of a digest

	alive *heartbeat // beats on every pass of run and every blob apply seeds
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
func newSeeding(store *containerd.Store, sw *swarm.Swarm, tr *tracker.Tracker, release func(digest.Digest) error, log *slog.Logger) *seeding {
	return &seeding{
		store: store, swarm: sw, tracker: tr, log: log, release: release,
		pending: map[digest.Digest]bool{},
		spooled: map[digest.Digest]spoolFile{},
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
		s.announce()
		s.alive.beat()
	}
}

// apply seeds what containerd gained and stops seeding what it lost.
func (s *seeding) apply(ctx context.Context) {
	s.mu.Lock()
	work, spools := s.pending, s.spooled
	s.pending, s.spooled = map[digest.Digest]bool{}, map[digest.Digest]spoolFile{}
	s.mu.Unlock()
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

func (s *seeding) seed(ctx context.Context, d digest.Digest) {
	if d.Algorithm() != digest.SHA256 {
		return // torrents and gossip are keyed by sha256 digests
	}
	ra, err := s.store.ReaderAt(ctx, d)
	if err != nil {
		if !errdefs.IsNotFound(err) {
			s.log.Warn("cannot read content to seed", "digest", d, "err", err)
		}
		return
	}
	old, had := s.held[d]
	if had && !old.spool {
		// Seeded from containerd already (an event and a resync both
		// reported it): keep the reader the swarm uses.
		_ = ra.Close()
		if err := s.swarm.Seed(ctx, d, old.size, old.ra); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Warn("not seeding", "digest", d, "err", err)
		}
		return
	}
	if had && old.spool {
		// containerd now holds what the egress fetched: seed its copy and
		// give the spool back.
		s.swarm.Unseed(d)
		closeLater(old.close)
		delete(s.held, d)
		if s.release != nil {
			if err := s.release(d); err != nil {
				s.log.Warn("release egress spool", "digest", d, "err", err)
			}
		}
	}
	if err := s.swarm.Seed(ctx, d, ra.Size(), ra); err != nil {
		_ = ra.Close()
		if !errors.Is(err, context.Canceled) {
			s.log.Warn("not seeding", "digest", d, "err", err)
		}
		return
	}
	s.held[d] = heldContent{ra: ra, size: ra.Size(), close: ra.Close}
}

// seedSpool seeds a blob the egress fetched, unless containerd's copy is
// already seeded.
func (s *seeding) seedSpool(ctx context.Context, d digest.Digest, f spoolFile) {
	if _, ok := s.held[d]; ok {
		return
	}
	file, err := os.Open(f.path)
	if err != nil {
		s.log.Warn("cannot open egress spool to seed", "digest", d, "err", err)
		return
	}
	if err := s.swarm.Seed(ctx, d, f.size, file); err != nil {
		_ = file.Close()
		if !errors.Is(err, context.Canceled) {
			s.log.Warn("not seeding egress spool", "digest", d, "err", err)
		}
		return
	}
	s.held[d] = heldContent{ra: file, size: f.size, close: file.Close, spool: true}
}

func (s *seeding) unseed(d digest.Digest) {
	h, ok := s.held[d]
	if !ok || h.spool {
		return
	}
	s.swarm.Unseed(d)
	closeLater(h.close)
	delete(s.held, d)
}

// announce makes the tracker say exactly what the swarm can serve: seeded
// and verified blobs as complete, downloads in progress as partial.
func (s *seeding) announce() {
	var complete []digest.Digest
	done := map[digest.Digest]bool{}
	partial := map[digest.Digest]bool{}
	for _, t := range s.swarm.Stats().Torrents {
		if t.Seeding || t.Verified {
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
	s.releaseSpread()
}

// releaseSpread drops egress spools of blobs the cluster now seeds from
// elsewhere, so an egress node's disk does not fill with every blob it
// ever fetched for others.
func (s *seeding) releaseSpread() {
	for d, h := range s.held {
		if !h.spool {
			continue
		}
		complete := 0
		for _, p := range s.tracker.Lookup(d) {
			if p.Complete {
				complete++
			}
		}
		if complete < spoolReleaseSeeders {
			continue
		}
		s.swarm.Unseed(d)
		closeLater(h.close)
		delete(s.held, d)
		if s.release != nil {
			if err := s.release(d); err != nil {
				s.log.Warn("release egress spool", "digest", d, "err", err)
				continue
			}
		}
		s.log.Debug("egress spool released: the cluster seeds it", "digest", d, "seeders", complete)
	}
}

func (s *seeding) closeAll() {
	for d, h := range s.held {
		_ = h.close()
		delete(s.held, d)
	}
}

// closeLater closes content after closeGrace.
func closeLater(close func() error) {
	time.AfterFunc(closeGrace, func() { _ = close() })
}
