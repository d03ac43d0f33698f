package containerd

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// mirror rebuilds the held set from notifications alone, as the tracker will.
type mirror struct {
	mu   sync.Mutex
	held map[digest.Digest]bool
	errs []string
}

func subscribeMirror(inv *Inventory) (*mirror, func()) {
	m := &mirror{held: map[digest.Digest]bool{}}
	cancel := inv.Subscribe(func(added, removed []digest.Digest) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, d := range added {
			if m.held[d] {
				m.errs = append(m.errs, "added twice: "+d.String())
			}
			m.held[d] = true
		}
		for _, d := range removed {
			if !m.held[d] {
				m.errs = append(m.errs, "removed while not held: "+d.String())
			}
			delete(m.held, d)
		}
	})
	return m, cancel
}

func (m *mirror) digests() []digest.Digest {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []digest.Digest
	for d := range m.held {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// check fails the test when the notifications disagree with the inventory.
func (m *mirror) check(t *testing.T, inv *Inventory) {
	t.Helper()
	m.mu.Lock()
	errs := slices.Clone(m.errs)
	m.mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("inconsistent notifications: %v", errs)
	}
	if got, want := m.digests(), inv.digests(); !slices.Equal(got, want) {
		t.Fatalf("subscriber sees %v, inventory holds %v", got, want)
	}
}

func set(ds ...digest.Digest) map[digest.Digest]struct{} {
	s := map[digest.Digest]struct{}{}
	for _, d := range ds {
		s[d] = struct{}{}
	}
	return s
}

func TestInventoryCountsADigestWhileAnyNamespaceHoldsIt(t *testing.T) {
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	steps := []struct {
		name           string
		sets           map[string]map[digest.Digest]struct{}
		added, removed []digest.Digest
		heldAfterwards []digest.Digest
	}{
		{"first namespace", map[string]map[digest.Digest]struct{}{"k8s.io": set(a, b)}, []digest.Digest{a, b}, nil, []digest.Digest{a, b}},
		{"second namespace shares b", map[string]map[digest.Digest]struct{}{"moby": set(b, c)}, []digest.Digest{c}, nil, []digest.Digest{a, b, c}},
		{"b leaves one namespace", map[string]map[digest.Digest]struct{}{"k8s.io": set(a)}, nil, nil, []digest.Digest{a, b, c}},
		{"same set again", map[string]map[digest.Digest]struct{}{"k8s.io": set(a)}, nil, nil, []digest.Digest{a, b, c}},
		{"b moves between namespaces in one batch", map[string]map[digest.Digest]struct{}{"moby": set(c), "k8s.io": set(a, b)}, nil, nil, []digest.Digest{a, b, c}},
		{"namespace dropped", map[string]map[digest.Digest]struct{}{"moby": nil}, nil, []digest.Digest{c}, []digest.Digest{a, b}},
		{"emptied", map[string]map[digest.Digest]struct{}{"k8s.io": set()}, nil, []digest.Digest{a, b}, nil},
	}
	inv := NewInventory(&Store{log: slog.New(slog.DiscardHandler)})
	var gotAdded, gotRemoved []digest.Digest
	calls := 0
	inv.Subscribe(func(added, removed []digest.Digest) {
		calls++
		gotAdded, gotRemoved = added, removed
	})
	if calls != 0 {
		t.Fatal("an empty inventory notified a new subscriber")
	}
	for _, st := range steps {
		slices.Sort(st.added) // notifications come sorted
		slices.Sort(st.removed)
		slices.Sort(st.heldAfterwards)
		gotAdded, gotRemoved = nil, nil
		inv.apply(st.sets)
		if !slices.Equal(gotAdded, st.added) || !slices.Equal(gotRemoved, st.removed) {
			t.Fatalf("%s: notified +%v -%v, want +%v -%v", st.name, gotAdded, gotRemoved, st.added, st.removed)
		}
		if got := inv.digests(); !slices.Equal(got, st.heldAfterwards) {
			t.Fatalf("%s: holds %v, want %v", st.name, got, st.heldAfterwards)
		}
		if inv.Len() != len(st.heldAfterwards) {
			t.Fatalf("%s: Len %d, want %d", st.name, inv.Len(), len(st.heldAfterwards))
		}
	}
}

func TestInventorySubscribeStartsWithWhatIsHeld(t *testing.T) {
	a := digest.FromString("a")
	inv := NewInventory(&Store{log: slog.New(slog.DiscardHandler)})
	inv.apply(map[string]map[digest.Digest]struct{}{"default": set(a)})
	var first []digest.Digest
	cancel := inv.Subscribe(func(added, _ []digest.Digest) { first = added })
	if !slices.Equal(first, []digest.Digest{a}) {
		t.Fatalf("new subscriber got %v, want [%s]", first, a)
	}
	cancel()
	first = nil
	inv.apply(map[string]map[digest.Digest]struct{}{"default": nil})
	if first != nil {
		t.Fatal("cancelled subscriber still notified")
	}
}

// runInventory runs an inventory over ctd until the test ends.
func runInventory(t *testing.T, s *Store) *Inventory {
	t.Helper()
	inv := NewInventory(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		inv.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(testDeadline):
			t.Error("Run did not return after its context ended")
		}
	})
	return inv
}

