package tracker

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// cluster is a set of trackers on one in-process network.
type cluster struct {
	tb    testing.TB
	net   *memNet
	nodes []*Tracker
	ports map[*Tracker]*memTransport
}

// testConfig is tuned for fast failure detection on an in-process network.
func testConfig(name string, tr *memTransport) Config {
	ip := tr.addr.Addr()
	level := slog.LevelError
	if os.Getenv("TRACKER_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return Config{
		Name:             name,
		Transport:        tr,
		PeerHTTPAddr:     netip.AddrPortFrom(ip, 5001).String(),
		TorrentAddr:      netip.AddrPortFrom(ip, 6881),
		Version:          "test",
		GossipInterval:   50 * time.Millisecond,
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     100 * time.Millisecond,
		SuspicionMult:    2,
		PushPullInterval: 2 * time.Second,
		JoinAttempts:     2,
		JoinBackoff:      50 * time.Millisecond,
		LeaveTimeout:     time.Second,
		Logger:           slog.New(slog.NewTextHandler(logWriter(level), &slog.HandlerOptions{Level: level})),
	}
}

func logWriter(level slog.Level) io.Writer {
	if level == slog.LevelDebug {
		return os.Stderr
	}
	return io.Discard
}

func newCluster(tb testing.TB, n int, mutate func(i int, c *Config)) *cluster {
	tb.Helper()
	c := &cluster{tb: tb, net: newMemNet(), ports: make(map[*Tracker]*memTransport)}
	tb.Cleanup(c.close)
	for i := range n {
		c.add(fmt.Sprintf("node-%03d", i), func(cfg *Config) {
			if mutate != nil {
				mutate(i, cfg)
			}
		})
	}
	return c
}

// add starts a tracker and joins it through the first node.
func (c *cluster) add(name string, mutate func(*Config)) *Tracker {
	c.tb.Helper()
	tr, err := c.start(name, mutate)
	if err != nil {
		c.tb.Fatal(err)
	}
	return tr
}

func (c *cluster) start(name string, mutate func(*Config)) (*Tracker, error) {
	return c.startOn(c.net.transport(), name, mutate)
}

// restart runs a new tracker under a stopped one's name and address, as a
// restarted daemon would.
func (c *cluster) restart(old *Tracker, mutate func(*Config)) *Tracker {
	c.tb.Helper()
	tr, err := c.startOn(c.net.transportAt(c.ports[old].addr), old.LocalName(), mutate)
	if err != nil {
		c.tb.Fatal(err)
	}
	return tr
}

func (c *cluster) startOn(port *memTransport, name string, mutate func(*Config)) (*Tracker, error) {
	cfg := testConfig(name, port)
	if mutate != nil {
		mutate(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if len(c.nodes) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := tr.Join(ctx, []string{c.ports[c.nodes[0]].String()}); err != nil {
			crash(tr)
			return nil, err
		}
	}
	c.nodes = append(c.nodes, tr)
	c.ports[tr] = port
	return tr, nil
}

func (c *cluster) close() {
	for _, tr := range c.nodes {
		crash(tr)
	}
}

// crash stops a tracker without saying goodbye, as a killed daemon would.
func crash(tr *Tracker) {
	tr.closing.Do(func() {
		_ = tr.ml.Shutdown()
		close(tr.stop)
		tr.wg.Wait()
	})
}

// without returns the live nodes other than the given ones.
func (c *cluster) without(skip ...*Tracker) []*Tracker {
	var out []*Tracker
next:
	for _, tr := range c.nodes {
		for _, s := range skip {
			if tr == s {
				continue next
			}
		}
		select {
		case <-tr.stop:
		default:
			out = append(out, tr)
		}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes. The deadline
// is a bound on a hang, not a performance assertion.
func waitFor(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testDigest is a distinct valid sha256 digest per label.
func testDigest(label string) digest.Digest {
	sum := sha256.Sum256([]byte(label))
	return digest.NewDigestFromBytes(digest.SHA256, sum[:])
}

func seederNames(ss []Seeder) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		state := "partial"
		if s.Complete {
			state = "complete"
		}
		out = append(out, s.Node+"/"+state)
	}
	return out
}

// seesExactly reports whether tr's lookup of d names exactly want (any order).
func seesExactly(tr *Tracker, d digest.Digest, want ...string) bool {
	got := tr.Lookup(d)
	if len(got) != len(want) {
		return false
	}
	set := make(map[string]bool, len(want))
	for _, w := range want {
		set[w] = true
	}
	for _, s := range got {
		if !set[s.Node] {
			return false
		}
	}
	return true
}
