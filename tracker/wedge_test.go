package tracker

import (
	"strings"
	"testing"
	"time"
)

// A lock held for good (as a lock-order inversion would) makes Stuck say
// so within a bound, and the node recovers its health once it is free.
func TestStuckReportsAWedgedGossipDelegate(t *testing.T) {
	const stuckAfter = 300 * time.Millisecond
	c := newCluster(t, 2, func(_ int, cfg *Config) { cfg.StuckAfter = stuckAfter })
	tr := c.nodes[0]
	if err := tr.Stuck(); err != nil {
		t.Fatalf("a healthy tracker reports %v", err)
	}
	waitFor(t, "NumMembers to count both members", 10*time.Second, func() bool { return tr.NumMembers() == 2 })

	tr.mu.Lock() // what a callback blocked forever under t.mu looks like
	waitFor(t, "Stuck to report the held lock", 20*stuckAfter, func() bool { return tr.Stuck() != nil })
	err := tr.Stuck()
	// Stuck and NumMembers must answer while the lock is held: /readyz
	// calls them on a wedged node.
	_ = tr.NumMembers()
	tr.mu.Unlock()
	if !strings.Contains(err.Error(), "no progress") {
		t.Errorf("Stuck() = %v, want a reason that says no progress", err)
	}
	waitFor(t, "Stuck to clear once the lock is free", 20*stuckAfter, func() bool { return tr.Stuck() == nil })
}
