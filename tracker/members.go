package tracker

import (
	"net/netip"
	"slices"

	"github.com/hashicorp/memberlist"
)

// Member is one node of the cluster as memberlist currently sees it.
type Member struct {
	Name        string
	GossipAddr  netip.AddrPort
	HTTPAddr    string
	TorrentAddr netip.AddrPort
	Egress      bool
	Version     string
	State       string // "alive" or "suspect"
}

// Members lists the live members (alive or suspect), this node included,
// sorted by name. A member whose metadata cannot be read is listed with
// its name and gossip address only.
func (t *Tracker) Members() []Member {
	nodes := t.ml.Members()
	out := make([]Member, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, memberOf(n))
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

func memberOf(n *memberlist.Node) Member {
	m := Member{Name: n.Name, State: stateName(n.State)}
	if ip, ok := netip.AddrFromSlice(n.Addr); ok {
		m.GossipAddr = netip.AddrPortFrom(ip.Unmap(), n.Port)
	}
	if meta, err := decodeMeta(n.Meta); err == nil {
		m.HTTPAddr, m.TorrentAddr, m.Egress, m.Version = meta.HTTPAddr, meta.TorrentAddr, meta.Egress, meta.Version
	}
	return m
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// memberAddrs counts, per IP, the live members using it (several members
// may share a host in tests and on multi-daemon hosts).
type memberAddrs struct {
	byName map[string][]netip.Addr
	count  map[netip.Addr]int
}

func (a *memberAddrs) set(name string, ips []netip.Addr) {
	a.remove(name)
	a.byName[name] = ips
	for _, ip := range ips {
		a.count[ip]++
	}
}

func (a *memberAddrs) remove(name string) {
	for _, ip := range a.byName[name] {
		if a.count[ip]--; a.count[ip] <= 0 {
			delete(a.count, ip)
		}
	}
	delete(a.byName, name)
}

// addrsOf lists the distinct IPs a member uses for gossip and torrents:
// the torrent allow-list, and in a keyless cluster the peer endpoints'.
// The peer HTTP address is not counted: in a keyed cluster a member is
// whoever holds the key (internal/peerauth), and an address a member
// declares grants nothing beyond where its own connections come from.
func addrsOf(n *memberlist.Node, meta nodeMeta, metaOK bool) []netip.Addr {
	var ips []netip.Addr
	if ip, ok := netip.AddrFromSlice(n.Addr); ok {
		ips = append(ips, ip.Unmap())
	}
	if metaOK && meta.TorrentAddr.IsValid() {
		ips = append(ips, meta.TorrentAddr.Addr().Unmap())
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return slices.Compact(ips)
}
