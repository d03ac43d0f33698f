package tracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures a Tracker: start from DefaultConfig. Zero values take
// the documented defaults; the defaults are memberlist's LAN profile unless
// said otherwise.
type Config struct {
	// Name is this member's unique name in the cluster; default the hostname.
	Name string
	// GossipAddr is the host:port memberlist listens on (UDP and TCP),
	// --gossip-addr; default ":7946" (every address). Unused when
	// Transport is set.
	GossipAddr string
	// AdvertiseAddr is the host:port other members reach this one at,
	// --advertise-addr; default: memberlist picks an address of this host.
	AdvertiseAddr string
	// Transport replaces the UDP/TCP transport built from GossipAddr; tests
	// pass an in-memory one.
	Transport memberlist.Transport

	// Keys enable encryption of all gossip (AES-GCM; 16, 24 or 32 bytes
	// each). Keys[0] encrypts, all of them decrypt; see LoadKeyFile for
	// rotation. Nil disables encryption and logs a warning.
	Keys [][]byte

	// PeerHTTPAddr is this node's peer HTTP endpoint (host:port). Required.
	PeerHTTPAddr string
	// TorrentAddr is this node's BitTorrent listener. Required.
	TorrentAddr netip.AddrPort
	// Egress marks the node as one that fetches from upstream registries.
	Egress bool
	// Version is the daemon's version, shown in Members; default "dev".
	Version string

	// GossipInterval is how often announcements are gossiped; default 200 ms.
	GossipInterval time.Duration
	// GossipNodes is how many random members each gossip round reaches;
	// default 4 (LAN profile: 3), which cuts propagation time in large
	// clusters at a small cost in bytes.
	GossipNodes int
	// RetransmitMult: each announcement is sent RetransmitMult*log10(N+1)
	// times (rounded up) by every member that learns it; default 6 (LAN
	// profile: 4). A member misses an announcement with probability about
	// e^-(that count): with 4, one in ~3,000 at 50 members (measured by
	// BenchmarkTrackerConvergence), and it then waits minutes for
	// anti-entropy; with 6, one in ~160,000. It costs bytes only while an
	// announcement spreads, none at rest.
	RetransmitMult int
	// ProbeInterval and ProbeTimeout drive failure detection; defaults 1 s
	// and 500 ms.
	ProbeInterval, ProbeTimeout time.Duration
	// SuspicionMult: a suspected member is declared failed after
	// SuspicionMult*log10(N+1)*ProbeInterval; default 4.
	SuspicionMult int
	// PushPullInterval is the anti-entropy period (memberlist scales it up
	// beyond 32 members); default 60 s (LAN profile: 30 s): each exchange
	// carries whole inventories, and the direct snapshots to new members
	// and the broadcasts do the fast path.
	PushPullInterval time.Duration
	// CatchUpAfter: this long after it joined, and again four times as
	// long after, a node exchanges full state with one random member
	// (default 5 s). Gossip reaches a member only once the others know
	// it, so announcements made in a new node's first moments can miss
	// it, and memberlist's own first push/pull may come a whole
	// PushPullInterval later, with a few relayed inventories only.
	CatchUpAfter time.Duration
	// DeadNodeReclaimTime is how long after a member failed another
	// address may take over its name (a pod restarted on a new IP);
	// default 15 s.
	DeadNodeReclaimTime time.Duration
	// RelayViews is how many other members' inventories ride along with
	// this node's own in each periodic push/pull; default 2.
	RelayViews int
	// JoinStateBytes bounds the full view sent to a joining node; default
	// 8 MiB (about 240,000 announcements; memberlist refuses 20 MiB).
	JoinStateBytes int
	// MaxMessageBytes bounds one announcement broadcast; default 1,024,
	// which fits a 1,400-byte gossip packet with encryption overhead.
	MaxMessageBytes int
	// MaxQueuedBroadcasts bounds the broadcast queue; the oldest are
	// pruned first (anti-entropy repairs what they carried); default 8,192.
	MaxQueuedBroadcasts int
	// MaxMembers bounds the origins the index keeps; default 16,384.
	MaxMembers int
	// MaxDigestsPerMember bounds one origin's entries (tombstones included);
	// default 1,000,000.
	MaxDigestsPerMember int
	// JoinAttempts and JoinBackoff bound Join's retries: attempt k waits
	// JoinBackoff*2^k, at most JoinMaxBackoff. Defaults 10, 500 ms, 15 s.
	JoinAttempts                int
	JoinBackoff, JoinMaxBackoff time.Duration
	// LeaveTimeout bounds the goodbye broadcast on Close; default 5 s.
	LeaveTimeout time.Duration
	// GossipToTheDeadTime is how long memberlist still gossips to a member
	// it declared failed; default 30 s (LAN profile). After that only
	// reconnecting (below) reaches it.
	GossipToTheDeadTime time.Duration
	// ReconnectInterval is how often members that failed are contacted
	// again (a few at random), so partitions heal; default 10 s.
	// ReconnectTimeout is how long after failing a member is still
	// contacted; default 24 h. Neither may be negative, and the timeout is
	// at least the interval.
	ReconnectInterval, ReconnectTimeout time.Duration
	// StuckAfter: when the gossip delegate's lock or memberlist's node
	// lock has not been free this long, Stuck reports the node wedged (and
	// the log says so once); default 30 s, far above any legitimate hold.
	StuckAfter time.Duration

	// Logger receives the tracker's logs; default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults, memberlist's LAN profile unless the
// field says otherwise; the caller sets PeerHTTPAddr and TorrentAddr (and
// Name, else the hostname).
func DefaultConfig() Config {
	return Config{
		GossipAddr: ":7946",
		Version:    "dev",

		GossipInterval:      200 * time.Millisecond,
		GossipNodes:         4,
		RetransmitMult:      6,
		ProbeInterval:       time.Second,
		ProbeTimeout:        500 * time.Millisecond,
		SuspicionMult:       4,
		PushPullInterval:    60 * time.Second,
		CatchUpAfter:        5 * time.Second,
		DeadNodeReclaimTime: 15 * time.Second,
		GossipToTheDeadTime: 30 * time.Second,

		RelayViews:          2,
		JoinStateBytes:      8 << 20,
		MaxMessageBytes:     1024,
		MaxQueuedBroadcasts: 8192,
		MaxMembers:          16384,
		MaxDigestsPerMember: 1_000_000,
		JoinAttempts:        10,
		JoinBackoff:         500 * time.Millisecond,
		JoinMaxBackoff:      15 * time.Second,
		LeaveTimeout:        5 * time.Second,
		// A healed network merges within about one interval, well inside
		// a minute, while a member that is really gone costs one failed
		// dial per interval (serf: 30 s).
		ReconnectInterval: 10 * time.Second,
		// As serf: long enough for a zone or a link that is down
		// overnight to merge back by itself; after that a lost member is
		// forgotten (it can still join again).
		ReconnectTimeout: 24 * time.Hour,
		StuckAfter:       30 * time.Second,
		Logger:           slog.Default(),
	}
}

// Validate reports a Config New cannot run with. Zero values stand for
// the defaults and are checked as those; an empty Name is the hostname.
func (c Config) Validate() error {
	c.fillDefaults()
	if len(c.Name) > maxNameLen {
		return fmt.Errorf("tracker: Name %q longer than %d bytes", c.Name, maxNameLen)
	}
	if c.PeerHTTPAddr == "" || !c.TorrentAddr.IsValid() {
		return errors.New("tracker: PeerHTTPAddr and TorrentAddr are required")
	}
	for i, k := range c.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return fmt.Errorf("tracker: cluster key %d: %w", i+1, err)
		}
	}
	if err := c.validateCounts(); err != nil {
		return err
	}
	if c.ReconnectTimeout < c.ReconnectInterval {
		return fmt.Errorf("tracker: ReconnectTimeout %s is below ReconnectInterval %s: a lost member would be forgotten before it is contacted", c.ReconnectTimeout, c.ReconnectInterval)
	}
	if c.JoinStateBytes > 16<<20 {
		return errors.New("tracker: JoinStateBytes above 16 MiB would exceed memberlist's push/pull limit")
	}
	if c.MaxMessageBytes < 128 || c.MaxMessageBytes > 1200 {
		return errors.New("tracker: MaxMessageBytes must be within 128..1200 to fit a gossip packet")
	}
	return nil
}

