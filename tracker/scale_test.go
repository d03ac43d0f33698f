package tracker

import (
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"sync"
	"testing"
	"time"
)

// TestScaleHundredsOfMembers runs 200 members on the in-memory network:
// every member's announcement reaches every other through the epidemic
// alone (anti-entropy is too slow to help within the test), and failed
// members vanish from every lookup. Skipped under the race detector, which
// slows each member ~10x: on 2 cores the starved members look failed to
// the others and the test would measure the machine, not the tracker.
// make test runs it without -race: go test -count=1 -run Scale ./tracker
func TestScaleHundredsOfMembers(t *testing.T) {
	if raceEnabled {
		t.Skip("200 in-process members under -race starve on small machines; run: go test -count=1 -run Scale ./tracker")
	}
	if testing.Short() {
		t.Skip("200 in-process members: skipped with -short")
	}
	const n = 200
	// One deadline for every wait below: a bound on a hang, not a timing
	// claim (unloaded, the test takes ~20 s).
	deadline := time.Now().Add(4 * time.Minute)
	warnings := &lineCounter{}
	c := newCluster(t, n, func(_ int, cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(warnings, &slog.HandlerOptions{Level: slog.LevelWarn}))
		// Production gossip and failure detection: test-fast probes make
		// members starved on a loaded machine look failed. Anti-entropy
		// is kept out of the way so the epidemic alone must deliver.
		prod := DefaultConfig()
		cfg.GossipInterval, cfg.GossipNodes, cfg.RetransmitMult = prod.GossipInterval, prod.GossipNodes, prod.RetransmitMult
		cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult = prod.ProbeInterval, prod.ProbeTimeout, prod.SuspicionMult
		cfg.PushPullInterval = 10 * time.Minute
		cfg.JoinAttempts = 5
	})
	for _, tr := range c.nodes {
		for tr.ml.NumMembers() != n {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d of %d members at the deadline; warnings: %v", tr.LocalName(), tr.ml.NumMembers(), n, warnings.snapshot())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
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
	// Every member must come to list every other member, and only it, as
	// the holder of that member's own digest. Lookup leaves out members
	// memberlist holds failed at that moment: a count of index entries
	// reached its bound while node-079 held node-156 failed (a clean-clone
	// run at load, "node-079 does not see node-156's digest" right after),
	// so the wait is on what Lookup answers, not on a count, and holds each
	// member to it until it is true once, within the deadline.
	for _, tr := range c.nodes {
		for !seesEveryOwnDigest(c, tr) || len(tr.Lookup(shared)) < 9 {
			if time.Now().After(deadline) {
				for _, other := range c.nodes {
					t.Logf("%s misses announcements: %s", other.LocalName(), c.missing(other))
				}
				t.Fatalf("%s misses announcements at the deadline: %s; warnings: %v", tr.LocalName(), c.missing(tr), warnings.snapshot())
			}
			time.Sleep(20 * time.Millisecond)
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
		waitFor(t, fmt.Sprintf("%s to drop the 5 failed members", tr.LocalName()), time.Until(deadline), func() bool {
			return len(tr.Lookup(shared)) == want
		})
	}
}

// seesEveryOwnDigest reports whether tr lists every other member, and only
// it, as the holder of that member's own digest.
func seesEveryOwnDigest(c *cluster, tr *Tracker) bool {
	for _, other := range c.nodes {
		if other != tr && !seesExactly(tr, testDigest("own-"+other.LocalName()), other.LocalName()) {
			return false
		}
	}
	return true
}

// missing describes which members' own digests tr does not see, and what
// its index knows of them.
func (c *cluster) missing(tr *Tracker) string {
	var out []string
	for _, other := range c.nodes {
		if other == tr || len(tr.Lookup(testDigest("own-"+other.LocalName()))) == 1 {
			continue
		}
		tr.mu.RLock()
		desc := "unknown"
		if o := tr.idx.origin(other.LocalName(), false); o != nil {
			desc = fmt.Sprintf("alive=%v departed=%v cleared=%v base=%d maxSeq=%d refs=%d", o.alive, o.departed, o.cleared, o.base, o.maxSeq, o.refs)
		}
		tr.mu.RUnlock()
		out = append(out, other.LocalName()+" ("+desc+")")
	}
	s := tr.Stats()
	return fmt.Sprintf("%d members missing %v; stats %+v; in-memory network dropped %d packets", len(out), out, s, c.net.dropped.Load())
}

// lineCounter counts log lines by message, for diagnostics.
type lineCounter struct {
	mu sync.Mutex
	n  map[string]int
}

var msgField = regexp.MustCompile(`msg="?([^"=]*?)(?: \(|" |$| [a-z]+=)`)

func (l *lineCounter) Write(p []byte) (int, error) {
	key := string(p)
	if m := msgField.FindSubmatch(p); m != nil {
		key = string(m[1])
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = make(map[string]int)
	}
	l.n[key]++
	return len(p), nil
}

func (l *lineCounter) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.n)
}
