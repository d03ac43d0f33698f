package tracker

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

const converge = 20 * time.Second

func TestAnnounceLookupWithdraw(t *testing.T) {
	c := newCluster(t, 5, func(i int, cfg *Config) { cfg.Egress = i == 1 })
	d := testDigest("layer")
	seed, downloader := c.nodes[1], c.nodes[2]
	if err := seed.Announce(d, true); err != nil {
		t.Fatal(err)
	}
	if err := downloader.Announce(d, false); err != nil {
		t.Fatal(err)
	}
	for _, tr := range c.without(seed, downloader) {
		waitFor(t, tr.LocalName()+" to see both seeders", converge, func() bool {
			return seesExactly(tr, d, seed.LocalName(), downloader.LocalName())
		})
		got := tr.Lookup(d)
		want := []Seeder{
			{Node: seed.LocalName(), HTTPAddr: seed.cfg.PeerHTTPAddr, TorrentAddr: seed.cfg.TorrentAddr, Complete: true, Egress: true},
			{Node: downloader.LocalName(), HTTPAddr: downloader.cfg.PeerHTTPAddr, TorrentAddr: downloader.cfg.TorrentAddr},
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: Lookup = %+v, want complete seeder first: %+v", tr.LocalName(), got, want)
		}
	}
	// Gossip is eventually consistent: the seed may hear of the
	// downloader after the others did.
	waitFor(t, "the seed to see the downloader", converge, func() bool { return len(seed.Lookup(d)) > 0 })
	if got := seed.Lookup(d); !slices.Equal(seederNames(got), []string{downloader.LocalName() + "/partial"}) {
		t.Fatalf("a node must not list itself: %v", seederNames(got))
	}
	// The downloader completes: it is upgraded, not listed twice.
	if err := downloader.Announce(d, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upgrade to complete", converge, func() bool {
		got := c.nodes[0].Lookup(d)
		return len(got) == 2 && got[0].Complete && got[1].Complete
	})
	if err := seed.Withdraw(d); err != nil {
		t.Fatal(err)
	}
	for _, tr := range c.without(seed, downloader) {
		waitFor(t, tr.LocalName()+" to drop the withdrawn seeder", converge, func() bool {
			return seesExactly(tr, d, downloader.LocalName())
		})
	}
}

func TestBadDigestIsRefusedAndChangesNothing(t *testing.T) {
	c := newCluster(t, 1, nil)
	tr := c.nodes[0]
	for _, d := range []string{"", "sha256:abc", "sha512:abc", "md5:" + strings.Repeat("a", 32), "sha256:" + strings.Repeat("G", 64)} {
		if err := tr.Announce(digest.Digest(d), true); err == nil {
			t.Errorf("Announce(%q) accepted", d)
		}
		if got := tr.Lookup(digest.Digest(d)); got != nil {
			t.Errorf("Lookup(%q) = %v", d, got)
		}
	}
	good := testDigest("a")
	if err := tr.Resync([]digest.Digest{good, "sha256:nothex"}); err == nil {
		t.Error("Resync with an invalid digest accepted")
	}
	if s := tr.Stats(); s.OwnDigests != 0 {
		t.Errorf("a refused Resync changed the inventory: %d digests", s.OwnDigests)
	}
}

// A valid sha512 digest (an egress node fetched such a blob) is not
// announceable, but it must not make Announce fail or Resync refuse the
// whole set: every sha256 digest beside it is still announced.
func TestOtherDigestAlgorithmsAreSkipped(t *testing.T) {
	c := newCluster(t, 1, nil)
	tr := c.nodes[0]
	sha512 := digest.Digest("sha512:" + strings.Repeat("a", 128))
	if err := tr.Announce(sha512, true); err != nil {
		t.Fatalf("Announce(sha512) = %v, want it skipped", err)
	}
	if err := tr.Withdraw(sha512); err != nil {
		t.Fatalf("Withdraw(sha512) = %v, want it skipped", err)
	}
	good := testDigest("a")
	if err := tr.Resync([]digest.Digest{sha512, good}); err != nil {
		t.Fatalf("Resync with a sha512 digest beside a sha256 one: %v", err)
	}
	if s := tr.Stats(); s.OwnDigests != 1 {
		t.Fatalf("own digests = %d, want the one sha256 digest", s.OwnDigests)
	}
	if got := tr.Lookup(sha512); got != nil {
		t.Errorf("Lookup(sha512) = %v", got)
	}
}

func TestLookupShufflesWithinClass(t *testing.T) {
	c := newCluster(t, 8, nil)
	d := testDigest("popular")
	for i, tr := range c.nodes[1:] {
		if err := tr.Announce(d, i < 5); err != nil {
			t.Fatal(err)
		}
	}
	reader := c.nodes[0]
	waitFor(t, "all seven seeders", converge, func() bool { return len(reader.Lookup(d)) == 7 })
	firsts := map[string]bool{}
	for range 60 {
		got := reader.Lookup(d)
		for i, s := range got {
			if s.Complete != (i < 5) {
				t.Fatalf("complete seeders must come first: %v", seederNames(got))
			}
		}
		firsts[got[0].Node] = true
	}
	// Five complete seeders, 60 draws: a fixed order would give one name.
	if len(firsts) < 2 {
		t.Fatalf("Lookup always returns the same first seeder %v: load does not spread", firsts)
	}
}

