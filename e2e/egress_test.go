package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/testenv"
	"github.com/dregistry/dregistry/swarm"
)

// Issue 5: egress nodes fetch each blob from the upstream once for the
// cluster and stream it to every node waiting for it.

// clusterTimeout bounds the wait for gossip to tell every node who the
// egress nodes are.
const clusterTimeout = 60 * time.Second

func TestEgressFetchesEachBlobOnceForTheCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts four nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(3)+":5500")
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 4, Upstream: up, Args: egressFirst(1)})
	waitEgressKnown(t, up, nodes, nodes[:1])

	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/egress-once", Tag: "v1", LayerSizes: []int64{3 << 20, 5 << 20, 32 << 20}})
	errs := pullTogether(t, nodes, img.Ref)
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", nodes[i].Name, err)
		}
	}
	for _, n := range nodes {
		checkHolds(t, n, append([]testenv.Blob{img.Manifest}, img.Blobs()...))
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
}

func TestANodeWithoutAnUpstreamPathPullsThroughTheEgress(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts two nodes, one in a network namespace")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(4)+":5500")
	// The blocked node's daemon lives in a namespace whose only way out is a
	// veth to the egress node's address: the upstream, on the test's
	// loopback, is not there (127.0.0.0/8 stays inside each namespace).
	ns := testenv.NewNetns(t, "blk")
	sub := testenv.LinkSubnet()
	testenv.NewLink(t, "blk", nil, sub+".1/24", ns, sub+".2/24")
	bin := testenv.BuildDregistry(t)
	key := testenv.NewClusterKey(t)
	egressNode := testenv.StartNode(t, testenv.NodeConfig{Name: "egress", IP: sub + ".1", Upstream: up,
		ExtraArgs: []string{"--egress"}, Binary: bin, Key: key})
	blocked := testenv.StartNode(t, testenv.NodeConfig{Name: "blocked", IP: sub + ".2", Upstream: up, Netns: ns,
		ExtraArgs: []string{"--join", egressNode.GossipAddr}, Binary: bin, Key: key})

	// The premise, checked: from the blocked daemon's namespace the egress
	// node answers and the upstream does not.
	if out, err := ns.Exec("bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(up.Addr, ":", "/", 1)); err == nil {
		t.Fatalf("the blocked namespace reaches the upstream %s; the test proves nothing (%s)", up.Addr, out)
	}
	if out, err := ns.Exec("bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(egressNode.HTTPAddr, ":", "/", 1)); err != nil {
		t.Fatalf("the blocked namespace does not reach the egress node %s: %v (%s)", egressNode.HTTPAddr, err, out)
	}
	nodes := []*testenv.Node{egressNode, blocked}
	waitEgressKnown(t, up, nodes, nodes[:1])

	img := testenv.PushImage(t, up, "e2e/egress-blocked", "v1", 1<<20, 6<<20)
	before := len(blocked.Served(t))
	blocked.Pull(t, img.Ref)
	checkHolds(t, blocked, append([]testenv.Blob{img.Manifest}, img.Blobs()...))

	reqs := up.Requests(t)
	if direct := testenv.FromContainerd(reqs); len(direct) > 0 {
		t.Errorf("containerd fell back to the upstream itself %d times, first: %+v", len(direct), direct[0])
	}
	for _, b := range img.Blobs() {
		if n := testenv.BlobSends(reqs, b.Digest, b.Size); n != 1 {
			t.Errorf("upstream sent blob %s %d times, want once (to the egress node)", b.Digest, n)
		}
	}
	// Every byte the blocked node gave containerd came through the egress
	// node (its own containerd lacked the image, no peer seeded it before).
	for _, s := range blocked.Served(t)[before:] {
		if s.Status == http.StatusOK && strings.Contains(s.Path, img.Repo) && s.Source != "egress" && s.Source != "swarm" {
			t.Errorf("blocked node served %s %s from %q, want the egress node", s.Method, s.Path, s.Source)
		}
	}
	bySource := testenv.BytesBySource(blocked.Served(t)[before:])
	if bySource["egress"]+bySource["swarm"] < totalSize(img.Layers) {
		t.Errorf("blocked node served %v bytes by source, want the %d bytes of layers through the egress", bySource, totalSize(img.Layers))
	}
}

