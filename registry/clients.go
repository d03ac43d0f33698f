package registry

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for ClientsConfig.
const (
	// DefaultAddrsMaxAge is how long the host's address list is trusted.
	DefaultAddrsMaxAge = 2 * time.Second
	// DefaultAddrsMissRefresh: a client address not in the list re-reads
	// it when the list is older than this, so an address the host just
	// gained is admitted at once, and a flood of strangers costs at most
	// one read per interval.
	DefaultAddrsMissRefresh = 250 * time.Millisecond
)

// ClientsConfig says who may use the mirror (/v2/).
type ClientsConfig struct {
	// Allow are networks admitted besides this host (--mirror-allow).
	Allow []netip.Prefix
	// HostAddrs lists this host's own addresses; default: the addresses
	// of every interface (net.InterfaceAddrs).
	HostAddrs func() ([]netip.Addr, error)
	// AddrsMaxAge and AddrsMissRefresh bound how stale the list may be;
	// defaults DefaultAddrsMaxAge and DefaultAddrsMissRefresh.
	AddrsMaxAge, AddrsMissRefresh time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
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

// NewClients returns the policy; it reads the host's addresses on first use.
func NewClients(cfg ClientsConfig) *Clients {
	if cfg.HostAddrs == nil {
		cfg.HostAddrs = interfaceAddrs
	}
	if cfg.AddrsMaxAge <= 0 {
		cfg.AddrsMaxAge = DefaultAddrsMaxAge
	}
	if cfg.AddrsMissRefresh <= 0 {
		cfg.AddrsMissRefresh = DefaultAddrsMissRefresh
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
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