func TestJoiningNodeKnowsEverySeederAfterOneExchange(t *testing.T) {
	c := newCluster(t, 6, nil)
	var want []string
	for i, tr := range c.nodes {
		if err := tr.Announce(testDigest("shared"), true); err != nil {
			t.Fatal(err)
		}
		if err := tr.Announce(testDigest("own-"+tr.LocalName()), i%2 == 0); err != nil {
			t.Fatal(err)
		}
		want = append(want, tr.LocalName())
	}
	for _, tr := range c.nodes {
		waitFor(t, tr.LocalName()+" to know every seeder", converge, func() bool {
			return len(tr.Lookup(testDigest("shared"))) == len(c.nodes)-1
		})
	}
	late := c.add("late", nil)
	// No wait: Join returns after the push/pull that carries the full view.
	if !seesExactly(late, testDigest("shared"), want...) {
		t.Fatalf("right after Join the new node sees %v, want %v", seederNames(late.Lookup(testDigest("shared"))), want)
	}
	for _, tr := range c.nodes[:6] {
		if !seesExactly(late, testDigest("own-"+tr.LocalName()), tr.LocalName()) {
			t.Fatalf("right after Join the new node misses %s's own digest", tr.LocalName())
		}
	}
}

func TestFailedOrLeavingMemberLosesAllAnnouncements(t *testing.T) {
	c := newCluster(t, 6, nil)
	crashed, left := c.nodes[2], c.nodes[3]
	digests := []string{"a", "b", "c"}
	for _, tr := range []*Tracker{crashed, left} {
		for _, l := range digests {
			if err := tr.Announce(testDigest(l), true); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tr := range c.without(crashed, left) {
		waitFor(t, "announcements to spread", converge, func() bool {
			return seesExactly(tr, testDigest("c"), crashed.LocalName(), left.LocalName())
		})
	}
	crash(crashed)
	if err := left.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tr := range c.without(crashed, left) {
		waitFor(t, tr.LocalName()+" to drop the failed and the departed member", converge, func() bool {
			for _, l := range digests {
				if len(tr.Lookup(testDigest(l))) != 0 {
					return false
				}
			}
			return true
		})
		if s := tr.Stats(); s.Announcements != 0 {
			t.Fatalf("%s still indexes %d announcements of departed members", tr.LocalName(), s.Announcements)
		}
	}
}

func TestRestartedMemberComesBackWithItsNewInventory(t *testing.T) {
	c := newCluster(t, 5, nil)
	victim := c.nodes[3]
	name := victim.LocalName()
	if err := victim.Announce(testDigest("before"), true); err != nil {
		t.Fatal(err)
	}
	observer := c.nodes[1]
	waitFor(t, "the first announcement", converge, func() bool { return seesExactly(observer, testDigest("before"), name) })
	crash(victim)
	waitFor(t, "failure detection", converge, func() bool { return len(observer.Lookup(testDigest("before"))) == 0 })

	// Same name, new run: its inventory lost "before" and holds "after".
	back := c.restart(victim, nil)
	if err := back.Announce(testDigest("after"), true); err != nil {
		t.Fatal(err)
	}
	for _, tr := range c.without(back) {
		waitFor(t, tr.LocalName()+" to see the restarted member's new inventory", converge, func() bool {
			return seesExactly(tr, testDigest("after"), name)
		})
		if got := tr.Lookup(testDigest("before")); len(got) != 0 {
			t.Fatalf("%s resurrected the old run's announcement: %v", tr.LocalName(), seederNames(got))
		}
	}
}

func TestMembershipRolesAndAllowList(t *testing.T) {
	c := newCluster(t, 4, func(i int, cfg *Config) { cfg.Egress = i >= 2 })
	for _, tr := range c.nodes {
		waitFor(t, "full membership", converge, func() bool { return len(tr.Members()) == 4 })
	}
	ms := c.nodes[0].Members()
	for i, m := range ms {
		tr := c.nodes[i]
		want := Member{
			Name: tr.LocalName(), GossipAddr: c.ports[tr].addr, HTTPAddr: tr.cfg.PeerHTTPAddr,
			TorrentAddr: tr.cfg.TorrentAddr, Egress: i >= 2, Version: "test", State: "alive",
		}
		if m != want {
			t.Fatalf("Members()[%d] = %+v, want %+v", i, m, want)
		}
	}
	// Every member sees the same members with the same roles, so each picks
	// the same egress node for a digest (internal/egress ranks this list).
	type role struct {
		name, httpAddr string
		egress         bool
	}
	roles := func(ms []Member) []role {
		var out []role
		for _, m := range ms {
			out = append(out, role{m.Name, m.HTTPAddr, m.Egress})
		}
		return out
	}
	for _, tr := range c.nodes[1:] {
		if got, want := roles(tr.Members()), roles(ms); !slices.Equal(got, want) {
			t.Fatalf("%s sees %v, node-000 sees %v", tr.LocalName(), got, want)
		}
	}

	gone := c.nodes[3]
	goneIP := c.ports[gone].addr.Addr()
	for _, tr := range c.nodes {
		if !c.nodes[0].IsMember(c.ports[tr].addr.Addr()) {
			t.Fatalf("IsMember(%s) = false for a member", c.ports[tr].addr.Addr())
		}
	}
	for _, ip := range []string{"127.0.0.1", "10.0.0.1", "::1"} {
		if c.nodes[0].IsMember(netip.MustParseAddr(ip)) {
			t.Fatalf("IsMember(%s) = true for a stranger", ip)
		}
	}
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the departed member to leave the allow-list", converge, func() bool { return !c.nodes[0].IsMember(goneIP) })
}