// validateCounts refuses negative counts and durations (zero values were
// filled in with the defaults).
func (c *Config) validateCounts() error {
	if c.ReconnectInterval < 0 || c.ReconnectTimeout < 0 {
		return errors.New("tracker: ReconnectInterval and ReconnectTimeout must not be negative")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"GossipInterval", c.GossipInterval}, {"ProbeInterval", c.ProbeInterval}, {"ProbeTimeout", c.ProbeTimeout},
		{"PushPullInterval", c.PushPullInterval}, {"DeadNodeReclaimTime", c.DeadNodeReclaimTime},
		{"CatchUpAfter", c.CatchUpAfter},
		{"GossipToTheDeadTime", c.GossipToTheDeadTime}, {"JoinBackoff", c.JoinBackoff},
		{"JoinMaxBackoff", c.JoinMaxBackoff}, {"LeaveTimeout", c.LeaveTimeout}, {"StuckAfter", c.StuckAfter},
	} {
		if d.v < 0 {
			return fmt.Errorf("tracker: %s %s must not be negative", d.name, d.v)
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"GossipNodes", c.GossipNodes}, {"RetransmitMult", c.RetransmitMult}, {"SuspicionMult", c.SuspicionMult},
		{"RelayViews", c.RelayViews}, {"JoinStateBytes", c.JoinStateBytes}, {"MaxQueuedBroadcasts", c.MaxQueuedBroadcasts},
		{"MaxMembers", c.MaxMembers}, {"MaxDigestsPerMember", c.MaxDigestsPerMember}, {"JoinAttempts", c.JoinAttempts},
	} {
		if n.v < 0 {
			return fmt.Errorf("tracker: %s %d must not be negative", n.name, n.v)
		}
	}
	return nil
}

