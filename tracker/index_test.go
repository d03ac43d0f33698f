package tracker

import (
	"testing"
)

func raw(label string) sha256Digest {
	d, err := parseDigest(testDigest(label))
	if err != nil {
		panic(err)
	}
	return d
}

func delta(epoch uint64, seq uint32, s entryState, label string) view {
	return view{Name: "x", Epoch: epoch, Entries: []entry{{Digest: raw(label), State: s, Seq: seq}}}
}

func snapshot(epoch uint64, base uint32, labels ...string) view {
	v := view{Name: "x", Epoch: epoch, Base: base}
	for _, l := range labels {
		v.Entries = append(v.Entries, entry{Digest: raw(l), State: stateComplete})
	}
	sortEntries(v.Entries)
	return v
}

// seeds reports what x's index says origin "x" has of label: 0 for nothing.
func seeds(x *index, label string) entryState {
	for _, r := range x.holdersOf(raw(label)) {
		if x.origins[r.id()].name == "x" && r.state() != stateWithdrawn {
			return r.state()
		}
	}
	return 0
}

// TestNoStaleResurrection applies a history of messages, in the order the
// network delivered them, and checks the final word on digest "d".
func TestNoStaleResurrection(t *testing.T) {
	cases := []struct {
		name  string
		steps []view
		clear int // apply index.clear (the member left) before this step; -1: never
		want  entryState
	}{
		{"announce then withdraw", []view{delta(1, 1, stateComplete, "d"), delta(1, 2, stateWithdrawn, "d")}, -1, 0},
		{"withdraw overtakes the announcement", []view{delta(1, 2, stateWithdrawn, "d"), delta(1, 1, stateComplete, "d")}, -1, 0},
		{"duplicate old announcement after withdraw", []view{delta(1, 1, stateComplete, "d"), delta(1, 2, stateWithdrawn, "d"), delta(1, 1, stateComplete, "d")}, -1, 0},
		{"relayed snapshot older than the withdrawal", []view{delta(1, 1, stateComplete, "d"), delta(1, 2, stateWithdrawn, "d"), snapshot(1, 1, "d")}, -1, 0},
		{"newer snapshot without it", []view{delta(1, 1, stateComplete, "d"), snapshot(1, 5, "e")}, -1, 0},
		{"older snapshot cannot undo a change", []view{delta(1, 7, statePartial, "d"), snapshot(1, 5)}, -1, statePartial},
		{"partial then complete", []view{delta(1, 1, statePartial, "d"), delta(1, 2, stateComplete, "d")}, -1, stateComplete},
		{"late partial after complete", []view{delta(1, 2, stateComplete, "d"), delta(1, 1, statePartial, "d")}, -1, stateComplete},
		{"previous run's gossip after a restart", []view{snapshot(2, 3, "e"), delta(1, 9, stateComplete, "d")}, -1, 0},
		{"restart drops the previous run", []view{delta(1, 1, stateComplete, "d"), delta(2, 1, stateComplete, "e")}, -1, 0},
		{"member left: delayed gossip stays out", []view{delta(1, 1, stateComplete, "d"), delta(1, 2, stateComplete, "e"), delta(1, 1, stateComplete, "d")}, 2, 0},
		{"member back: its own snapshot at the same base applies", []view{delta(1, 1, stateComplete, "d"), snapshot(1, 1, "d")}, 1, stateComplete},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := newIndex(16, 1000)
			for i := range tc.steps {
				if i == tc.clear {
					x.clear(x.origin("x", false))
				}
				x.apply(&tc.steps[i])
			}
			if got := seeds(x, "d"); got != tc.want {
				t.Fatalf("final state of d = %d, want %d", got, tc.want)
			}
			checkIndex(t, x)
		})
	}
}

