package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 15, items 1 and 2: `dregistry swarm preheat` puts an image into
// every member's containerd, in k8s.io, through the swarm — the upstream
// sends each blob once — and fails, naming the node and why, when one
// node cannot take it.
// On containerd 2.x, CRI (crictl inspecti, as kubelet asks) lists the
// preheated image as present.
func TestPreheatPutsTheImageOnEveryNode(t *testing.T) {
	forEachRuntime(t, testPreheat)
}

func testPreheat(t *testing.T, rt testenv.Runtime) {
	up := testenv.StartRegistry(t, testenv.LoopbackIP(85)+":5500")
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 3, Upstream: up, Runtime: rt, Args: func(i int) []string {
		return append(egressFirst(1)(i), "--node-name", fmt.Sprintf("node%d", i+1))
	}})
	waitEgressKnown(t, up, nodes, nodes[:1])

	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/preheat", Tag: "v1", LayerSizes: []int64{3 << 20, 20 << 20}, Uncompressed: true})
	// Ordered on a node that is not the egress: it resolves through its
	// own mirror, every node fetches through its own.
	out, err := nodes[1].Run(t, "swarm", "preheat", "--addr", nodes[1].URL(), img.Ref)
	t.Logf("dregistry swarm preheat %s:\n%s", img.Ref, out)
	if err != nil {
		t.Fatalf("preheat: %v", err)
	}
	if !strings.Contains(out, "preheated "+img.Ref+"@"+img.Manifest.Digest.String()+" on 3 of 3 nodes") {
		t.Errorf("preheat output lacks the summary for 3 nodes:\n%s", out)
	}
	for _, n := range nodes {
		checkPreheated(t, n, img)
	}
	reqs := up.Requests(t)
	var sent, want int64
	for _, b := range img.Blobs() {
		want += b.Size
		if n := testenv.BlobSends(reqs, b.Digest, b.Size); n != 1 {
			t.Errorf("upstream sent blob %s (%d bytes) %d times, want once for the cluster", b.Digest, b.Size, n)
		}
		for _, g := range blobGETs(reqs, b.Digest) {
			sent += g.Bytes
		}
	}
	t.Logf("upstream blob bytes: %d for an image of %d blob bytes on 3 nodes: %.2fx", sent, want, float64(sent)/float64(want))
	if sent != want {
		t.Errorf("upstream sent %d blob bytes, want %d (1.00x)", sent, want)
	}
	if direct := testenv.FromContainerd(reqs); len(direct) > 0 {
		t.Errorf("containerd contacted the upstream itself %d times, first: %+v", len(direct), direct[0])
	}

	// node3's containerd is down: the preheat fails there, names it and
	// says why, and still lands on the other two.
	img2 := up.Push(t, testenv.ImageSpec{Repo: "e2e/preheat", Tag: "v2", LayerSizes: []int64{2 << 20}, Uncompressed: true})
	nodes[2].Containerd.Stop(t)
	out, err = nodes[1].Run(t, "swarm", "preheat", "--addr", nodes[1].URL(), img2.Ref)
	t.Logf("dregistry swarm preheat %s with node3's containerd stopped:\n%s", img2.Ref, out)
	if err == nil {
		t.Fatal("preheat exited 0 with node3's containerd stopped")
	}
	if !strings.Contains(out, "failed on 1 of 3 nodes") || !strings.Contains(out, "node3: containerd at "+nodes[2].Containerd.Address) {
		t.Errorf("preheat output does not name node3 and its containerd as the failure:\n%s", out)
	}
	for _, n := range nodes[:2] {
		checkPreheated(t, n, img2)
	}
}

// checkPreheated asserts the node's containerd holds img in k8s.io as a
// CRI pull leaves it: every blob, and the image record by its name, its
// repo digest and its id (the config's digest).
func checkPreheated(t *testing.T, n *testenv.Node, img testenv.Image) {
	t.Helper()
	out, err := n.Containerd.Ctr(t, "-n", "k8s.io", "content", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, l := range strings.Fields(out) {
		have[l] = true
	}
	for _, b := range append([]testenv.Blob{img.Manifest}, img.Blobs()...) {
		if !have[b.Digest.String()] {
			t.Errorf("%s: containerd lacks %s (%s) in namespace k8s.io", n.Name, b.Digest, b.MediaType)
		}
	}
	out, err = n.Containerd.Ctr(t, "-n", "k8s.io", "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{img.Ref, img.Registry + "/" + img.Repo + "@" + img.Manifest.Digest.String(), img.Config.Digest.String()} {
		found := false
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) > 2 && f[0] == name && strings.Contains(l, img.Manifest.Digest.String()) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: ctr -n k8s.io images ls lacks %s for manifest %s:\n%s", n.Name, name, img.Manifest.Digest, out)
		}
	}
	if !n.Containerd.CRI() {
		return
	}
	got, err := n.Containerd.InspectImage(t, img.Ref)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	want := img.Registry + "/" + img.Repo + "@" + img.Manifest.Digest.String()
	if got.ID != img.Config.Digest.String() || len(got.RepoDigests) != 1 || got.RepoDigests[0] != want {
		t.Errorf("%s: crictl inspecti %s: id %s, repo digests %v; want %s, [%s]", n.Name, img.Ref, got.ID, got.RepoDigests, img.Config.Digest, want)
	}
}
