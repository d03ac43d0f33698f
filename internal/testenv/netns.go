package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ipTimeout bounds one `ip` command.
const ipTimeout = 30 * time.Second

// Netns is a network namespace the test made, deleted in t.Cleanup (with
// every interface in it). Tests that cut or shape a node's network (veth
// down, tc) run the node's processes inside one.
type Netns struct {
	Name string
}

// NewNetns creates a namespace named "dr<pid>-<name>" with lo up. It skips
// (or fails when DREGISTRY_E2E=required) without root or iproute2.
func NewNetns(t testing.TB, name string) *Netns {
	t.Helper()
	RequireRoot(t)
	RequireBinary(t, "ip")
	n := &Netns{Name: fmt.Sprintf("dr%d-%s", os.Getpid(), name)}
	if _, err := runIP("netns", "add", n.Name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if _, err := runIP("netns", "del", n.Name); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	if _, err := n.IP("link", "set", "lo", "up"); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return n
}

// IP runs `ip args...` inside the namespace.
func (n *Netns) IP(args ...string) (string, error) {
	return runIP(append([]string{"-n", n.Name}, args...)...)
}

// Command returns path with args run inside the namespace, as a Process
// takes it: ("ip", ["netns", "exec", name, path, args...]).
func (n *Netns) Command(path string, args []string) (string, []string) {
	return "ip", append([]string{"netns", "exec", n.Name, path}, args...)
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *Netns) Exec(args ...string) (string, error) {
	return runIP(append([]string{"netns", "exec", n.Name}, args...)...)
}

// Link is one veth pair between two namespaces.
type Link struct {
	A, B         *Netns // nil is the test's own namespace
	AName, BName string // interface names
	AAddr, BAddr string // CIDR addresses, e.g. "198.18.1.1/24"
}

// NewLink connects a and b (nil: the test's own namespace) with a veth pair,
// addresses each end and sets both up. Use addresses of the benchmarking
// range 198.18.0.0/15, which nothing outside this machine answers. Deleting
// either namespace removes the pair; the cleanup removes it otherwise.
func NewLink(t testing.TB, id string, a *Netns, aAddr string, b *Netns, bAddr string) *Link {
	t.Helper()
	RequireRoot(t)
	RequireBinary(t, "ip")
	// Interface names are at most 15 bytes and unique on the host.
	base := fmt.Sprintf("v%d%s", os.Getpid()%100000, id)
	if len(base) > 14 {
		t.Fatalf("testenv: link id %q too long for an interface name", id)
	}
	l := &Link{A: a, B: b, AName: base + "a", BName: base + "b", AAddr: aAddr, BAddr: bAddr}
	if _, err := runIP("link", "add", l.AName, "type", "veth", "peer", "name", l.BName); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		// Gone already when a namespace holding an end was deleted.
		if l.A == nil && linkExists(l.AName) {
			_, _ = runIP("link", "del", l.AName)
		} else if l.B == nil && linkExists(l.BName) {
			_, _ = runIP("link", "del", l.BName)
		}
	})
	for _, end := range []struct {
		ns         *Netns
		name, addr string
	}{{a, l.AName, aAddr}, {b, l.BName, bAddr}} {
		ip := runIP
		if end.ns == nil {
			guardSubnet(t, end.addr)
		}
		if end.ns != nil {
			if _, err := runIP("link", "set", end.name, "netns", end.ns.Name); err != nil {
				t.Fatalf("testenv: %v", err)
			}
			ip = end.ns.IP
		}
		if _, err := ip("addr", "add", end.addr, "dev", end.name); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if _, err := ip("link", "set", end.name, "up"); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return l
}

// guardSubnet adds an unreachable route for addr's subnet to the test's own
// namespace, below the link's own route: with the link down, traffic to the
// namespace fails here instead of following the default route off the host.
func guardSubnet(t testing.TB, addr string) {
	t.Helper()
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		t.Fatalf("testenv: link address %q: %v", addr, err)
	}
	subnet := p.Masked().String()
	if _, err := runIP("route", "add", "unreachable", subnet, "metric", guardMetric); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if _, err := runIP("route", "del", "unreachable", subnet, "metric", guardMetric); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
}

// guardMetric ranks the guard route below the link's connected route (0).
const guardMetric = "4095"

// SetUp sets end a (true) or b (false) of the link up or down: a cable cut.
func (l *Link) SetUp(a bool, up bool) error {
	ns, name := l.B, l.BName
	if a {
		ns, name = l.A, l.AName
	}
	state := "down"
	if up {
		state = "up"
	}
	if ns == nil {
		_, err := runIP("link", "set", name, state)
		return err
	}
	_, err := ns.IP("link", "set", name, state)
	return err
}

func linkExists(name string) bool {
	_, err := runIP("link", "show", name)
	return err == nil
}

func runIP(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}