// TestDepartedMemberStaysGone: once memberlist reports a member gone, its
// run's gossip still in flight cannot bring entries back; a new run can,
// and so can the same run once the member is seen alive again.
func TestDepartedMemberStaysGone(t *testing.T) {
	x := newIndex(16, 1000)
	for _, v := range []view{delta(1, 1, stateComplete, "d"), delta(1, 2, stateComplete, "e")} {
		x.apply(&v)
	}
	o := x.origin("x", false)
	x.depart(o)
	for _, v := range []view{snapshot(1, 2, "d", "e"), delta(1, 3, stateComplete, "f"), snapshot(1, 9, "g")} {
		if changed, stale := x.apply(&v); changed || !stale {
			t.Fatalf("gossip of a departed run: changed=%v stale=%v", changed, stale)
		}
	}
	if o.refs != 0 {
		t.Fatalf("a departed member holds %d entries", o.refs)
	}
	// Seen alive again (it refuted its death): its own snapshot applies.
	o.alive, o.departed = true, false
	v := snapshot(1, 2, "d")
	if changed, _ := x.apply(&v); !changed || seeds(x, "d") != stateComplete {
		t.Fatal("the member's snapshot after it came back was refused")
	}
	x.depart(o)
	v = delta(2, 1, stateComplete, "h")
	if changed, _ := x.apply(&v); !changed || seeds(x, "h") != stateComplete || seeds(x, "d") != 0 {
		t.Fatal("a new run of a departed member was refused or kept the old run")
	}
	checkIndex(t, x)
}

func TestTombstonesGoOnceASnapshotCoversThem(t *testing.T) {
	x := newIndex(16, 1000)
	for _, v := range []view{delta(1, 1, stateComplete, "d"), delta(1, 2, stateWithdrawn, "d")} {
		x.apply(&v)
	}
	if len(x.ids) != 1 {
		t.Fatalf("the withdrawal must be remembered until covered; %d digests", len(x.ids))
	}
	v := snapshot(1, 2)
	x.apply(&v)
	if len(x.ids) != 0 || x.origin("x", false).refs != 0 {
		t.Fatalf("a snapshot at the withdrawal's sequence left %d digests", len(x.ids))
	}
	checkIndex(t, x)
}

func TestIndexBoundsOriginsAndEntries(t *testing.T) {
	x := newIndex(2, 3)
	for i, name := range []string{"a", "b", "c"} {
		v := view{Name: name, Epoch: 1, Entries: []entry{{Digest: raw(name), State: stateComplete, Seq: 1}}}
		changed, stale := x.apply(&v)
		if full := i == 2; changed == full || stale != full {
			t.Fatalf("origin %s: changed=%v stale=%v", name, changed, stale)
		}
	}
	v := view{Name: "a", Epoch: 1}
	for i := range 5 {
		v.Entries = append(v.Entries, entry{Digest: raw(string(rune('k' + i))), State: stateComplete, Seq: uint32(2 + i)})
	}
	sortEntries(v.Entries)
	x.apply(&v)
	if o := x.origin("a", false); o.refs != 3 {
		t.Fatalf("origin a holds %d entries, bound is 3", o.refs)
	}
	checkIndex(t, x)
}

// checkIndex verifies the index's internal bookkeeping agrees with itself.
func checkIndex(t testing.TB, x *index) {
	t.Helper()
	refs := map[uint32]int{}
	for d, id := range x.ids {
		if x.digests[id] != d {
			t.Fatalf("digest id %d maps back to another digest", id)
		}
		hs := x.holders[id]
		if len(hs) == 0 {
			t.Fatalf("digest id %d kept with no holder", id)
		}
		seen := map[uint32]bool{}
		for _, r := range hs {
			if seen[r.id()] {
				t.Fatalf("origin %d holds digest %d twice", r.id(), id)
			}
			seen[r.id()] = true
			refs[r.id()]++
		}
	}
	for _, o := range x.origins {
		if o != nil && o.refs != refs[o.id] {
			t.Fatalf("origin %s counts %d refs, index has %d", o.name, o.refs, refs[o.id])
		}
	}
}
