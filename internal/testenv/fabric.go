package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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
	return p.LimitQueues(bitsPerSecond, queue, queue)
}

// LimitQueues is Limit with a queue of sends for what the host sends (its
// NIC's) and one of receives for what it receives (the bridge's end: a
// switch port's buffer).
func (p *Port) LimitQueues(bitsPerSecond int64, sends, receives time.Duration) error {
	if err := p.Link.LimitQueue(false, bitsPerSecond, sends); err != nil {
		return err
	}
	return p.Link.LimitQueue(true, bitsPerSecond, receives)
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

// Losses are the packets a port's queues dropped, of what its host sent
// (TxDrops, the host's own tbf) and of what was sent to it (RxDrops, the
// bridge end's), and the TCP segments the host retransmitted (Retrans,
// its namespace's counter). A packet dropped on its way to a host has
// crossed its sender's link for nothing; one its sender's own queue
// dropped has not.
type Losses struct{ TxDrops, RxDrops, Retrans int64 }

// Sub returns l − o: the counts between two readings.
func (l Losses) Sub(o Losses) Losses {
	return Losses{TxDrops: l.TxDrops - o.TxDrops, RxDrops: l.RxDrops - o.RxDrops, Retrans: l.Retrans - o.Retrans}
}

// Losses reads the port's queue drops and its host's TCP retransmissions
// (four commands: not for a per-second sampler).
func (p *Port) Losses() (Losses, error) {
	var l Losses
	var err error
	if l.TxDrops, err = qdiscDrops(p.Link.B, p.Link.BName); err != nil {
		return Losses{}, err
	}
	if l.RxDrops, err = qdiscDrops(p.Link.A, p.Link.AName); err != nil {
		return Losses{}, err
	}
	snmp, err := p.Netns.Exec("cat", "/proc/net/snmp")
	if err != nil {
		return Losses{}, err
	}
	if l.Retrans, err = tcpCounter(snmp, "RetransSegs"); err != nil {
		return Losses{}, fmt.Errorf("testenv: TCP counters of %s: %w", p.Name, err)
	}
	return l, nil
}

// qdiscDrops is the packets the root qdisc of dev in ns dropped.
func qdiscDrops(ns *Netns, dev string) (int64, error) {
	out, err := ns.Exec("tc", "-s", "-j", "qdisc", "show", "dev", dev, "root")
	if err != nil {
		return 0, err
	}
	var qdiscs []struct {
		Drops int64 `json:"drops"`
	}
	if err := json.Unmarshal([]byte(out), &qdiscs); err != nil {
		return 0, fmt.Errorf("testenv: queue of %s: %q: %w", dev, out, err)
	}
	var drops int64
	for _, q := range qdiscs {
		drops += q.Drops
	}
	return drops, nil
}

// tcpCounter reads one counter of the "Tcp:" lines of /proc/net/snmp (a
// line of names, then a line of values).
func tcpCounter(snmp, name string) (int64, error) {
	var names []string
	for _, line := range strings.Split(snmp, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		if len(fields) != len(names) {
			return 0, fmt.Errorf("%d values for %d names", len(fields), len(names))
		}
		for i, n := range names {
			if n == name {
				return strconv.ParseInt(fields[i], 10, 64)
			}
		}
		return 0, fmt.Errorf("no counter %s", name)
	}
	return 0, errors.New("no Tcp lines")
}
