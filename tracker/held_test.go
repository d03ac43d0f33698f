package tracker

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/opencontainers/go-digest"
)

// A partition heals: the member on the other side sees us alive first and
// greets us with its inventory while we still count it failed, so the
// index refuses the greeting; a moment later memberlist tells us it is
// alive again. Its inventory must then be known at once: our own greeting
// gets no answer (it greeted us within replyWindow), and the next periodic
// push/pull may be minutes away. The e2e partition test failed this way
// (a node never listed the other side's seeder within a minute).
func TestGreetingRefusedWhileTheMemberCountedFailedAppliesOnceItIsAlive(t *testing.T) {
	c := newCluster(t, 1, nil)
	a := c.nodes[0]
	d := &delegate{t: a}
	const epoch = 7
	before, during := testDigest("pulled-before-the-cut"), testDigest("pulled-during-the-cut")

	b := otherMember(t, "b", epoch, memberlist.StateAlive)
	d.NotifyJoin(b)
	d.NotifyMsg(snapshotMsg(t, "b", epoch, 1, before))
	if !seesExactly(a, before, "b") {
		t.Fatalf("b's snapshot was not applied: seeders %v", seederNames(a.Lookup(before)))
	}

	b.State = memberlist.StateDead
	d.NotifyLeave(b)
	if got := a.Lookup(before); len(got) != 0 {
		t.Fatalf("a failed member still seeds: %v", seederNames(got))
	}
	// Across the healed cut: b's greeting, sent as soon as b saw us.
	d.NotifyMsg(snapshotMsg(t, "b", epoch, 2, before, during))
	if got := a.Lookup(during); len(got) != 0 {
		t.Fatalf("a member counted failed seeds: %v", seederNames(got))
	}
	if s := a.Stats(); s.Announcements != 0 {
		t.Fatalf("the index holds %d entries of a failed member", s.Announcements)
	}

	b.State = memberlist.StateAlive
	d.NotifyJoin(b)
	for _, dg := range []digest.Digest{before, during} {
		if !seesExactly(a, dg, "b") {
			t.Fatalf("b is alive again, and %s has seeders %v, want b (its greeting was lost)", dg, seederNames(a.Lookup(dg)))
		}
	}
}

// A member that left gracefully is not waited for: its views are refused
// and not held (it comes back as a new run, by joining).
func TestViewsOfAMemberThatLeftAreNotHeld(t *testing.T) {
	c := newCluster(t, 1, nil)
	a := c.nodes[0]
	d := &delegate{t: a}
	b := otherMember(t, "b", 7, memberlist.StateAlive)
	d.NotifyJoin(b)
	b.State = memberlist.StateLeft
	d.NotifyLeave(b)
	d.NotifyMsg(snapshotMsg(t, "b", 7, 1, testDigest("x")))
	a.mu.RLock()
	held := len(a.held)
	a.mu.RUnlock()
	if held != 0 {
		t.Fatalf("%d views of a member that left are held", held)
	}
}

// The held view is the one that says most, and none outlives heldTTL.
func TestHeldViewIsTheNewestAndExpires(t *testing.T) {
	tr := &Tracker{
		idx:  newIndex(16, 1000),
		lost: map[string]lostMember{"x": {addr: "198.18.0.2:7946"}},
		held: make(map[string]heldView),
	}
	o := tr.idx.origin("x", true)
	o.epoch = 7
	tr.idx.depart(o)
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	greeting := snapshot(7, 5, "d", "e")
	relayed := snapshot(7, 3, "d")
	announce := delta(7, 4, stateComplete, "f")
	for _, v := range []view{relayed, greeting, announce, relayed} {
		if !tr.holdIfLost(&v, now) {
			t.Fatalf("view at base %d of a lost member was not held", v.Base)
		}
	}
	if h := tr.held["x"]; h.v.Base != 5 {
		t.Fatalf("held the view at base %d, want the greeting's 5", h.v.Base)
	}
	if other := snapshot(8, 9, "d"); tr.holdIfLost(&other, now) {
		t.Fatal("a view of another run was held")
	}
	tr.dropOldHeld(now.Add(heldTTL - time.Second))
	if len(tr.held) != 1 {
		t.Fatal("the held view was dropped before heldTTL")
	}
	tr.dropOldHeld(now.Add(heldTTL))
	if len(tr.held) != 0 {
		t.Fatal("the held view outlived heldTTL")
	}
}

// otherMember is what memberlist would hand the event delegate for a member
// named name whose run has the given epoch.
func otherMember(t *testing.T, name string, epoch uint64, state memberlist.NodeStateType) *memberlist.Node {
	t.Helper()
	meta, err := nodeMeta{Epoch: epoch, HTTPAddr: "198.18.0.2:5000", TorrentAddr: netip.MustParseAddrPort("198.18.0.2:6881"), Version: "test"}.encode()
	if err != nil {
		t.Fatal(err)
	}
	return &memberlist.Node{Name: name, Addr: net.IPv4(198, 18, 0, 2), Port: 7946, Meta: meta, State: state}
}

// snapshotMsg is a direct snapshot, as sendSnapshot sends it: name's
// inventory at base, every digest complete.
func snapshotMsg(t *testing.T, name string, epoch uint64, base uint32, ds ...digest.Digest) []byte {
	t.Helper()
	v := view{Name: name, Epoch: epoch, Base: base}
	for _, d := range ds {
		raw, err := parseDigest(d)
		if err != nil {
			t.Fatal(err)
		}
		v.Entries = append(v.Entries, entry{Digest: raw, State: stateComplete})
	}
	sortEntries(v.Entries)
	return appendView(appendHeader(nil, kindState, 1), &v)
}
