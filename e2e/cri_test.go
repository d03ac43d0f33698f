package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 14, item 5: the mirror, swarm and egress cases on both runtimes a
// node may run — Debian's containerd 1.6 pulling with ctr --hosts-dir, and
// containerd 2.x pulling through CRI (crictl, as kubelet does), which reads
// hosts.toml through its config_path and, since 2.1, pulls through the
// transfer service. The same assertions hold on each.

// forEachRuntime runs body as one subtest per runtime.
func forEachRuntime(t *testing.T, body func(t *testing.T, rt testenv.Runtime)) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: starts containerd daemons, docker-registry and dregistry")
	}
	testenv.RequireRoot(t)
	for _, rt := range testenv.Runtimes() {
		t.Run(rt.String(), func(t *testing.T) { body(t, rt) })
	}
}

func TestCRIMirrorPullLandsTheImageWithOneUpstreamFetch(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt testenv.Runtime) {
		up := testenv.StartRegistry(t, testenv.LoopbackIP(81)+":5500")
		node := testenv.StartNode(t, testenv.NodeConfig{Name: "node1", IP: testenv.LoopbackIP(11), Upstream: up, Runtime: rt})
		img := testenv.PushImage(t, up, "e2e/cri-mirror", "v1", 300<<10, 2<<20)

		node.Pull(t, img.Ref)
		checkLanded(t, node, img)
		reqs := up.Requests(t)
		if direct := testenv.FromContainerd(reqs); len(direct) > 0 {
			t.Errorf("containerd contacted the upstream itself %d times, first: %+v", len(direct), direct[0])
		}
		for _, b := range img.Blobs() {
			if n := testenv.BlobSends(reqs, b.Digest, b.Size); n != 1 {
				t.Errorf("upstream sent blob %s %d times, want once (by dregistry)", b.Digest, n)
			}
		}
		// containerd got every blob from dregistry, which fetched it
		// upstream (as the egress candidate of a one-node cluster).
		for _, b := range img.Blobs() {
			if src := blobSources(t, node, b.Digest); len(src) == 0 || !onlySources(src, "egress", "upstream") {
				t.Errorf("%s served blob %s from %v, want the upstream through itself", node.Name, b.Digest, src)
			}
		}
	})
}

func TestCRISecondNodePullsFromTheFirstThroughTheSwarm(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt testenv.Runtime) {
		up := testenv.StartRegistry(t, testenv.LoopbackIP(82)+":5500")
		// A layer above the small-blob size, so it travels as a torrent.
		img := up.Push(t, testenv.ImageSpec{Repo: "e2e/cri-swarm", Tag: "v1", LayerSizes: []int64{24 << 20, 512 << 10}, Uncompressed: true})
		nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up, Args: egressFirst(1), Runtime: rt})
		n1, n2 := nodes[0], nodes[1]

		n1.Pull(t, img.Ref)
		checkLanded(t, n1, img)
		for _, b := range img.Blobs() {
			waitFor(t, 30*time.Second, n2.Name+" sees "+n1.Name+" seed "+b.Digest.String(), func() (bool, string) {
				s := seeders(t, n2, b.Digest.String())
				return hasSeeder(s, n1.HTTPAddr, true), fmt.Sprint(s)
			})
		}
		before := blobGETCount(up.Requests(t), img.Blobs())
		n2.Pull(t, img.Ref)
		checkLanded(t, n2, img)

		if after := blobGETCount(up.Requests(t), img.Blobs()); after != before {
			t.Errorf("the upstream answered %d blob GETs during %s's pull, want none", after-before, n2.Name)
		}
		if direct := testenv.FromContainerd(up.Requests(t)); len(direct) > 0 {
			t.Errorf("containerd contacted the upstream itself %d times, first: %+v", len(direct), direct[0])
		}
		for _, b := range img.Blobs() {
			if src := blobSources(t, n2, b.Digest); len(src) == 0 || !onlySources(src, "swarm") {
				t.Errorf("%s served blob %s from %v, want the swarm", n2.Name, b.Digest, src)
			}
		}
		big := img.Layers[0]
		if from := receivedFrom(t, n2, big.Digest.String()); from[n1.IP] < big.Size {
			t.Errorf("%s received %d bytes of %s from %s, want all %d; by peer: %v", n2.Name, from[n1.IP], big.Digest, n1.Name, big.Size, from)
		}
	})
}

func TestCRIColdPullOnThreeNodesFetchesEachBlobOnce(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt testenv.Runtime) {
		up := testenv.StartRegistry(t, testenv.LoopbackIP(83)+":5500")
		nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 3, Upstream: up, Args: egressFirst(1), Runtime: rt})
		waitEgressKnown(t, up, nodes, nodes[:1])

		img := up.Push(t, testenv.ImageSpec{Repo: "e2e/cri-cold", Tag: "v1", LayerSizes: []int64{3 << 20, 20 << 20}, Uncompressed: true})
		errs := pullTogether(t, nodes, img.Ref)
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: %v", nodes[i].Name, err)
			}
		}
		for _, n := range nodes {
			checkLanded(t, n, img)
		}
		reqs := up.Requests(t)
		for _, b := range img.Blobs() {
			if n := testenv.BlobSends(reqs, b.Digest, b.Size); n != 1 {
				t.Errorf("upstream sent blob %s (%d bytes) %d times, want exactly once for the cluster", b.Digest, b.Size, n)
			}
			if gets := blobGETs(reqs, b.Digest); len(gets) != 1 {
				t.Errorf("upstream answered %d GETs of blob %s, want one: %+v", len(gets), b.Digest, gets)
			}
		}
		if direct := testenv.FromContainerd(reqs); len(direct) > 0 {
			t.Errorf("containerd contacted the upstream itself %d times, first: %+v", len(direct), direct[0])
		}
	})
}

