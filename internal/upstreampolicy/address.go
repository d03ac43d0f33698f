package upstreampolicy

import (
	"fmt"
	"net/netip"
)

// metadata are cloud instance metadata and credential endpoints: never
// dialed, whatever the operator named.
var metadata = prefixes(
	"169.254.169.254/32", // AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
	"169.254.170.2/32",   // AWS ECS task credentials
	"169.254.170.23/32",  // AWS EKS pod identity
	"fd00:ec2::254/128",  // AWS IMDS over IPv6
	"fd00:ec2::23/128",   // AWS EKS pod identity over IPv6
	"100.100.100.200/32", // Alibaba Cloud
	"192.0.0.192/32",     // Oracle Cloud (classic)
)

// never are addresses no registry has: this host under another name
// (0.0.0.0 and :: reach local listeners), multicast, broadcast.
var never = prefixes(
	"0.0.0.0/8", "::/128",
	"224.0.0.0/4", "255.255.255.255/32", "ff00::/8",
)

// internal are not on the public internet: dialed only for a registry
// the operator named explicitly.
var internal = prefixes(
	"127.0.0.0/8", "::1/128", // loopback
	"169.254.0.0/16", "fe80::/10", // link-local
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", // RFC 1918
	"fc00::/7",                                                           // unique local
	"fec0::/10",                                                          // site-local (deprecated)
	"100.64.0.0/10",                                                      // carrier-grade NAT
	"192.0.0.0/24",                                                       // IETF protocol assignments
	"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", // documentation
	"198.18.0.0/15",  // benchmarking
	"240.0.0.0/4",    // reserved
	"100::/64",       // discard
	"64:ff9b:1::/48", // local-use NAT64
	"2001:10::/28",   // ORCHID
	"2001:20::/28",   // ORCHIDv2
	"2001:2::/48",    // benchmarking
	"5f00::/16",      // SRv6 SIDs
	"3fff::/20",      // documentation
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func in(list []netip.Prefix, a netip.Addr) (netip.Prefix, bool) {
	for _, p := range list {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// checkAddr says whether a may be dialed for an upstream; explicit is true
// when the host being dialed was named by the operator. IPv4 carried in
// IPv6 (mapped, NAT64 64:ff9b::/96, 6to4 2002::/16) is judged as the IPv4
// address too.
func checkAddr(a netip.Addr, explicit bool) error {
	if !a.IsValid() {
		return fmt.Errorf("%w: no address", errAddressRefused)
	}
	a = a.Unmap().WithZone("")
	if err := checkOne(a, explicit); err != nil {
		return err
	}
	if v4, ok := embeddedIPv4(a); ok {
		return checkOne(v4, explicit)
	}
	return nil
}

func checkOne(a netip.Addr, explicit bool) error {
	if p, ok := in(metadata, a); ok {
		return fmt.Errorf("%w: %s is a cloud metadata address (%s)", errAddressRefused, a, p)
	}
	if p, ok := in(never, a); ok {
		return fmt.Errorf("%w: %s is not a unicast address of another host (%s)", errAddressRefused, a, p)
	}
	if p, ok := in(internal, a); ok && !explicit {
		return fmt.Errorf("%w: %s is loopback, link-local or private (%s) and the registry was not named explicitly", errAddressRefused, a, p)
	}
	return nil
}

var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

func embeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case nat64.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixTo4.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}
