package seeding

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/egress"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// fakeGrowth records the calls a growth gets, with the file it reads.
type fakeGrowth struct {
	file  io.ReaderAt
	size  int64
	calls []string
}

func (g *fakeGrowth) Advance(int64)  { g.calls = append(g.calls, "advance") }
func (g *fakeGrowth) Complete()      { g.calls = append(g.calls, "complete") }
func (g *fakeGrowth) Fail(err error) { g.calls = append(g.calls, "fail") }

// noSwarm is a swarm that seeds nothing, for tests of growing alone.
type noSwarm struct{}

func (noSwarm) Seed(context.Context, digest.Digest, int64, io.ReaderAt) error    { return nil }
func (noSwarm) Replace(context.Context, digest.Digest, int64, io.ReaderAt) error { return nil }
func (noSwarm) Unseed(digest.Digest)                                             {}
func (noSwarm) Holdings() map[digest.Digest]bool                                 { return nil }
func (noSwarm) Changes() <-chan struct{}                                         { return nil }

// lockedAnnouncer is fakeAnnouncer safe for the download's goroutine.
type lockedAnnouncer struct {
	mu sync.Mutex
	a  *fakeAnnouncer
}

func (l *lockedAnnouncer) Announce(d digest.Digest, complete bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.a.Announce(d, complete)
}

func (l *lockedAnnouncer) Withdraw(d digest.Digest) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.a.Withdraw(d)
}

func (l *lockedAnnouncer) Lookup(d digest.Digest) []tracker.Seeder {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.a.Lookup(d)
}

func (l *lockedAnnouncer) partial(d digest.Digest) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.a.partial[d]
}

func (l *lockedAnnouncer) complete(d digest.Digest) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.a.complete[d]
}

// growingFixture is growing with a fake Grow over a spool file.
type growingFixture struct {
	g       *growing
	ann     *lockedAnnouncer
	seeds   *Seeder
	grows   []*fakeGrowth
	growErr error
	blob    []byte
	dgst    digest.Digest
	path    string
}

func newGrowingFixture(t *testing.T, sw *swarm.Swarm) *growingFixture {
	f := &growingFixture{ann: &lockedAnnouncer{a: newFakeAnnouncer()}}
	f.blob, f.dgst = blobOf(t, 4<<20)
	f.path = filepath.Join(t.TempDir(), "spool.partial")
	if err := os.WriteFile(f.path, f.blob, 0o600); err != nil {
		t.Fatal(err)
	}
	var s Swarm = noSwarm{}
	if sw != nil {
		s = sw
	}
	f.seeds = newTestSeeder(t, &fakeContent{blobs: map[digest.Digest][]byte{}}, s, f.ann, nil)
	f.g = &growing{tracker: f.ann, seeds: f.seeds, min: 1 << 20, log: quietLog(),
		grow: func(d digest.Digest, size int64, file io.ReaderAt) (egress.Progress, error) {
			if f.growErr != nil {
				return nil, f.growErr
			}
			g := &fakeGrowth{file: file, size: size}
			f.grows = append(f.grows, g)
			return g, nil
		}}
	return f
}

// A download is grown from its spool file and announced partial; its
// calls reach the growth in order; Complete hands the growth's file to
// the seeding loop, Fail withdraws the announcement.
func TestGrowingStartsAGrowthPerDownload(t *testing.T) {
	t.Run("complete", func(t *testing.T) {
		f := newGrowingFixture(t, nil)
		p := f.g.start(f.dgst, int64(len(f.blob)), f.path)
		if p == nil || len(f.grows) != 1 {
			t.Fatalf("start: %v, %d growths; want one", p, len(f.grows))
		}
		g := f.grows[0]
		got := make([]byte, len(f.blob))
		if _, err := g.file.ReadAt(got, 0); err != nil || !bytes.Equal(got, f.blob) || g.size != int64(len(f.blob)) {
			t.Fatalf("the growth reads %d bytes of %d (%v), want the spool file", g.size, len(f.blob), err)
		}
		if !f.ann.partial(f.dgst) || f.ann.complete(f.dgst) {
			t.Error("a growing download is not announced partial (and only partial)")
		}
		p.Advance(100)
		p.Complete()
		if want := []string{"advance", "complete"}; !slices.Equal(g.calls, want) {
			t.Errorf("growth calls %v, want %v", g.calls, want)
		}
		if file := f.seeds.takeGrown(f.dgst); file == nil || file != g.file {
			t.Errorf("the seeding loop got %v, want the growth's file", file)
		} else {
			file.Close()
		}
	})
	t.Run("fail", func(t *testing.T) {
		f := newGrowingFixture(t, nil)
		p := f.g.start(f.dgst, int64(len(f.blob)), f.path)
		p.Fail(errors.New("digest mismatch"))
		if want := []string{"fail"}; !slices.Equal(f.grows[0].calls, want) {
			t.Errorf("growth calls %v, want %v", f.grows[0].calls, want)
		}
		if f.ann.partial(f.dgst) {
			t.Error("a failed download is still announced")
		}
		if file := f.seeds.takeGrown(f.dgst); file != nil {
			t.Error("a failed growth's file went to the seeding loop")
		}
	})
	for _, tc := range []struct {
		name string
		size int64
		dgst func(*growingFixture) digest.Digest
		err  error
	}{
		{"smaller than the pipeline minimum", 1<<20 - 1, nil, nil},
		{"not sha256", 4 << 20, func(f *growingFixture) digest.Digest { return digest.SHA512.FromBytes(f.blob) }, nil},
		{"Grow refuses", 4 << 20, nil, errors.New("this node has it already")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGrowingFixture(t, nil)
			f.growErr = tc.err
			d := f.dgst
			if tc.dgst != nil {
				d = tc.dgst(f)
			}
			if p := f.g.start(d, tc.size, f.path); p != nil {
				t.Errorf("start gave a Progress")
			}
			if f.ann.partial(d) {
				t.Error("announced without a growth")
			}
		})
	}
	t.Run("no swarm growth", func(t *testing.T) {
		f := newGrowingFixture(t, nil)
		f.g.grow = nil
		if p := f.g.start(f.dgst, int64(len(f.blob)), f.path); p != nil {
			t.Error("start gave a Progress without Grow")
		}
	})
}

