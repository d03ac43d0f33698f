package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 4: once one node holds an image, the others pull it from their
// peers, with the upstream gone, and a large layer comes in pieces from
// several peers at once.
func TestPeersServeAnImageWhenTheUpstreamIsGone(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts three nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(5)+":5500")
	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/swarm", Tag: "v1", LayerSizes: []int64{96 << 20, 1 << 20}, Uncompressed: true})
	// Node 1 is the egress, so it alone fetches from the upstream; nodes 2
	// and 3 must get the layer from their peers.
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 3, Upstream: up, Args: egressFirst(1)})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	big := img.Layers[0]

	n1.Pull(t, img.Ref)
	up.Stop(t)
	waitFor(t, 30*time.Second, n2.Name+" sees "+n1.Name+" seed the layer", func() (bool, string) {
		s := seeders(t, n2, big.Digest.String())
		return hasSeeder(s, n1.HTTPAddr, true), fmt.Sprint(s)
	})
	// The tag, with the upstream gone, is answered by its egress owner's
	// last known descriptor. Node 2 and node 3 pull together: node 3 gets pieces from node 1 and
	// from node 2 while node 2 is still downloading them.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range []*testenv.Node{n2, n3} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = n.TryPull(t, img.Ref)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pull on node %d: %v", i+2, err)
		}
	}

	for _, n := range []*testenv.Node{n2, n3} {
		by := testenv.BytesBySource(n.Served(t))
		if by["egress"] != 0 {
			t.Errorf("%s got %d bytes through the egress with the upstream stopped", n.Name, by["egress"])
		}
		if by["swarm"] < big.Size {
			t.Errorf("%s: %d bytes from the swarm, want at least the %d-byte layer; by source: %v", n.Name, by["swarm"], big.Size, by)
		}
	}
	from := receivedFrom(t, n3, big.Digest.String())
	t.Logf("%s received %s from: %v", n3.Name, big.Digest, from)
	for _, seeder := range []*testenv.Node{n1, n2} {
		if from[seeder.IP] == 0 {
			t.Errorf("%s received no pieces of %s from %s (%s); received from %v", n3.Name, big.Digest, seeder.Name, seeder.IP, from)
		}
	}
}

// receivedFrom returns the piece bytes n received for dgst, by peer IP.
func receivedFrom(t *testing.T, n *testenv.Node, dgst string) map[string]int64 {
	t.Helper()
	st, ok, err := torrentOf(n, digest.Digest(dgst))
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("%s has no torrent of %s", n.Name, dgst)
	}
	return st.ReceivedFrom
}
