package tracker

import (
	"testing"
)

// TestInventoryMadeAloneArrivesBySnapshot: what a node announces before it
// joins is not broadcast (every member would retransmit a whole
// inventory); the direct snapshots on joining deliver it to every member.
func TestInventoryMadeAloneArrivesBySnapshot(t *testing.T) {
	c := newCluster(t, 4, nil)
	late, err := New(testConfig("late", c.net.transport()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { crash(late) })
	for _, l := range []string{"x", "y", "z"} {
		if err := late.Announce(testDigest(l), true); err != nil {
			t.Fatal(err)
		}
	}
	late.mu.RLock()
	pending := len(late.own.pending)
	late.mu.RUnlock()
	if pending != 0 {
		t.Fatalf("%d changes made alone are queued for broadcast", pending)
	}
	if err := late.Join(t.Context(), []string{c.ports[c.nodes[2]].String()}); err != nil {
		t.Fatal(err)
	}
	for _, tr := range c.nodes {
		waitFor(t, tr.LocalName()+" to learn the late node's inventory", converge, func() bool {
			return seesExactly(tr, testDigest("z"), "late") && seesExactly(tr, testDigest("x"), "late")
		})
	}
	if s := late.Stats(); s.AnnouncementsSent != 3 {
		t.Fatalf("AnnouncementsSent = %d, want 3", s.AnnouncementsSent)
	}
}