// checkLanded asserts the node's containerd holds the image as its client
// sees it: every blob in the pull's namespace, and the image record — in
// CRI (crictl inspecti: the config as its id, the manifest as its repo
// digest) or in ctr's image list.
func checkLanded(t *testing.T, n *testenv.Node, img testenv.Image) {
	t.Helper()
	ns := n.Containerd.Namespace()
	out, err := n.Containerd.Ctr(t, "-n", ns, "content", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, l := range strings.Fields(out) {
		have[l] = true
	}
	for _, b := range append([]testenv.Blob{img.Manifest}, img.Blobs()...) {
		if !have[b.Digest.String()] {
			t.Errorf("%s: containerd lacks %s (%s) in namespace %s", n.Name, b.Digest, b.MediaType, ns)
		}
	}
	if !n.Containerd.CRI() {
		out, err := n.Containerd.Ctr(t, "-n", ns, "images", "ls", "name=="+img.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, img.Manifest.Digest.String()) {
			t.Errorf("%s: ctr lists %s without its manifest %s:\n%s", n.Name, img.Ref, img.Manifest.Digest, out)
		}
		return
	}
	got, err := n.Containerd.InspectImage(t, img.Ref)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	if got.ID != img.Config.Digest.String() {
		t.Errorf("%s: crictl inspecti %s: id %s, want the config %s", n.Name, img.Ref, got.ID, img.Config.Digest)
	}
	want := img.Registry + "/" + img.Repo + "@" + img.Manifest.Digest.String()
	if len(got.RepoDigests) != 1 || got.RepoDigests[0] != want {
		t.Errorf("%s: crictl inspecti %s: repo digests %v, want [%s]", n.Name, img.Ref, got.RepoDigests, want)
	}
}

// blobSources lists the sources of the node's complete answers to GETs of
// a blob (those containerd took its bytes from).
func blobSources(t *testing.T, n *testenv.Node, d digest.Digest) []string {
	t.Helper()
	var out []string
	for _, s := range n.Served(t) {
		if s.Method == http.MethodGet && strings.HasSuffix(s.Path, "/blobs/"+d.String()) &&
			(s.Status == http.StatusOK || s.Status == http.StatusPartialContent) && !s.Aborted {
			out = append(out, s.Source)
		}
	}
	return out
}

// onlySources reports whether every source in got is one of want.
func onlySources(got []string, want ...string) bool {
	for _, s := range got {
		if !slices.Contains(want, s) {
			return false
		}
	}
	return true
}

// blobGETCount counts the upstream's GETs of any of blobs.
func blobGETCount(reqs []testenv.Request, blobs []testenv.Blob) int {
	n := 0
	for _, b := range blobs {
		n += len(blobGETs(reqs, b.Digest))
	}
	return n
}

// configure reads a containerd 2.x's version from its socket and warns when
// CRI's config_path is a list, and the warning is true: CRI pulls then
// never reach the mirror, though the list holds the hosts dir.
func TestCRIConfigPathListBypassesTheMirrorAsConfigureWarns(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts containerd 2.x, docker-registry and dregistry")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(84)+":5500")
	node := testenv.StartNode(t, testenv.NodeConfig{Name: "node1", IP: testenv.LoopbackIP(11), Upstream: up, Runtime: testenv.RuntimeCRI})
	configure := func() string {
		t.Helper()
		out, err := node.Run(t, "containerd", "configure", "--hosts-dir", node.HostsDir, "--mirror", node.URL(),
			"--registry", up.Addr, "--plain-http", up.Addr,
			"--containerd-config", node.Containerd.ConfigPath, "--containerd-address", node.Containerd.Address)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out := configure(); strings.Contains(out, "warning") {
		t.Fatalf("configure warns of the harness's single-directory config_path:\n%s", out)
	}

	// The hosts dir first in a list, as in 2.2's default.
	node.Containerd.Stop(t)
	node.Containerd.SetRegistryConfigPath(t, node.HostsDir+":"+filepath.Join(t.TempDir(), "docker-certs.d"))
	node.Containerd.Start(t)
	if out := configure(); !strings.Contains(out, "warning [config-path-list]") || !strings.Contains(out, "transfer service") {
		t.Fatalf("configure does not warn of the config_path list:\n%s", out)
	}

	img := testenv.PushImage(t, up, "e2e/cri-list", "v1", 64<<10)
	before := len(node.Served(t))
	// Without a hosts.toml found, containerd goes to the registry itself;
	// whether that pull succeeds does not matter here, only that
	// dregistry never saw it.
	out, err := node.TryPull(t, img.Ref)
	t.Logf("crictl pull with the list: %v %s", err, out)
	for _, s := range node.Served(t)[before:] {
		if strings.Contains(s.Path, img.Repo) {
			t.Errorf("the mirror served %s %s though CRI's config_path is a list", s.Method, s.Path)
		}
	}
	if err == nil && len(testenv.FromContainerd(up.Requests(t))) == 0 {
		t.Errorf("the pull succeeded, yet neither the mirror nor containerd itself asked the upstream")
	}
}
