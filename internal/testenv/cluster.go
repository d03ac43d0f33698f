package testenv

import (
	"fmt"
	"testing"
)

// firstNodeHost is the last octet of node 0's loopback address; node i is
// LoopbackIP(firstNodeHost+i).
const firstNodeHost = 11

// ClusterConfig describes n nodes mirroring one upstream.
type ClusterConfig struct {
	Nodes    int       // how many; at least 1
	Upstream *Registry // mirrored by every node
	// Args returns extra daemon flags for node i (e.g. "--egress" for i == 0);
	// nil for none. Every node but the first already gets --join <node 0>.
	Args func(i int) []string
	// Env is extra environment for every daemon.
	Env []string
	// Key is the cluster key of every node; nil makes a fresh one.
	Key *ClusterKey
	// Runtime is the containerd every node runs (default RuntimeCtr).
	Runtime Runtime
}

// StartCluster starts cfg.Nodes nodes, each with its own containerd, on
// LoopbackIP(11), LoopbackIP(12), ...; nodes 1.. join node 0's gossip address.
func StartCluster(t testing.TB, cfg ClusterConfig) []*Node {
	t.Helper()
	if cfg.Nodes < 1 || firstNodeHost+cfg.Nodes > 254 {
		t.Fatalf("testenv: a cluster of %d nodes does not fit the loopback block", cfg.Nodes)
	}
	bin := BuildDregistry(t)
	if cfg.Key == nil {
		cfg.Key = NewClusterKey(t)
	}
	nodes := make([]*Node, 0, cfg.Nodes)
	for i := 0; i < cfg.Nodes; i++ {
		var args []string
		if i > 0 {
			args = append(args, "--join", nodes[0].GossipAddr)
		}
		if cfg.Args != nil {
			args = append(args, cfg.Args(i)...)
		}
		nodes = append(nodes, StartNode(t, NodeConfig{
			Name:      fmt.Sprintf("node%d", i+1),
			IP:        LoopbackIP(firstNodeHost + i),
			Upstream:  cfg.Upstream,
			ExtraArgs: args,
			Env:       cfg.Env,
			Binary:    bin,
			Key:       cfg.Key,
			Runtime:   cfg.Runtime,
		}))
	}
	return nodes
}
