package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// partitionGossipToTheDead is how long memberlist still gossips to a
// member it declared failed (its LAN profile's GossipToTheDeadTime, which
// the daemon keeps; no flag changes it). A cut held longer than that leaves
// only the tracker's reconnect loop to bring the sides together.
const partitionGossipToTheDead = 30 * time.Second

// Issue 14, item 4: two groups of two nodes (two zones, each in a network
// namespace of its own) are cut apart for longer than memberlist gossips
// to the dead, and one group pulls an image meanwhile. Once the network is
// back, every node lists all 4 members within a minute (the reconnect
// loop, at the default --reconnect-interval), and the other group pulls
// that image from the first group's seeders: zero blob fetches from the
// upstream, the layer's bytes received from the other group's nodes.
func TestPartitionedGroupsMergeAndPullFromEachOther(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts four nodes in two network namespaces and cuts them apart for about 50 s")
	}
	testenv.RequireRoot(t)
	began := time.Now()
	// One egress per group, as a zone would have; b1 is the node every
	// other node joins.
	gs := testenv.StartGroups(t, testenv.GroupsConfig{ID: "prt", Sizes: [2]int{2, 2}, Args: func(_, i int) []string {
		if i == 0 {
			return []string{"--egress"}
		}
		return nil
	}})
	up, a, b := gs.Upstream, gs.Nodes[0], gs.Nodes[1]
	all := slices.Concat(a, b)
	waitEgressKnown(t, up, all, []*testenv.Node{a[0], b[0]})
	waitMembers(t, clusterTimeout, all, all)

	if err := gs.Between.SetUp(true, false); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	// Each side declares the other failed: it lists only its own group.
	waitMembers(t, clusterTimeout, a, a)
	waitMembers(t, clusterTimeout, b, b)
	apart := time.Now()
	t.Logf("cut: each group lists only itself after %s", apart.Sub(cutAt).Round(time.Millisecond))

	// While apart, group b pulls an image: group a can learn of its
	// seeders only once the groups merge.
	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/partition", Tag: "v1", LayerSizes: []int64{32 << 20}, Uncompressed: true})
	layer := img.Layers[0]
	b[1].Pull(t, img.Ref)
	waitFor(t, clusterTimeout, b[0].Name+" sees "+b[1].Name+" seed the layer", func() (bool, string) {
		list := seeders(t, b[0], layer.Digest.String())
		return hasSeeder(list, b[1].HTTPAddr, true), fmt.Sprint(list)
	})
	if list := seeders(t, a[1], layer.Digest.String()); len(list) > 0 {
		t.Fatalf("%s lists seeders of a layer pulled across the cut: %v", a[1].Name, list)
	}

	// Hold the cut past the window in which memberlist still gossips to
	// the members it declared failed.
	if hold := partitionGossipToTheDead + 5*time.Second - time.Since(apart); hold > 0 {
		time.Sleep(hold)
	}
	if err := gs.Between.SetUp(true, true); err != nil {
		t.Fatal(err)
	}
	backAt := time.Now()
	t.Logf("network back after a cut of %s", backAt.Sub(cutAt).Round(time.Millisecond))
	waitMembers(t, time.Minute, all, all)
	merged := time.Since(backAt)
	t.Logf("every node lists all 4 members %s after the network came back", merged.Round(time.Millisecond))
	for _, n := range a {
		waitFor(t, clusterTimeout, n.Name+" sees "+b[1].Name+" seed the layer", func() (bool, string) {
			list := seeders(t, n, layer.Digest.String())
			return hasSeeder(list, b[1].HTTPAddr, true), fmt.Sprint(list)
		})
	}

	// Group a pulls the image from group b's seeders, not from the upstream.
	upBefore := len(up.Requests(t))
	a[1].Pull(t, img.Ref)
	checkHolds(t, a[1], append([]testenv.Blob{img.Manifest}, img.Blobs()...))
	if fetched := upstreamBlobGETs(up.Requests(t)[upBefore:]); len(fetched) > 0 {
		t.Errorf("%s's pull fetched %d blobs from the upstream, want none (group %s seeds them): %+v", a[1].Name, len(fetched), "b", fetched)
	}
	st, ok, err := torrentOf(a[1], layer.Digest)
	if err != nil || !ok {
		t.Fatalf("%s has no torrent of the layer (err %v)", a[1].Name, err)
	}
	var fromB int64
	for _, n := range b {
		fromB += st.ReceivedFrom[n.IP]
	}
	if fromB < layer.Size {
		t.Errorf("%s received %d bytes of the %d-byte layer from group b's nodes, want all: by peer %v", a[1].Name, fromB, layer.Size, st.ReceivedFrom)
	}
	t.Logf("partition case: merged %s after the network came back; %s received the layer by peer %v; %s in all",
		merged.Round(time.Millisecond), a[1].Name, st.ReceivedFrom, time.Since(began).Round(time.Second))
}

// waitMembers waits until every one of nodes lists exactly want as its
// alive members (GET /admin/v1/stats, which lists the node itself too),
// all within max.
func waitMembers(t *testing.T, max time.Duration, nodes, want []*testenv.Node) {
	t.Helper()
	wantAddrs := make([]string, 0, len(want))
	for _, n := range want {
		wantAddrs = append(wantAddrs, n.GossipAddr)
	}
	slices.Sort(wantAddrs)
	waitFor(t, max, fmt.Sprintf("every node lists the %d members %v", len(want), wantAddrs), func() (bool, string) {
		var state []string
		ok := true
		for _, n := range nodes {
			got, err := aliveMembers(n)
			if err != nil || !slices.Equal(got, wantAddrs) {
				ok = false
			}
			state = append(state, fmt.Sprintf("%s: %v %v", n.Name, got, err))
		}
		return ok, strings.Join(state, "; ")
	})
}

// aliveMembers is the sorted gossip addresses n lists as alive.
func aliveMembers(n *testenv.Node) ([]string, error) {
	var st struct {
		Members []struct {
			Address string `json:"address"`
			State   string `json:"state"`
		} `json:"members"`
	}
	if err := adminGet(n, "/admin/v1/stats", &st); err != nil {
		return nil, err
	}
	var out []string
	for _, m := range st.Members {
		if m.State == "alive" {
			out = append(out, m.Address)
		}
	}
	slices.Sort(out)
	return out, nil
}

// upstreamBlobGETs returns the upstream's GETs of any blob.
func upstreamBlobGETs(reqs []testenv.Request) []testenv.Request {
	var out []testenv.Request
	for _, q := range reqs {
		if q.Method == http.MethodGet && strings.Contains(q.Path, "/blobs/") {
			out = append(out, q)
		}
	}
	return out
}