// The verified spool of a grown download is seeded from the growth's
// file, not opened again (the path may already be renamed or released),
// and once: containerd's copy seeded before makes the loop drop the file.
func TestSeedingSeedsTheGrownFile(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	f := newGrowingFixture(t, sw.Swarm)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	prog := f.g.start(f.dgst, int64(len(f.blob)), f.path)
	prog.Advance(int64(len(f.blob)))
	prog.Complete()
	grown := f.grows[0].file
	// The spool is renamed and released before the loop runs.
	if err := os.Remove(f.path); err != nil {
		t.Fatal(err)
	}
	f.seeds.EgressComplete(f.dgst, f.path+".renamed", int64(len(f.blob)))
	f.seeds.apply(ctx)
	h, ok := f.seeds.held[f.dgst]
	if !ok || !h.spool || h.ra != grown {
		t.Fatalf("held %+v (%v), want the growth's file as the spool seed", h, ok)
	}
	if !serves(sw.Swarm, f.dgst) {
		t.Error("the grown blob is not served")
	}
	if len(f.seeds.retry) != 0 {
		t.Errorf("seed retries %v, want none", f.seeds.retry)
	}
	if f.seeds.takeGrown(f.dgst) != nil {
		t.Error("the grown file stayed in the table")
	}
}

// containerd's copy seeded before the grown download completes stays the
// seed; the growth's file is dropped, not seeded a second time.
func TestSeedingGrownAfterContainerd(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	f := newGrowingFixture(t, sw.Swarm)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := &fakeContent{blobs: map[digest.Digest][]byte{f.dgst: f.blob}}
	f.seeds.store = store

	prog := f.g.start(f.dgst, int64(len(f.blob)), f.path)
	f.seeds.Changed([]digest.Digest{f.dgst}, nil)
	f.seeds.apply(ctx)
	prog.Advance(int64(len(f.blob)))
	prog.Complete()
	f.seeds.EgressComplete(f.dgst, f.path, int64(len(f.blob)))
	f.seeds.apply(ctx)
	h := f.seeds.held[f.dgst]
	if h.spool || h.ra == f.grows[0].file {
		t.Errorf("held %+v, want containerd's copy", h)
	}
	if f.seeds.takeGrown(f.dgst) != nil {
		t.Error("the grown file stayed in the table")
	}
	if !serves(sw.Swarm, f.dgst) {
		t.Error("the blob is not served")
	}
}

// With the swarm's own Grow: the grown blob becomes the seed at Complete,
// and the seeding loop's Seed of the verified spool keeps it — one seed,
// over the growth's file.
func TestSeedingKeepsTheSwarmsGrowth(t *testing.T) {
	p := &peers{seeders: map[digest.Digest][]swarm.Peer{}}
	sw := startSwarm(t, "127.0.0.2", p)
	f := newGrowingFixture(t, sw.Swarm)
	f.g.grow = func(d digest.Digest, size int64, file io.ReaderAt) (egress.Progress, error) {
		g, err := sw.Grow(d, size, file)
		if err != nil {
			return nil, err
		}
		return g, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	prog := f.g.start(f.dgst, int64(len(f.blob)), f.path)
	if prog == nil {
		t.Fatal("no growth")
	}
	if serves(sw.Swarm, f.dgst) {
		t.Fatal("a growing blob is served as complete")
	}
	prog.Advance(int64(len(f.blob)))
	prog.Complete()
	grown := f.seeds.grown[f.dgst]
	f.seeds.EgressComplete(f.dgst, f.path, int64(len(f.blob)))
	f.seeds.apply(ctx)
	if h := f.seeds.held[f.dgst]; !h.spool || h.ra != grown || grown == nil {
		t.Fatalf("held %+v, want the growth's file as the spool seed", h)
	}
	var entries int
	for _, ts := range sw.Stats().Torrents {
		if ts.Digest == f.dgst {
			entries++
			if !ts.Seeding || !ts.Verified {
				t.Errorf("the grown blob: seeding %v, verified %v; want both", ts.Seeding, ts.Verified)
			}
		}
	}
	if entries != 1 || !serves(sw.Swarm, f.dgst) {
		t.Errorf("%d swarm entries of the blob, served %v; want one, served", entries, serves(sw.Swarm, f.dgst))
	}
}
