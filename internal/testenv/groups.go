package testenv

import (
	"fmt"
	"testing"
)

// Groups is a cluster split in two groups of nodes, each group (its
// daemons and their containerds, every ctr pull too) in a network
// namespace of its own, as two zones or racks are. One veth, Between,
// joins the groups' namespaces: every byte from one group to the other
// crosses it, so setting it down partitions the cluster. The test reaches
// every node, and every node the upstream, through links of their own that
// stay up, and nothing routes from one group to the other through the
// test's namespace.
type Groups struct {
	Upstream *Registry
	// Nodes holds each group's nodes; Nodes[1][0] is the first node
	// started, which every other node joins.
	Nodes [2][]*Node
	// Between is the link from group 0's namespace (end A) to group 1's
	// (end B).
	Between *Link
}

// GroupsConfig describes two groups of nodes.
type GroupsConfig struct {
	// ID names the namespaces and links; at most 6 bytes.
	ID string
	// Sizes is how many nodes each group has; 1..20 each.
	Sizes [2]int
	// Args returns extra daemon flags for node i of group g (e.g. --egress);
	// nil for none. Every node but Nodes[1][0] already gets --join to it.
	Args func(g, i int) []string
}

// StartGroups starts the upstream and the nodes of two groups on the
// addresses of LinkSubnet() (s below), cut in three /26s:
//   - s.0/26, the Between link: group 0's nodes are s.11, s.12, ... on its
//     end A, group 1's s.21, s.22, ... on its end B;
//   - s.64/26, the test's link to group 0 (s.65 here, s.66 there), and
//     s.128/26, to group 1 (s.129 and s.130): the test routes each node's
//     address over its group's link, and the upstream listens on s.65.
//
// Group 1 reaches the upstream through its own link, and the test's
// namespace answers it itself (it does not forward between the groups).
func StartGroups(t testing.TB, cfg GroupsConfig) *Groups {
	t.Helper()
	for _, n := range cfg.Sizes {
		if n < 1 || n > 10 {
			t.Fatalf("testenv: a group of %d nodes; 1..10 fit the address plan", n)
		}
	}
	s := LinkSubnet()
	nodeIP := func(g, i int) string { return fmt.Sprintf("%s.%d", s, 11+10*g+i) }
	ns := [2]*Netns{NewNetns(t, cfg.ID+"0"), NewNetns(t, cfg.ID+"1")}
	// Each node's address is on its group's end of Between: the first as
	// the end's own address (its connected route reaches the other group),
	// the others as /32s beside it.
	between := NewLink(t, cfg.ID+"x", ns[0], nodeIP(0, 0)+"/26", ns[1], nodeIP(1, 0)+"/26")
	for g := range 2 {
		for i := 1; i < cfg.Sizes[g]; i++ {
			between.AddAddr(t, g == 0, nodeIP(g, i)+"/32")
		}
	}
	// Without the links below, the test's namespace has no route to the
	// nodes: traffic to them is refused here rather than sent off the host.
	guardSubnet(t, s+".0/26")
	outer := [2]struct{ here, there string }{{s + ".65", s + ".66"}, {s + ".129", s + ".130"}}
	for g := range 2 {
		NewLink(t, fmt.Sprintf("%s%d", cfg.ID, g), nil, outer[g].here+"/26", ns[g], outer[g].there+"/26")
		for i := range cfg.Sizes[g] {
			addRoute(t, nil, nodeIP(g, i)+"/32", outer[g].there)
		}
	}
	// Group 1 reaches the upstream on s.65 through its own link.
	addRoute(t, ns[1], outer[0].here+"/32", outer[1].here)
	up := StartRegistry(t, outer[0].here+":5500")

	gs := &Groups{Upstream: up, Between: between}
	bin := BuildDregistry(t)
	key := NewClusterKey(t)
	var first *Node
	for _, g := range []int{1, 0} {
		for i := range cfg.Sizes[g] {
			var args []string
			if first != nil {
				args = append(args, "--join", first.GossipAddr)
			}
			if cfg.Args != nil {
				args = append(args, cfg.Args(g, i)...)
			}
			n := StartNode(t, NodeConfig{
				Name: fmt.Sprintf("%c%d", 'a'+g, i+1), IP: nodeIP(g, i), Upstream: up, Netns: ns[g],
				Containerd: StartContainerdIn(t, "", ns[g]), ExtraArgs: args, Binary: bin, Key: key,
			})
			if first == nil {
				first = n
			}
			gs.Nodes[g] = append(gs.Nodes[g], n)
		}
	}
	return gs
}

// addRoute routes dst (CIDR) via gw in ns (nil: the test's namespace) and
// removes the route in t.Cleanup unless it went with its link.
func addRoute(t testing.TB, ns *Netns, dst, gw string) {
	t.Helper()
	ip := runIP
	if ns != nil {
		ip = ns.IP
	}
	if _, err := ip("route", "add", dst, "via", gw); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _, _ = ip("route", "del", dst, "via", gw) })
}