// setDefaults fills in the defaults (the hostname for Name) and validates
// the result.
func (c *Config) setDefaults() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("tracker: no Name and no hostname: %w", err)
		}
		if len(h) > maxNameLen {
			return fmt.Errorf("tracker: hostname %q, the default Name, is longer than %d bytes", h, maxNameLen)
		}
		c.Name = h
	}
	c.fillDefaults()
	return nil
}

// fillDefaults replaces zero values with DefaultConfig's.
func (c *Config) fillDefaults() {
	d := DefaultConfig()
	str := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	num := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	str(&c.GossipAddr, d.GossipAddr)
	str(&c.Version, d.Version)
	for _, f := range []struct{ v, d *time.Duration }{
		{&c.GossipInterval, &d.GossipInterval}, {&c.ProbeInterval, &d.ProbeInterval}, {&c.ProbeTimeout, &d.ProbeTimeout},
		{&c.PushPullInterval, &d.PushPullInterval}, {&c.DeadNodeReclaimTime, &d.DeadNodeReclaimTime},
		{&c.CatchUpAfter, &d.CatchUpAfter},
		{&c.GossipToTheDeadTime, &d.GossipToTheDeadTime}, {&c.JoinBackoff, &d.JoinBackoff},
		{&c.JoinMaxBackoff, &d.JoinMaxBackoff}, {&c.LeaveTimeout, &d.LeaveTimeout}, {&c.StuckAfter, &d.StuckAfter},
		{&c.ReconnectInterval, &d.ReconnectInterval}, {&c.ReconnectTimeout, &d.ReconnectTimeout},
	} {
		dur(f.v, *f.d)
	}
	for _, f := range []struct{ v, d *int }{
		{&c.GossipNodes, &d.GossipNodes}, {&c.RetransmitMult, &d.RetransmitMult}, {&c.SuspicionMult, &d.SuspicionMult},
		{&c.RelayViews, &d.RelayViews}, {&c.JoinStateBytes, &d.JoinStateBytes}, {&c.MaxMessageBytes, &d.MaxMessageBytes},
		{&c.MaxQueuedBroadcasts, &d.MaxQueuedBroadcasts}, {&c.MaxMembers, &d.MaxMembers},
		{&c.MaxDigestsPerMember, &d.MaxDigestsPerMember}, {&c.JoinAttempts, &d.JoinAttempts},
	} {
		num(f.v, *f.d)
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
}

// memberlistConfig tunes memberlist for a LAN and plugs the tracker in.
func (c *Config) memberlistConfig(d *delegate) (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.Name
	mc.GossipInterval = c.GossipInterval
	mc.GossipNodes = c.GossipNodes
	mc.RetransmitMult = c.RetransmitMult
	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.SuspicionMult = c.SuspicionMult
	mc.PushPullInterval = c.PushPullInterval
	mc.DeadNodeReclaimTime = c.DeadNodeReclaimTime
	mc.GossipToTheDeadTime = c.GossipToTheDeadTime
	// Announcements are mostly random digest bytes: compression costs CPU
	// and gains nothing.
	mc.EnableCompression = false
	mc.Delegate = d
	mc.Events = d
	// memberlist logs through the standard logger; route it to slog.
	mc.Logger = log.New(slogWriter{c.Logger.With("component", "memberlist")}, "", 0)
	if len(c.Keys) > 0 {
		kr, err := memberlist.NewKeyring(c.Keys[1:], c.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("tracker: keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	if c.Transport != nil {
		mc.Transport = c.Transport
		return mc, nil
	}
	host, port, err := splitHostPort(c.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("tracker: gossip address: %w", err)
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if c.AdvertiseAddr != "" {
		host, port, err := splitHostPort(c.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("tracker: advertise address: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = host, port
	}
	return mc, nil
}

func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", ps, err)
	}
	return host, int(port), nil
}

// slogWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records at the matching level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := string(p)
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if len(line) >= len(prefix) && line[:len(prefix)] == prefix {
			level = l
		}
	}
	for len(line) > 0 && line[len(line)-1] == '\n' {
		line = line[:len(line)-1]
	}
	w.l.Log(context.Background(), level, line)
	return len(p), nil
}

var _ io.Writer = slogWriter{}
