package testenv

import "testing"

// AddAddr gives end a (true) or b (false) of the link one more address
// (CIDR), so several nodes of one namespace are reachable from the other
// through the one veth: e.g. seeders on the test's end of a link to a
// namespaced node. The address goes with the link.
func (l *Link) AddAddr(t testing.TB, a bool, cidr string) {
	t.Helper()
	ns, name := l.B, l.BName
	if a {
		ns, name = l.A, l.AName
	}
	ip := runIP
	if ns != nil {
		ip = ns.IP
	}
	if _, err := ip("addr", "add", cidr, "dev", name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}
