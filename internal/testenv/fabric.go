package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"
)

// Fabric is a switched network of hosts, each in a network namespace of its
// own: a Linux bridge in a namespace of its own, one veth pair per host
// from the bridge to the host's namespace, and one uncapped veth pair from
// the test's own namespace to the bridge, so the test reaches every host
// (to push images, ask a daemon, or wait for it). Addresses are
// LinkSubnet()+".<n>"/24 (198.19.<pid%256>): the test is ".1". Everything
// is removed in t.Cleanup: deleting a namespace deletes its veth ends.
//
// It stands for a cluster where every node has its own NIC: a host's port
// can be capped both ways (Port.Limit), as a real link of that rate.
type Fabric struct {
	Subnet   string // "198.19.<n>": the /24 of every address on the fabric
	HostAddr string // the test's own address on the fabric
	Bridge   *Netns // holds the bridge and every port's bridge end

	id string
}

// fabricBridge is the bridge's interface name inside the bridge namespace.
const fabricBridge = "br0"

// NewFabric makes the bridge namespace and the test's link to it. id (a
// few letters) keeps the namespace and interface names of two fabrics of
// one process apart; a process has one fabric at a time, as it has one
// LinkSubnet.
func NewFabric(t testing.TB, id string) *Fabric {
	t.Helper()
	RequireBinary(t, "tc")
	f := &Fabric{Subnet: LinkSubnet(), id: id}
	f.HostAddr = f.Subnet + ".1"
	f.Bridge = NewNetns(t, id+"-br")
	if _, err := f.Bridge.IP("link", "add", fabricBridge, "type", "bridge"); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if _, err := f.Bridge.IP("link", "set", fabricBridge, "up"); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// The test's end is the one interface in its own namespace: named
	// after the pid, so two test processes never clash.
	host := fmt.Sprintf("v%d%sh", os.Getpid()%100000, id)
	if len(host) > 15 {
		t.Fatalf("testenv: fabric id %q too long for an interface name", id)
	}
	if _, err := runIP("link", "add", host, "type", "veth", "peer", "name", "host", "netns", f.Bridge.Name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		// Gone already if the bridge namespace went first.
		if linkExists(host) {
			_, _ = runIP("link", "del", host)
		}
	})
	guardSubnet(t, f.HostAddr+"/24")
	for _, args := range [][]string{{"addr", "add", f.HostAddr + "/24", "dev", host}, {"link", "set", host, "up"}} {
		if _, err := runIP(args...); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	for _, args := range [][]string{{"link", "set", "host", "master", fabricBridge}, {"link", "set", "host", "up"}} {
		if _, err := f.Bridge.IP(args...); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return f
}

// Port is one host's connection to the fabric: its namespace, its address,
// and the veth pair between the host (end B, "eth0" in the host's
// namespace) and the bridge (end A, in the bridge namespace).
type Port struct {
	Name  string
	Addr  string // the host's address, e.g. "198.19.7.11"
	Netns *Netns // the host's namespace: run its processes there
	Link  *Link  // A: the bridge's end (what the host receives), B: the host's (what it sends)
}

// Attach makes a host namespace named name, links it to the bridge and
// gives it address Subnet+"."+host (2..254; 1 is the test). A
// bitsPerSecond above 0 caps the port both ways at that rate.
func (f *Fabric) Attach(t testing.TB, name string, host int, bitsPerSecond int64) *Port {
	t.Helper()
	if host < 2 || host > 254 {
		t.Fatalf("testenv: fabric host number %d outside 2..254", host)
	}
	ns := NewNetns(t, f.id+"-"+name)
	p := &Port{
		Name:  name,
		Addr:  fmt.Sprintf("%s.%d", f.Subnet, host),
		Netns: ns,
		Link:  &Link{A: f.Bridge, B: ns, AName: fmt.Sprintf("p%d", host), BName: "eth0"},
	}
	p.Link.BAddr = p.Addr + "/24"
	// Made inside the bridge namespace with the peer put straight into
	// the host's: neither name ever exists in the test's namespace.
	if _, err := f.Bridge.IP("link", "add", p.Link.AName, "type", "veth", "peer", "name", p.Link.BName, "netns", ns.Name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	for _, args := range [][]string{
		{"link", "set", p.Link.AName, "master", fabricBridge},
		{"link", "set", p.Link.AName, "up"},
	} {
		if _, err := f.Bridge.IP(args...); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	for _, args := range [][]string{
		{"addr", "add", p.Link.BAddr, "dev", p.Link.BName},
		{"link", "set", p.Link.BName, "up"},
	} {
		if _, err := ns.IP(args...); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if bitsPerSecond > 0 {
		if err := p.Limit(bitsPerSecond); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return p
}

// Limit caps the port both ways at bitsPerSecond (tbf on each end of its
// veth pair: the host's end shapes what it sends, the bridge's end what it
// receives).
func (p *Port) Limit(bitsPerSecond int64) error {
	return p.LimitQueue(bitsPerSecond, DefaultQueue)
}

// LimitQueue is Limit with tbf queues of the given length.
func (p *Port) LimitQueue(bitsPerSecond int64, queue time.Duration) error {
	if err := p.Link.LimitQueue(false, bitsPerSecond, queue); err != nil {
		return err
	}
	return p.Link.LimitQueue(true, bitsPerSecond, queue)
}

// Unlimit removes the cap on what the host receives (the bridge's end),
// e.g. while the test pushes images into an upstream behind the port; what
// it sends stays capped.
func (p *Port) Unlimit() error {
	_, err := p.Link.A.Exec("tc", "qdisc", "del", "dev", p.Link.AName, "root")
	if err != nil {
		return fmt.Errorf("testenv: remove the cap of %s: %w", p.Name, err)
	}
	return nil
}

// Counters are the bytes the host sent (Tx) and received (Rx) on its port,
// as the host's interface counts them (frames, headers included).
type Counters struct{ Tx, Rx int64 }

// Sub returns c − o: the bytes between two readings.
func (c Counters) Sub(o Counters) Counters { return Counters{Tx: c.Tx - o.Tx, Rx: c.Rx - o.Rx} }

// Counters reads the host interface's byte counters.
func (p *Port) Counters() (Counters, error) {
	out, err := p.Netns.IP("-s", "-j", "link", "show", p.Link.BName)
	if err != nil {
		return Counters{}, err
	}
	var links []struct {
		Stats64 struct {
			Rx struct {
				Bytes int64 `json:"bytes"`
			} `json:"rx"`
			Tx struct {
				Bytes int64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return Counters{}, fmt.Errorf("testenv: counters of %s: %q: %v", p.Name, out, err)
	}
	return Counters{Tx: links[0].Stats64.Tx.Bytes, Rx: links[0].Stats64.Rx.Bytes}, nil
}