func TestPullsSurviveTheEgressDyingMidBlob(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts four nodes and a rate-capped upstream")
	}
	testenv.RequireRoot(t)
	// At 400 Mbit/s a 256 MiB blob takes over 5 s to leave the upstream:
	// time to find the owner mid-blob. A short queue, so that throttling
	// the link (waitOwnerPastChunk) takes effect at once.
	up, link := testenv.StartShapedRegistry(t, "mid", upstreamRate)
	if err := link.LimitQueue(false, upstreamRate, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Nodes 1 and 2 are egress nodes (one owns the blob, the other takes
	// over); nodes 3 and 4 pull.
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 4, Upstream: up, Args: egressFirst(2)})
	waitEgressKnown(t, up, nodes, nodes[:2])

	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/egress-dies", Tag: "v1", LayerSizes: []int64{256 << 20}, Uncompressed: true})
	layer := img.Layers[0]
	pullers := nodes[2:]

	watch := watchSeeders(nodes, layer)
	done := make(chan []error, 1)
	go func() { done <- pullTogether(t, pullers, img.Ref) }()

	// Killed just after a chunk boundary, once the pullers hold every
	// chunk before it: the candidate that takes over must resume from
	// there (issue 13), so the upstream sends little more than the blob.
	chunk := swarm.ChunkBytes(layer.Size)
	owner, held, spooled := waitOwnerPastChunk(t, nodes[:2], pullers, layer, chunk, link, done)
	t.Logf("killing the owner %s mid-blob at %d of %d bytes, its followers holding %d", owner.Name, spooled, layer.Size, held)
	watch.exclude(owner)
	owner.Kill(t)
	if err := link.LimitQueue(false, upstreamRate, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}

	var errs []error
	select {
	case errs = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the pulls did not finish within 3 minutes of the owner's death")
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: the pull failed after the owner died: %v", pullers[i].Name, err)
		}
	}
	// The pullers now seed the layer: the watch must see (and so check)
	// each of them listed complete before it stops.
	for i, n := range pullers {
		other := pullers[(i+1)%len(pullers)]
		waitFor(t, clusterTimeout, other.Name+" lists "+n.Name+" as a complete seeder", func() (bool, string) {
			return watch.hasChecked(n.HTTPAddr), fmt.Sprint(seeders(t, other, layer.Digest.String()))
		})
	}
	watch.stop()
	for _, n := range pullers {
		checkHolds(t, n, append([]testenv.Blob{img.Manifest}, img.Blobs()...))
	}
	for _, v := range watch.violations() {
		t.Error(v)
	}
	// How the pulls got the rest: the dead owner's cut download, then the
	// candidate that took over; never containerd's own fallback.
	reqs := up.Requests(t)
	var sent int64
	var ranged []testenv.Request
	for _, q := range blobGETs(reqs, layer.Digest) {
		t.Logf("upstream GET of the layer: status %d, %d of %d bytes, %s", q.Status, q.Bytes, layer.Size, q.UserAgent)
		sent += q.Bytes
		if q.Status == http.StatusPartialContent {
			ranged = append(ranged, q)
		}
	}
	if direct := testenv.FromContainerd(reqs); len(direct) > 0 {
		t.Errorf("containerd went to the upstream itself %d times (dregistry failed it), first: %+v", len(direct), direct[0])
	}
	// The candidate that took over got the chunks the pullers held from
	// them, and only the rest from the upstream, with a Range.
	if sent > layer.Size+chunk {
		t.Errorf("the upstream sent %d bytes of the %d-byte layer, more than the layer and one chunk (%d): the download was not resumed",
			sent, layer.Size, chunk)
	}
	if len(ranged) != 1 || ranged[0].Bytes > layer.Size-held {
		t.Errorf("upstream answered %d ranged GETs of the layer (%+v); want one, of at most the %d bytes the pullers did not hold",
			len(ranged), ranged, layer.Size-held)
	}
}

