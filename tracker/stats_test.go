package tracker

import (
	"testing"
)

// TestChangeCountersMove: every announcement and withdrawal a node makes
// is counted as sent, and each is counted once as received by the others.
func TestChangeCountersMove(t *testing.T) {
	c := newCluster(t, 3, nil)
	a, b := c.nodes[0], c.nodes[2]
	want := func(sentA, withdrawnA, receivedB, withdrawalsB uint64) {
		t.Helper()
		waitFor(t, "the counters", converge, func() bool {
			sa, sb := a.Stats(), b.Stats()
			return sa.AnnouncementsSent == sentA && sa.WithdrawalsSent == withdrawnA &&
				sb.AnnouncementsReceived == receivedB && sb.WithdrawalsReceived == withdrawalsB
		})
		sa, sb := a.Stats(), b.Stats()
		if sb.AnnouncementsSent != 0 || sb.WithdrawalsSent != 0 || sa.AnnouncementsReceived != 0 || sa.WithdrawalsReceived != 0 {
			t.Fatalf("counters moved on the wrong side: a=%+v b=%+v", sa, sb)
		}
	}
	want(0, 0, 0, 0)
	if err := a.Announce(testDigest("one"), true); err != nil {
		t.Fatal(err)
	}
	if err := a.Announce(testDigest("two"), false); err != nil {
		t.Fatal(err)
	}
	want(2, 0, 2, 0)
	// No change, no count; an upgrade to complete is an announcement.
	if err := a.Announce(testDigest("one"), true); err != nil {
		t.Fatal(err)
	}
	if err := a.Announce(testDigest("two"), true); err != nil {
		t.Fatal(err)
	}
	want(3, 0, 3, 0)
	if err := a.Withdraw(testDigest("one")); err != nil {
		t.Fatal(err)
	}
	if err := a.Withdraw(testDigest("never-had")); err != nil {
		t.Fatal(err)
	}
	want(3, 1, 3, 1)
	// Anti-entropy repeats what b knows: still counted once.
	v := func() view { a.mu.RLock(); defer a.mu.RUnlock(); return a.own.snapshot() }()
	b.merge(&message{Kind: kindState, Views: []view{v}})
	if s := b.Stats(); s.AnnouncementsReceived != 3 || s.WithdrawalsReceived != 1 {
		t.Fatalf("a repeated snapshot was counted again: %+v", s)
	}
}

// TestSnapshotCountsOnlyNews: a snapshot counts what it changes, including
// the digests it no longer lists.
func TestSnapshotCountsOnlyNews(t *testing.T) {
	x := newIndex(16, 1000)
	steps := []view{snapshot(1, 2, "a", "b"), snapshot(1, 3, "a", "b"), snapshot(1, 5, "b", "c")}
	wantAnn := []uint64{2, 2, 3}
	wantWd := []uint64{0, 0, 1}
	for i := range steps {
		x.apply(&steps[i])
		if x.announcementsApplied != wantAnn[i] || x.withdrawalsApplied != wantWd[i] {
			t.Fatalf("after step %d: %d announcements, %d withdrawals; want %d, %d", i, x.announcementsApplied, x.withdrawalsApplied, wantAnn[i], wantWd[i])
		}
	}
	checkIndex(t, x)
}
