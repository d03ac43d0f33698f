package upstreampolicy

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzPolicy feeds an --allow-registry entry and a request's ns: parsing
// never panics, a parsed entry allows its own registry, and an allowed ns
// is never a metadata address.
func FuzzPolicy(f *testing.F) {
	for _, s := range [][2]string{
		{"docker.io", "index.docker.io"}, {"*", "169.254.169.254"}, {"[::1]:5000", "[::1]:5000"},
		{"reg.example:5000", "REG.example:5000"}, {"10.0.0.1:443", "10.0.0.1"}, {"x:0", "x:"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, entry, ns string) {
		p, err := New(Config{Allow: []string{entry}, PlainHTTP: []string{entry}, Logger: quiet()})
		if err != nil {
			return
		}
		if entry != Wildcard {
			if err := p.Allows(entry); err != nil {
				t.Fatalf("entry %q does not allow itself: %v", entry, err)
			}
			if !p.PlainHTTP(entry) {
				t.Fatalf("plain entry %q is not plain", entry)
			}
		}
		if p.Allows(ns) == nil {
			host, _, err := splitHostPort(ns)
			if err != nil {
				t.Fatalf("allowed an ns that does not parse: %q", ns)
			}
			if a, err := netip.ParseAddr(host); err == nil {
				if err := checkAddr(a, true); err != nil && !errors.Is(err, errAddressRefused) {
					t.Fatal(err)
				}
			}
		}
	})
}

// FuzzCheckAddr: any 16 bytes, as IPv6 and as the IPv4 in them; metadata
// is refused however it is spelled.
func FuzzCheckAddr(f *testing.F) {
	f.Add([]byte(netip.MustParseAddr("::ffff:169.254.169.254").AsSlice()))
	f.Add([]byte(netip.MustParseAddr("64:ff9b::a9fe:a9fe").AsSlice()))
	f.Add([]byte(netip.MustParseAddr("2606:4700::1111").AsSlice()))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		err := checkAddr(a, true)
		if _, meta := in(metadata, a.Unmap()); meta && err == nil {
			t.Fatalf("metadata address %s allowed", a)
		}
	})
}