// upstreamRate is the upstream's link in TestPullsSurviveTheEgressDyingMidBlob.
const upstreamRate = 400_000_000

// waitOwnerPastChunk returns the candidate whose egress download of blob
// has just passed a chunk boundary k·chunk (k ≥ 2, less than half a chunk
// past it) while every puller holds all k chunks before it, with k·chunk
// and the bytes its spool had; it fails if the pulls end first. Less than
// half a chunk lost, plus what the upstream's socket and link held, stays
// under the one chunk a takeover may cost. Once the owner passes the
// boundary, the upstream's link (up) is throttled to a trickle so the
// pullers catch up whatever this machine's speed; the caller restores it.
func waitOwnerPastChunk(t *testing.T, candidates, pullers []*testenv.Node, blob testenv.Blob, chunk int64, up *testenv.Link, pulls <-chan []error) (*testenv.Node, int64, int64) {
	t.Helper()
	owner, k := waitSpool(t, candidates, blob, func(size int64) (int64, bool) {
		k := size / chunk
		return k, size < blob.Size-chunk && k >= 2 && size-k*chunk < chunk/4
	}, pulls)
	if err := up.LimitQueue(false, 1_000_000, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(spoolPath(owner, blob.Digest) + ".partial"); err == nil {
		t.Logf("upstream throttled with %s's spool at %d bytes, %d past chunk %d", owner.Name, st.Size(), st.Size()-k*chunk, k)
	}
	deadline := time.Now().Add(time.Minute)
	for !pullersHold(pullers, blob.Digest, k*chunk) {
		if time.Now().After(deadline) {
			t.Fatalf("the pullers did not get the %d chunks before %s's spool within a minute", k, owner.Name)
		}
		select {
		case errs := <-pulls:
			t.Fatalf("the pulls ended (%v) while the upstream was throttled", errors.Join(errs...))
		case <-time.After(10 * time.Millisecond):
		}
	}
	st, err := os.Stat(spoolPath(owner, blob.Digest) + ".partial")
	if err != nil || st.Size()-k*chunk >= chunk/2 {
		t.Fatalf("%s's spool went on past chunk %d while the upstream was throttled: %v, %v", owner.Name, k, st, err)
	}
	return owner, k * chunk, st.Size()
}

// waitSpool returns the candidate whose partial egress spool of blob has a
// size that match accepts, and what match returned with it.
func waitSpool(t *testing.T, candidates []*testenv.Node, blob testenv.Blob, match func(int64) (int64, bool), pulls <-chan []error) (*testenv.Node, int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		for _, n := range candidates {
			st, err := os.Stat(spoolPath(n, blob.Digest) + ".partial")
			if err != nil {
				continue
			}
			if v, ok := match(st.Size()); ok {
				return n, v
			}
		}
		select {
		case errs := <-pulls:
			t.Fatalf("the pulls ended (%v) before any egress node was seen just past a chunk", errors.Join(errs...))
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("no egress node was seen just past a chunk of %s within 2 minutes", blob.Digest)
	return nil, 0
}

// pullersHold reports whether every puller's torrent of d has n bytes.
func pullersHold(pullers []*testenv.Node, d digest.Digest, n int64) bool {
	for _, p := range pullers {
		st, ok, err := torrentOf(p, d)
		if err != nil || !ok || st.BytesCompleted < n {
			return false
		}
	}
	return true
}

// egressFirst marks the first n nodes --egress.
func egressFirst(n int) func(int) []string {
	return func(i int) []string {
		if i < n {
			return []string{"--egress"}
		}
		return nil
	}
}

// waitEgressKnown pulls a small image on the egress nodes and waits until
// every other node lists each of them as a complete egress seeder: gossip has
// then told every node who may reach the upstream, and (through the join's
// state exchange) told the egress nodes who the members are. It returns the
// image's layer, for waitEgressListed after a node restarts.
func waitEgressKnown(t testing.TB, up *testenv.Registry, nodes, egress []*testenv.Node) string {
	t.Helper()
	warm := testenv.PushImage(t, up, "e2e/egress-warmup", "v1", 64<<10)
	layer := warm.Layers[0].Digest.String()
	for _, e := range egress {
		e.Pull(t, warm.Ref)
	}
	waitEgressListed(t, nodes, egress, layer)
	return layer
}

// waitEgressListed waits until every node lists each egress node as a
// complete egress seeder of layer. (A second waitEgressKnown within the
// egress's tag cache would pull the first image again, and wait for the
// new layer in vain.)
func waitEgressListed(t testing.TB, nodes, egress []*testenv.Node, layer string) {
	t.Helper()
	for _, n := range nodes {
		deadline := time.Now().Add(clusterTimeout)
		for {
			missing, state := missingEgress(t, n, egress, layer)
			if missing == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not list egress node %s after %s (last: %s)", n.Name, missing.Name, clusterTimeout, state)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// missingEgress returns an egress node n does not list as a complete egress
// seeder of layer (a node's tracker lists its peers, not itself).
func missingEgress(t testing.TB, n *testenv.Node, egress []*testenv.Node, layer string) (*testenv.Node, string) {
	var list []egressSeeder
	if err := adminGet(n, "/admin/v1/seeders/"+layer, &list); err != nil {
		return egress[0], err.Error()
	}
	for _, e := range egress {
		if e != n && !hasEgressSeeder(list, e.HTTPAddr) {
			return e, fmt.Sprint(list)
		}
	}
	return nil, ""
}

// seeder's egress flag, which tracker_test.go's seeder leaves out.
type egressSeeder struct {
	HTTPAddr string `json:"httpAddr"`
	Complete bool   `json:"complete"`
	Egress   bool   `json:"egress"`
}

func hasEgressSeeder(list []egressSeeder, httpAddr string) bool {
	for _, s := range list {
		if s.HTTPAddr == httpAddr && s.Complete && s.Egress {
			return true
		}
	}
	return false
}

// pullTogether starts `ctr images pull` of ref on every node at the same
// moment and returns each node's error.
func pullTogether(t *testing.T, nodes []*testenv.Node, ref string) []error {
	errs, _ := atOnce(len(nodes), func(i int) error {
		_, err := nodes[i].TryPull(t, ref)
		return err
	})
	return errs
}

// checkHolds asserts the node's containerd holds every blob (containerd
// commits content only once its digest matched).
func checkHolds(t *testing.T, n *testenv.Node, blobs []testenv.Blob) {
	t.Helper()
	have := contentDigests(t, n)
	for _, b := range blobs {
		if !have[b.Digest] {
			t.Errorf("%s: containerd lacks %s (%s)", n.Name, b.Digest, b.MediaType)
		}
	}
}

// blobGETs returns the upstream's GETs of a blob, partial or whole.
func blobGETs(reqs []testenv.Request, d digest.Digest) []testenv.Request {
	var out []testenv.Request
	for _, q := range reqs {
		if q.Method == http.MethodGet && strings.HasSuffix(q.Path, "/blobs/"+d.String()) {
			out = append(out, q)
		}
	}
	return out
}

// spoolPath is where a node's egress fetcher downloads a blob; suffix
// ".partial" until the digest matched.
func spoolPath(n *testenv.Node, d digest.Digest) string {
	return filepath.Join(n.DataDir, "egress", d.Algorithm().String()+"-"+d.Encoded())
}
