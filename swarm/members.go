package swarm

import (
	"net"
	"net/netip"

	"github.com/anacrolix/torrent/iplist"
)

// Members says whether an address belongs to a current cluster member (the
// tracker knows). Swarm connections from anyone else are refused;
// peer-HTTP requests are admitted by Config.Gate.
type Members interface {
	IsMember(netip.Addr) bool
}

// memberAllowList turns Members into the torrent client's IP blocklist:
// every address that is not a member is reported as blocked, so the client
// neither accepts nor dials it.
type memberAllowList struct {
	members Members
}

func (m memberAllowList) Lookup(ip net.IP) (iplist.Range, bool) {
	addr, ok := netip.AddrFromSlice(ip)
	if ok && m.members.IsMember(addr.Unmap()) {
		return iplist.Range{}, false
	}
	return iplist.Range{First: ip, Last: ip, Description: "not a cluster member"}, true
}

// NumRanges is only used by the library for status output.
func (memberAllowList) NumRanges() int { return 1 }
