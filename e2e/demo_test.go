package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/dregistry/dregistry/internal/testenv"
)

// TestDemo is `make demo`: a two-node cluster on loopback, each node with its
// own containerd, in front of a real registry; both nodes pull one image
// through dregistry, and the demo prints where each node's bytes came from
// and what the upstream sent. It checks what it shows.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts two nodes and a registry")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(9)+":5500")
	img := testenv.PushImage(t, up, "demo/app", "v1", 4<<20, 16<<20)
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up})

	var report strings.Builder
	fmt.Fprintf(&report, "\nupstream registry %s holds %s: manifest %s, %d layers, %d bytes of blobs\n",
		up.Addr, img.Ref, img.Manifest.Digest, len(img.Layers), totalSize(img.Blobs()))
	for _, n := range nodes {
		n.Pull(t, img.Ref)
		fmt.Fprintf(&report, "\n%s: ctr images pull --hosts-dir %s %s  (mirror %s)\n", n.Name, n.HostsDir, img.Ref, n.URL())
		bySource := testenv.BytesBySource(n.Served(t))
		if len(bySource) == 0 {
			t.Errorf("%s served no bytes; the pull bypassed dregistry", n.Name)
		}
		for _, src := range sortedKeys(bySource) {
			fmt.Fprintf(&report, "  %-12s %12d bytes\n", src, bySource[src])
		}
	}
	reqs := up.Requests(t)
	agents := map[string]int64{}
	for _, q := range reqs {
		agents[q.UserAgent] += q.Bytes
	}
	fmt.Fprintf(&report, "\nupstream sent, by client:\n")
	for _, a := range sortedKeys(agents) {
		fmt.Fprintf(&report, "  %-40.40s %12d bytes\n", a, agents[a])
	}
	direct := testenv.FromContainerd(reqs)
	fmt.Fprintf(&report, "requests from containerd straight to the upstream: %d\n", len(direct))
	t.Log(report.String())
	if len(direct) > 0 {
		t.Errorf("containerd went to the upstream itself: %+v", direct[0])
	}
}

func totalSize(blobs []testenv.Blob) int64 {
	var n int64
	for _, b := range blobs {
		n += b.Size
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
