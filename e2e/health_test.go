package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// /healthz says the process serves; /readyz also needs containerd to answer
// and, for a node told to --join, another member to be known.
func TestReadyzFollowsContainerdAndTheCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts two nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(4)+":5500")
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up})
	n := nodes[1]

	waitStatus(t, n, "/readyz", http.StatusOK)
	n.Containerd.Stop(t)
	waitStatus(t, n, "/readyz", http.StatusServiceUnavailable)
	if code, body := get(t, n.URL()+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with containerd down: %d %s, want 200 (the process is alive)", code, body)
	}
	n.Containerd.Start(t)
	waitStatus(t, n, "/readyz", http.StatusOK)
}

func waitStatus(t *testing.T, n *testenv.Node, path string, want int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%s %s answers %d", n.Name, path, want), func() (bool, string) {
		code, body := get(t, n.URL()+path)
		return code == want, fmt.Sprintf("%d %s", code, body)
	})
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	r, err := getURL(url)
	if err != nil {
		return 0, err.Error()
	}
	return r.Status, string(r.Body[:min(len(r.Body), 4096)])
}
