package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 3: the gossip tracker, between real daemons.
func TestGossipShowsSeedersAndForgetsDeadNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts three nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(6)+":5500")
	img := testenv.PushImage(t, up, "e2e/tracker", "v1", 2<<20)
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{
		Nodes: 3, Upstream: up,
		// Node 1 joins through node 2 once it restarts: the cluster does not
		// depend on one seed address.
		Args: func(i int) []string {
			if i == 0 {
				return []string{"--join", testenv.LoopbackIP(12) + ":7946"}
			}
			return nil
		},
	})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	layer := img.Layers[0].Digest.String()

	n1.Pull(t, img.Ref)
	for _, n := range []*testenv.Node{n2, n3} {
		waitFor(t, 30*time.Second, fmt.Sprintf("%s lists %s as a seeder", n.Name, n1.Name), func() (bool, string) {
			s := seeders(t, n, layer)
			return hasSeeder(s, n1.HTTPAddr, true), fmt.Sprint(s)
		})
	}

	n1.Kill(t)
	for _, n := range []*testenv.Node{n2, n3} {
		waitFor(t, 30*time.Second, fmt.Sprintf("%s forgets the killed %s", n.Name, n1.Name), func() (bool, string) {
			s := seeders(t, n, layer)
			return !hasSeeder(s, n1.HTTPAddr, false), fmt.Sprint(s)
		})
	}

	n1.Start(t)
	for _, n := range []*testenv.Node{n2, n3} {
		waitFor(t, 60*time.Second, fmt.Sprintf("%s lists the restarted %s again", n.Name, n1.Name), func() (bool, string) {
			s := seeders(t, n, layer)
			return hasSeeder(s, n1.HTTPAddr, true), fmt.Sprint(s)
		})
	}
}

// seeder is one entry of GET /admin/v1/seeders/<digest>.
type seeder struct {
	Node     string `json:"node"`
	HTTPAddr string `json:"httpAddr"`
	Complete bool   `json:"complete"`
}

func seeders(t *testing.T, n *testenv.Node, dgst string) []seeder {
	t.Helper()
	var out []seeder
	if err := adminGet(n, "/admin/v1/seeders/"+dgst, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func hasSeeder(list []seeder, httpAddr string, complete bool) bool {
	for _, s := range list {
		if s.HTTPAddr == httpAddr && (s.Complete || !complete) {
			return true
		}
	}
	return false
}

// waitFor polls cond every 200 ms until it holds or max passes.
func waitFor(t *testing.T, max time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(max)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %s (last: %s)", max, what, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
