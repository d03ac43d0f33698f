package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/containerd"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

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

	// Owned by run.
	held    map[digest.Digest]content.ReaderAt // containerd content the swarm seeds
	partial map[digest.Digest]bool             // downloads announced as partial
}

func newSeeding(store *containerd.Store, sw *swarm.Swarm, tr *tracker.Tracker, log *slog.Logger) *seeding {
	return &seeding{
		store: store, swarm: sw, tracker: tr, log: log,
		pending: map[digest.Digest]bool{},
		wake:    make(chan struct{}, 1),
		held:    map[digest.Digest]content.ReaderAt{},
		partial: map[digest.Digest]bool{},
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
	select {
	case s.wake <- struct{}{}:
	default:
	}
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
	}
}

// apply seeds what containerd gained and stops seeding what it lost.
func (s *seeding) apply(ctx context.Context) {
	s.mu.Lock()
	work := s.pending
	s.pending = map[digest.Digest]bool{}
	s.mu.Unlock()
	for d, present := range work {
		if ctx.Err() != nil {
			return
		}
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
	if err := s.swarm.Seed(ctx, d, ra.Size(), ra); err != nil {
		_ = ra.Close()
		if !errors.Is(err, context.Canceled) {
			s.log.Warn("not seeding", "digest", d, "err", err)
		}
		return
	}
	if old := s.held[d]; old != nil {
		_ = old.Close()
	}
	s.held[d] = ra
}

func (s *seeding) unseed(d digest.Digest) {
	ra := s.held[d]
	if ra == nil {
		return
	}
	s.swarm.Unseed(d)
	_ = ra.Close()
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
}

func (s *seeding) closeAll() {
	for d, ra := range s.held {
		_ = ra.Close()
		delete(s.held, d)
	}
}
