package registry

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ClientsConfig says who may use the mirror (/v2/): start from
// DefaultClientsConfig and add the operator's networks.
type ClientsConfig struct {
	// Allow are networks admitted besides this host (--mirror-allow).
	Allow []netip.Prefix
	// HostAddrs lists this host's own addresses; default: the addresses
	// of every interface (net.InterfaceAddrs).
	HostAddrs func() ([]netip.Addr, error)
	// AddrsMaxAge is how long the host's address list is trusted; default
	// 2 s.
	AddrsMaxAge time.Duration
	// AddrsMissRefresh: a client address not in the list re-reads it when
	// the list is older than this, so an address the host just gained is
	// admitted at once, and a flood of strangers costs at most one read
	// per interval. Default 250 ms; at most AddrsMaxAge.
	AddrsMissRefresh time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// DefaultClientsConfig returns the defaults: this host's interface
// addresses, and no other network.
func DefaultClientsConfig() ClientsConfig {
	return ClientsConfig{
		HostAddrs:        interfaceAddrs,
		AddrsMaxAge:      2 * time.Second,
		AddrsMissRefresh: 250 * time.Millisecond,
		Now:              time.Now,
	}
}

// Validate reports a ClientsConfig that cannot work: an Allow entry that
// is no network (ParseMirrorAllow makes only valid ones), a negative
// refresh interval, or a miss refresh longer than the list is trusted
// (the miss would never read the list afresh). Zero values take the
// defaults.
func (c ClientsConfig) Validate() error {
	for _, p := range c.Allow {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return fmt.Errorf("registry: mirror client network %v is not a CIDR without a zone", p)
		}
	}
	if c.AddrsMaxAge < 0 || c.AddrsMissRefresh < 0 {
		return fmt.Errorf("registry: AddrsMaxAge %v and AddrsMissRefresh %v must not be negative", c.AddrsMaxAge, c.AddrsMissRefresh)
	}
	if c.AddrsMaxAge > 0 && c.AddrsMissRefresh > c.AddrsMaxAge {
		return fmt.Errorf("registry: AddrsMissRefresh %v is longer than AddrsMaxAge %v", c.AddrsMissRefresh, c.AddrsMaxAge)
	}
	return nil
}

// Clients admits this host (loopback and its own addresses) and the
// networks the operator named. The address list is read at most once per
// AddrsMissRefresh, never per request.
type Clients struct {
	cfg     ClientsConfig
	mu      sync.Mutex // one reader of the interfaces at a time
	current atomic.Pointer[hostAddrs]
}

type hostAddrs struct {
	set map[netip.Addr]bool
	at  time.Time
	err error
}

// ParseMirrorAllow reads --mirror-allow entries: CIDRs such as
// 10.0.0.0/8 or fd00::/8.
func ParseMirrorAllow(entries []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(entries))
	for _, e := range entries {
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("--mirror-allow %q: want a CIDR such as 10.0.0.0/8 or 192.0.2.7/32: %w", e, err)
		}
		if p.Addr().Zone() != "" {
			return nil, fmt.Errorf("--mirror-allow %q: a zone is not allowed", e)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// NewClients returns the policy; it reads the host's addresses on first
// use. Zero values take the defaults.
func NewClients(cfg ClientsConfig) *Clients {
	d := DefaultClientsConfig()
	if cfg.HostAddrs == nil {
		cfg.HostAddrs = d.HostAddrs
	}
	if cfg.AddrsMaxAge <= 0 {
		cfg.AddrsMaxAge = d.AddrsMaxAge
	}
	if cfg.AddrsMissRefresh <= 0 {
		cfg.AddrsMissRefresh = d.AddrsMissRefresh
	}
	if cfg.Now == nil {
		cfg.Now = d.Now
	}
	return &Clients{cfg: cfg}
}

// Admits says whether a request from a may use the mirror.
func (c *Clients) Admits(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return false
	}
	if a.IsLoopback() {
		return true
	}
	for _, p := range c.cfg.Allow {
		if p.Contains(a) {
			return true
		}
	}
	h := c.addrs(c.cfg.AddrsMaxAge)
	if h.set[a] {
		return true
	}
	return c.addrs(c.cfg.AddrsMissRefresh).set[a]
}

// addrs returns the host's addresses read within maxAge.
func (c *Clients) addrs(maxAge time.Duration) *hostAddrs {
	if h := c.current.Load(); h != nil && c.cfg.Now().Sub(h.at) < maxAge {
		return h
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if h := c.current.Load(); h != nil && c.cfg.Now().Sub(h.at) < maxAge {
		return h // another request read them meanwhile
	}
	list, err := c.cfg.HostAddrs()
	h := &hostAddrs{set: map[netip.Addr]bool{}, at: c.cfg.Now(), err: err}
	for _, a := range list {
		h.set[a.Unmap().WithZone("")] = true
	}
	if err != nil {
		if old := c.current.Load(); old != nil {
			h.set = old.set // keep the last good list rather than refuse the host
		}
	}
	c.current.Store(h)
	return h
}

func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}
