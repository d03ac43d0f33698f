package e2e

import (
	"testing"

	"github.com/dregistry/dregistry/internal/testenv"
)

// The harness issue 3-5 tests build on: several nodes side by side, each
// with its own containerd, loopback address and hosts dir.
func TestEveryNodeOfAClusterPullsThroughItsOwnMirror(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts three nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(7)+":5500")
	img := testenv.PushImage(t, up, "e2e/cluster", "v1", 256<<10, 512<<10)
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 3, Upstream: up})
	seen := map[string]bool{}
	for _, n := range nodes {
		if seen[n.HTTPAddr] {
			t.Fatalf("two nodes share %s", n.HTTPAddr)
		}
		seen[n.HTTPAddr] = true
		n.Pull(t, img.Ref)
		have := contentDigests(t, n)
		for _, b := range append([]testenv.Blob{img.Manifest}, img.Blobs()...) {
			if !have[b.Digest] {
				t.Errorf("%s: containerd lacks %s after the pull", n.Name, b.Digest)
			}
		}
	}
	if direct := testenv.FromContainerd(up.Requests(t)); len(direct) > 0 {
		t.Errorf("containerd contacted the upstream itself %d times, first: %+v", len(direct), direct[0])
	}
}
