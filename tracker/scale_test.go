package tracker

import (
	"fmt"
	"testing"
	"time"
)

// TestHundredsOfMembers runs 200 members (60 under the race detector) on
// the in-memory network: every member's announcement reaches every other,
// and failed members vanish from every lookup.
func TestHundredsOfMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("200 in-process members: skipped with -short")
	}
	n := 200
	if raceEnabled {
		n = 60
	}
	c := newCluster(t, n, func(_ int, cfg *Config) {
		// Production gossip timing; failure detection stays test-fast.
		cfg.GossipInterval = 200 * time.Millisecond
		cfg.ProbeInterval = 500 * time.Millisecond
		cfg.ProbeTimeout = 250 * time.Millisecond
		cfg.PushPullInterval = 30 * time.Second
	})
	shared := testDigest("base-image")
	for _, tr := range c.nodes {
		if err := tr.Announce(testDigest("own-"+tr.LocalName()), true); err != nil {
			t.Fatal(err)
		}
	}
	for _, tr := range c.nodes[:10] {
		if err := tr.Announce(shared, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, tr := range c.nodes {
		waitFor(t, tr.LocalName()+" to see every member's announcement", 2*time.Minute, func() bool {
			return tr.Stats().Announcements >= n-1+9 && len(tr.Lookup(shared)) >= 9
		})
	}
	for i, tr := range c.nodes {
		other := c.nodes[(i*7+3)%n]
		if tr == other {
			continue
		}
		if !seesExactly(tr, testDigest("own-"+other.LocalName()), other.LocalName()) {
			t.Fatalf("%s does not see %s's digest", tr.LocalName(), other.LocalName())
		}
	}
	failed := c.nodes[:5]
	for _, tr := range failed {
		crash(tr)
	}
	for i, tr := range c.nodes[5:] {
		want := 5 // nodes 5..9 still seed it; a node does not list itself
		if i < 5 {
			want = 4
		}
		waitFor(t, fmt.Sprintf("%s to drop the 5 failed members", tr.LocalName()), 2*time.Minute, func() bool {
			return len(tr.Lookup(shared)) == want
		})
	}
}
