package tracker

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
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

// Reconnect bounds that cannot work are refused before anything starts.
func TestReconnectBoundsAreValidated(t *testing.T) {
	cases := []struct {
		name               string
		interval, timeout  time.Duration
		wantErr            string
		wantInt, wantUntil time.Duration
	}{
		{name: "defaults", wantInt: DefaultConfig().ReconnectInterval, wantUntil: DefaultConfig().ReconnectTimeout},
		{name: "set", interval: time.Minute, timeout: 2 * time.Hour, wantInt: time.Minute, wantUntil: 2 * time.Hour},
		{name: "timeout equal to interval", interval: time.Minute, timeout: time.Minute, wantInt: time.Minute, wantUntil: time.Minute},
		{name: "negative interval", interval: -time.Second, wantErr: "negative"},
		{name: "negative timeout", timeout: -time.Second, wantErr: "negative"},
		{name: "timeout below interval", interval: time.Minute, timeout: time.Second, wantErr: "below ReconnectInterval"},
		{name: "timeout below the default interval", timeout: time.Second, wantErr: "below ReconnectInterval"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{Name: "n", PeerHTTPAddr: "127.0.0.1:5000", TorrentAddr: netip.MustParseAddrPort("127.0.0.1:6881"),
				ReconnectInterval: c.interval, ReconnectTimeout: c.timeout}
			err := cfg.setDefaults()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ReconnectInterval != c.wantInt || cfg.ReconnectTimeout != c.wantUntil {
				t.Fatalf("interval, timeout = %s, %s; want %s, %s", cfg.ReconnectInterval, cfg.ReconnectTimeout, c.wantInt, c.wantUntil)
			}
		})
	}
}

// A lost member is contacted until ReconnectTimeout has passed since it
// failed, then forgotten; a round contacts at most reconnectBatch.
func TestLostMembersAreContactedUntilTheTimeout(t *testing.T) {
	tr := &Tracker{cfg: Config{ReconnectTimeout: time.Hour, MaxMembers: 100}, lost: make(map[string]lostMember)}
	failed := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	for i := range 6 {
		n := &memberlist.Node{Name: fmt.Sprintf("m%d", i), Addr: net.IPv4(198, 18, 0, byte(i+1)), Port: 7946, State: memberlist.StateDead}
		tr.noteLost(n, failed.Add(time.Duration(i)*time.Minute))
	}
	tr.noteLost(&memberlist.Node{Name: "left", Addr: net.IPv4(198, 18, 0, 99), Port: 7946, State: memberlist.StateLeft}, failed)
	if got := tr.lostToContact(failed.Add(time.Minute)); len(got) != reconnectBatch {
		t.Fatalf("a round contacts %v, want %d members", got, reconnectBatch)
	}
	// 62 min after the first failure: m0 and m1 (failed at +0, +1 min) are
	// past the hour, m2..m5 still in it.
	got := tr.lostToContact(failed.Add(62 * time.Minute))
	slices.Sort(got)
	want := []string{"198.18.0.3:7946", "198.18.0.4:7946", "198.18.0.5:7946", "198.18.0.6:7946"}
	if !slices.Equal(got, want) {
		t.Fatalf("contacted %v, want %v", got, want)
	}
	if len(tr.lost) != 4 {
		t.Fatalf("%d lost members kept, want the 4 within the timeout", len(tr.lost))
	}
	if got := tr.lostToContact(failed.Add(2 * time.Hour)); len(got) != 0 || len(tr.lost) != 0 {
		t.Fatalf("after the timeout contacted %v and kept %d, want none", got, len(tr.lost))
	}
}

// A node that missed an announcement in its first moments (every gossip
// packet to it lost) learns it from its catch-up exchange, long before
// memberlist's first periodic push/pull.
func TestNewNodeCatchesUpOnAnAnnouncementItMissed(t *testing.T) {
	tune := func(cfg *Config) {
		cfg.PushPullInterval = 10 * time.Minute
		cfg.CatchUpAfter = 2 * time.Second
	}
	c := newCluster(t, 2, func(_ int, cfg *Config) { tune(cfg) })
	a, b := c.nodes[0], c.nodes[1]
	late := c.add("node-late", tune)
	c.net.deafen(c.ports[late])
	for _, tr := range c.nodes {
		waitFor(t, tr.LocalName()+" to see all 3 members", 10*time.Second, func() bool { return tr.NumMembers() == 3 })
	}
	d := testDigest("announced-while-deaf")
	if err := a.Announce(d, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other old member to see the seeder", 10*time.Second, func() bool { return seesExactly(b, d, a.LocalName()) })
	time.Sleep(500 * time.Millisecond) // every member has sent it on its last time
	if len(late.Lookup(d)) != 0 {
		t.Fatal("the gossip reached the deaf member: the test does not test the catch-up")
	}
	c.net.hear(c.ports[late])
	waitFor(t, "the late member to catch up", 10*time.Second, func() bool { return seesExactly(late, d, a.LocalName()) })
}
