package tracker

import (
	"testing"
	"time"
)

// Two groups cut apart long enough for each to declare the other failed
// (and for memberlist to stop gossiping to the dead) merge again once the
// network is back: each side contacts the members it lost.
func TestPartitionedGroupsMergeWhenTheNetworkReturns(t *testing.T) {
	if testing.Short() {
		t.Skip("partition and heal: skipped with -short")
	}
	c := newCluster(t, 4, func(_ int, cfg *Config) {
		cfg.ReconnectInterval = 200 * time.Millisecond
		cfg.DeadNodeReclaimTime = time.Second
		// memberlist stops gossiping to a failed member after this; the
		// test heals the network only later, as a long partition does.
		cfg.GossipToTheDeadTime = 500 * time.Millisecond
	})
	d := testDigest("seeded-across-the-cut")
	a, b := c.nodes[:2], c.nodes[2:]
	for _, tr := range c.nodes {
		waitFor(t, tr.LocalName()+" to see all 4 members", 20*time.Second, func() bool { return tr.NumMembers() == 4 })
	}
	c.net.partition([]*memTransport{c.ports[a[0]], c.ports[a[1]]}, []*memTransport{c.ports[b[0]], c.ports[b[1]]})
	for _, tr := range c.nodes {
		waitFor(t, tr.LocalName()+" to count only its side", 30*time.Second, func() bool { return tr.NumMembers() == 2 })
	}
	time.Sleep(time.Second) // past GossipToTheDeadTime: nobody talks across any more
	// Announced while apart: the other side learns it only by merging.
	if err := a[0].Announce(d, true); err != nil {
		t.Fatal(err)
	}
	c.net.heal()
	for _, tr := range c.nodes {
		waitFor(t, tr.LocalName()+" to count all 4 members again", 30*time.Second, func() bool { return tr.NumMembers() == 4 })
	}
	for _, tr := range b {
		waitFor(t, tr.LocalName()+" to see the seeder from the other side", 30*time.Second, func() bool {
			return seesExactly(tr, d, a[0].LocalName())
		})
	}
}