func TestInventoryFollowsEventsAndResyncs(t *testing.T) {
	ctd := testenv.StartContainerd(t, "")
	w := newWriter(t, ctd)
	before := w.keptBlob("default", randomBytes(t, 1024))
	hidden := w.keptBlob("other", randomBytes(t, 1024))

	// An hour between resyncs: whatever shows up below came from events or Resync.
	s := newTestStore(t, ctd, Config{Namespaces: []string{"default", "k8s.io"}, ResyncInterval: time.Hour})
	inv := runInventory(t, s)
	m, cancel := subscribeMirror(inv)
	defer cancel()
	ctx := testContext(t)

	eventually(t, "holding content written before Run", func() bool { return inv.Has(before) })

	t.Run("image event brings the image's content", func(t *testing.T) {
		manifest := w.keptBlob("k8s.io", randomBytes(t, 512))
		w.image("k8s.io", "docker.io/library/test:1", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: manifest, Size: 512})
		eventually(t, "holding the image's manifest after /images/create", func() bool { return inv.Has(manifest) })
	})

	t.Run("content delete event removes it", func(t *testing.T) {
		gone := w.keptBlob("default", randomBytes(t, 2048))
		w.image("default", "docker.io/library/gone:1", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: gone, Size: 2048})
		eventually(t, "holding the new blob", func() bool { return inv.Has(gone) })
		w.deleteBlob("default", gone)
		eventually(t, "dropping the blob after /content/delete", func() bool { return !inv.Has(gone) })
	})

	t.Run("a digest stays while another namespace holds it", func(t *testing.T) {
		data := randomBytes(t, 700)
		shared := w.keptBlob("default", data)
		w.keptBlob("k8s.io", data)
		if err := inv.Resync(ctx); err != nil {
			t.Fatal(err)
		}
		if !inv.Has(shared) {
			t.Fatal("not held after Resync")
		}
		w.deleteBlob("default", shared)
		// The delete event arrives later; a resync after it must still hold it.
		if err := inv.Resync(ctx); err != nil {
			t.Fatal(err)
		}
		if !inv.Has(shared) {
			t.Fatal("dropped though k8s.io still holds it")
		}
	})

	t.Run("garbage collection is silent; resync notices", func(t *testing.T) {
		collected, release := w.blob("default", randomBytes(t, 4096), nil)
		if err := inv.Resync(ctx); err != nil {
			t.Fatal(err)
		}
		if !inv.Has(collected) {
			t.Fatal("leased blob not held after Resync")
		}
		release() // deletes the lease and collects synchronously: no event
		if _, err := s.ReaderAt(ctx, collected); err == nil {
			t.Fatal("collected blob still readable")
		}
		if err := inv.Resync(ctx); err != nil {
			t.Fatal(err)
		}
		if inv.Has(collected) {
			t.Fatal("collected blob still held after Resync")
		}
	})

	if inv.Has(hidden) {
		t.Fatal("holds content of a namespace that was not chosen")
	}
	if err := inv.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	m.check(t, inv)
}

func TestInventoryEveryNamespaceIncludesNewOnes(t *testing.T) {
	ctd := testenv.StartContainerd(t, "")
	w := newWriter(t, ctd)
	s := newTestStore(t, ctd, Config{ResyncInterval: time.Hour})
	inv := runInventory(t, s)
	if err := inv.Resync(testContext(t)); err != nil {
		t.Fatal(err)
	}
	// The namespace does not exist when Run starts: creating it is an event.
	d := w.keptBlob("buildkit", randomBytes(t, 300))
	w.image("buildkit", "example.com/x:1", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: 300})
	eventually(t, "holding content of a namespace created after Run", func() bool { return inv.Has(d) })
}

func TestInventoryResubscribesAndResyncsAfterContainerdRestart(t *testing.T) {
	ctd := testenv.StartContainerd(t, "")
	w := newWriter(t, ctd)
	kept := w.keptBlob("default", randomBytes(t, 1024))
	s := newTestStore(t, ctd, Config{ResyncInterval: time.Hour})
	inv := runInventory(t, s)
	m, cancel := subscribeMirror(inv)
	defer cancel()
	eventually(t, "holding the first blob", func() bool { return inv.Has(kept) })

	ctd.Stop(t)
	eventually(t, "not Ready with containerd stopped", func() bool { return !s.Ready() })
	if err := inv.Resync(testContext(t)); err == nil {
		t.Fatal("Resync succeeded with containerd stopped")
	}
	if !inv.Has(kept) {
		t.Fatal("a containerd outage emptied the inventory")
	}

	ctd.Start(t)
	// Resync answers only from a live session: subscribed again and resynced.
	eventually(t, "a session again after containerd restarted", func() bool { return inv.Resync(testContext(t)) == nil })
	if !s.Ready() {
		t.Fatal("not Ready though the inventory resynced")
	}
	// Only the new subscription can see this: resyncs are an hour apart.
	after := w.keptBlob("default", randomBytes(t, 1500))
	w.image("default", "docker.io/library/after:1", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: after, Size: 1500})
	eventually(t, "holding content announced after the restart", func() bool { return inv.Has(after) })
	if !inv.Has(kept) {
		t.Fatal("lost the first blob across the restart")
	}
	m.check(t, inv)
}
