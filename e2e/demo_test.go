package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// TestDemo is `make demo`: a three-node cluster on loopback, each node with
// its own containerd and dregistry, in front of a real registry holding a
// real image (Debian's static busybox, plus a 64 MiB layer worth sharing).
// The nodes pull one after the other; the demo prints where each node's
// bytes came from and what the upstream sent, and checks what it shows: the
// upstream sent the image once, the other nodes got it from their peers.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts three nodes and a registry")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(9)+":5500")
	img := testenv.PushBusybox(t, up, "demo/busybox", "1.35", 64<<20)
	// Node 1 is the egress: the only node that fetches from the upstream.
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 3, Upstream: up, Args: egressFirst(1)})

	var report strings.Builder
	fmt.Fprintf(&report, "\nupstream registry %s holds %s\n  manifest %s, %d layers, %d bytes of blobs\n",
		up.Addr, img.Ref, img.Manifest.Digest, len(img.Layers), totalSize(img.Blobs()))
	for i, n := range nodes {
		if i > 0 {
			// Gossip tells the next node who seeds the big layer.
			big := img.Layers[len(img.Layers)-1].Digest.String()
			waitFor(t, 30*time.Second, n.Name+" sees the earlier nodes seed the layer", func() (bool, string) {
				s := seeders(t, n, big)
				return len(s) >= i, fmt.Sprint(s)
			})
		}
		start := time.Now()
		n.Pull(t, img.Ref)
		fmt.Fprintf(&report, "\n%s (mirror %s): ctr images pull --hosts-dir %s %s: %s\n",
			n.Name, n.URL(), n.HostsDir, img.Ref, time.Since(start).Round(time.Millisecond))
		bySource := testenv.BytesBySource(n.Served(t))
		if len(bySource) == 0 {
			t.Errorf("%s served no bytes; the pull bypassed dregistry", n.Name)
		}
		for _, src := range sortedKeys(bySource) {
			fmt.Fprintf(&report, "  from %-12s %12d bytes\n", src, bySource[src])
		}
		if i > 0 && bySource["upstream"] > 0 {
			t.Errorf("%s fetched %d bytes from the upstream although its peers hold the image", n.Name, bySource["upstream"])
		}
	}
	const hello = "hello from a container pulled through dregistry"
	out, err := nodes[2].Containerd.Ctr(t, "-n", "default", "run", "--rm", img.Ref, "demo", "busybox", "echo", hello)
	if err != nil || !strings.Contains(out, hello) {
		t.Errorf("%s: ctr run %s busybox echo: %v\n%s", nodes[2].Name, img.Ref, err, out)
	}
	fmt.Fprintf(&report, "\n%s: ctr run %s busybox echo: %s", nodes[2].Name, img.Ref, out)

	reqs := up.Requests(t)
	agents := map[string]int64{}
	var sent int64
	for _, q := range reqs {
		agents[q.UserAgent] += q.Bytes
		sent += q.Bytes
	}
	fmt.Fprintf(&report, "\nupstream sent %d bytes in all (the image is %d), by client:\n", sent, totalSize(img.Blobs()))
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

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
