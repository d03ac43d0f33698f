package seeding

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/swarm"
)

// The announcer tells the tracker only what changed since its last pass:
// a pass with nothing new makes no call at all.
func TestAnnouncesOnlyChanges(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	blob, d := blobOf(t, 64<<10)
	store := &fakeContent{blobs: map[digest.Digest][]byte{d: blob}}
	ann := newFakeAnnouncer()
	s := newTestSeeder(t, store, sw.Swarm, ann, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	s.Changed([]digest.Digest{d}, nil)
	s.apply(ctx)
	s.announce()
	if !ann.complete[d] || ann.calls != 1 {
		t.Fatalf("after a seed: complete %v, %d calls; want complete in one call", ann.complete[d], ann.calls)
	}
	for range 3 {
		s.announce()
	}
	if ann.calls != 1 {
		t.Fatalf("passes with nothing changed made %d calls, want none", ann.calls-1)
	}
	s.Changed(nil, []digest.Digest{d})
	s.apply(ctx)
	s.announce()
	if ann.complete[d] || ann.calls != 2 {
		t.Fatalf("after unseed: complete %v, %d calls; want withdrawn in one call", ann.complete[d], ann.calls)
	}
}

// Run reacts to events with no tick: containerd gaining a blob gets it
// seeded and announced complete, losing it withdrawn.
func TestRunAnnouncesOnEvents(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	blob, d := blobOf(t, 4<<20)
	store := &fakeContent{blobs: map[digest.Digest][]byte{d: blob}}
	ann := &lockedAnnouncer{a: newFakeAnnouncer()}
	s := newTestSeeder(t, store, sw.Swarm, ann, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()

	s.Changed([]digest.Digest{d}, nil)
	waitFor(t, "announced complete", func() bool { return ann.complete(d) && serves(sw.Swarm, d) })
	s.Changed(nil, []digest.Digest{d})
	waitFor(t, "withdrawn", func() bool { return !ann.complete(d) && !ann.partial(d) })
	if err := s.Stuck(); err != nil {
		t.Fatalf("idle loops reported stuck: %v", err)
	}
}

// A failed seed is retried by Run's timer alone: nothing signals that
// containerd's read error went away.
func TestRunRetriesAFailedSeedWithoutAnEvent(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	blob, d := blobOf(t, 64<<10)
	store := &fakeContent{blobs: map[digest.Digest][]byte{d: blob}, fail: errors.New("containerd: read failed")}
	cfg := DefaultConfig()
	cfg.Store, cfg.Swarm, cfg.Tracker, cfg.Logger = store, sw.Swarm, &lockedAnnouncer{a: newFakeAnnouncer()}, quietLog()
	cfg.RetryMin = 10 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	s.Changed([]digest.Digest{d}, nil)
	waitFor(t, "a failed read", func() bool { return store.readCount() >= 1 })
	store.mu.Lock()
	store.fail = nil
	store.mu.Unlock()
	waitFor(t, "seeded by a retry", func() bool { return serves(sw.Swarm, d) })
}

// A growth that fails after containerd's copy was seeded withdraws the
// digest itself; the announcer puts the complete announcement back.
func TestFailedGrowthLeavesContainerdsCopyAnnounced(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	f := newGrowingFixture(t, sw.Swarm)
	store := &fakeContent{blobs: map[digest.Digest][]byte{f.dgst: f.blob}}
	f.seeds.store = store
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	prog := f.g.start(f.dgst, int64(len(f.blob)), f.path)
	f.seeds.Changed([]digest.Digest{f.dgst}, nil)
	f.seeds.apply(ctx)
	f.seeds.announce()
	if !f.ann.complete(f.dgst) {
		t.Fatal("containerd's copy is not announced complete")
	}
	prog.Fail(errors.New("upstream went away"))
	f.seeds.announce()
	if !f.ann.complete(f.dgst) {
		t.Fatal("a failed growth withdrew containerd's copy for good")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Store, ok.Swarm, ok.Tracker = &fakeContent{}, noSwarm{}, newFakeAnnouncer()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults with the required fields: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"no store":          func(c *Config) { c.Store = nil },
		"no swarm":          func(c *Config) { c.Swarm = nil },
		"no tracker":        func(c *Config) { c.Tracker = nil },
		"no logger":         func(c *Config) { c.Logger = nil },
		"zero backoff":      func(c *Config) { c.RetryMin = 0 },
		"max below the min": func(c *Config) { c.RetryMax = c.RetryMin / 2 },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
}

func TestHeartbeatIsStuckOnlyWhenBusyPastItsLimit(t *testing.T) {
	h := newHeartbeat("loop", 50*time.Millisecond)
	if err := h.Stuck(); err != nil {
		t.Fatalf("fresh heartbeat: %v", err)
	}
	h.busy()
	if err := h.Stuck(); err != nil {
		t.Fatalf("just busy: %v", err)
	}
	h.last.Store(time.Now().Add(-time.Second).UnixNano())
	if err := h.Stuck(); err == nil {
		t.Fatal("busy with no beat for 1 s with a 50 ms limit is not reported")
	}
	h.beat()
	if err := h.Stuck(); err != nil {
		t.Fatalf("after a beat: %v", err)
	}
	h.last.Store(time.Now().Add(-time.Second).UnixNano())
	h.idle()
	if err := h.Stuck(); err != nil {
		t.Fatalf("idle: %v", err)
	}
}

// waitFor polls cond for at most 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
