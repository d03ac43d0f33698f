package registry

import (
	"net/netip"
	"testing"
)

// FuzzParseMirrorAllow feeds one --mirror-allow entry and a client
// address: a rejected entry yields nothing, an accepted one is a masked
// prefix that admits the addresses it contains and, of the rest, only
// loopback and the host's own. The seed corpus is in
// testdata/fuzz/FuzzParseMirrorAllow.
func FuzzParseMirrorAllow(f *testing.F) {
	for _, s := range [][2]string{
		{"10.0.0.0/8", "10.1.2.3"}, {"10.1.2.3/8", "11.0.0.1"}, {"fd00::/8", "fd12::1"},
		{"0.0.0.0/0", "::ffff:192.0.2.1"}, {"10.0.0.1", "10.0.0.1"}, {"fe80::1%eth0/64", "fe80::2"},
	} {
		f.Add(s[0], s[1])
	}
	host := netip.MustParseAddr("192.0.2.10")
	f.Fuzz(func(t *testing.T, entry, client string) {
		prefixes, err := ParseMirrorAllow([]string{entry})
		if err != nil {
			if prefixes != nil {
				t.Fatalf("%q rejected but yielded %v", entry, prefixes)
			}
			prefixes = nil
		} else if len(prefixes) != 1 || prefixes[0] != prefixes[0].Masked() {
			t.Fatalf("%q parsed to %v", entry, prefixes)
		}
		a, err := netip.ParseAddr(client)
		if err != nil {
			return
		}
		c := NewClients(ClientsConfig{Allow: prefixes, HostAddrs: func() ([]netip.Addr, error) { return []netip.Addr{host}, nil }})
		u := a.Unmap().WithZone("")
		want := u.IsLoopback() || u == host || (len(prefixes) == 1 && prefixes[0].Contains(u))
		if got := c.Admits(a); got != want {
			t.Fatalf("entry %q, client %s: Admits = %v, want %v", entry, a, got, want)
		}
	})
}
