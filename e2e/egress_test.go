package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/internal/testenv"
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
	// time to find the owner mid-blob and kill it.
	up, _ := testenv.StartShapedRegistry(t, "mid", 400_000_000)
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

	owner := waitOwnerMidBlob(t, nodes[:2], layer, 32<<20, done)
	t.Logf("killing the owner %s mid-blob", owner.Name)
	owner.Kill(t)
	watch.exclude(owner)

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
	// candidate that took over (or containerd's own fallback).
	reqs := up.Requests(t)
	for _, q := range blobGETs(reqs, layer.Digest) {
		t.Logf("upstream GET of the layer: status %d, %d of %d bytes, %s", q.Status, q.Bytes, layer.Size, q.UserAgent)
	}
	t.Logf("upstream: %d requests from containerd itself", len(testenv.FromContainerd(reqs)))
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
// state exchange) told the egress nodes who the members are.
func waitEgressKnown(t testing.TB, up *testenv.Registry, nodes, egress []*testenv.Node) {
	t.Helper()
	warm := testenv.PushImage(t, up, "e2e/egress-warmup", "v1", 64<<10)
	layer := warm.Layers[0].Digest.String()
	for _, e := range egress {
		e.Pull(t, warm.Ref)
	}
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
	r := memberGet(t, n, "/admin/v1/seeders/"+layer)
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &list) != nil {
		return egress[0], fmt.Sprintf("status %d: %.200s", r.Status, r.Body)
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

// waitOwnerMidBlob returns the candidate whose egress download of blob has
// at least min bytes but is not complete; it fails if the pulls end first.
func waitOwnerMidBlob(t *testing.T, candidates []*testenv.Node, blob testenv.Blob, min int64, pulls <-chan []error) *testenv.Node {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		for _, n := range candidates {
			st, err := os.Stat(spoolPath(n, blob.Digest) + ".partial")
			if err == nil && st.Size() >= min && st.Size() < blob.Size {
				return n
			}
		}
		select {
		case errs := <-pulls:
			t.Fatalf("the pulls ended (%v) before any egress node was seen mid-blob", errors.Join(errs...))
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no egress node downloaded %d bytes of %s within 2 minutes", min, blob.Digest)
	return nil
}

// seederWatch polls every node's view of a blob's seeders and records any
// member listed complete while it did not hold the whole blob: neither its
// containerd (which commits only verified content) nor its verified egress
// spool had it.
type seederWatch struct {
	mu       sync.Mutex
	excluded map[string]bool
	checked  map[string]bool // a check began
	verified map[string]bool // a check ended well
	bad      []string
	quit     chan struct{}
	finished chan struct{}
}

func watchSeeders(nodes []*testenv.Node, blob testenv.Blob) *seederWatch {
	w := &seederWatch{excluded: map[string]bool{}, checked: map[string]bool{}, verified: map[string]bool{}, quit: make(chan struct{}), finished: make(chan struct{})}
	byAddr := map[string]*testenv.Node{}
	for _, n := range nodes {
		byAddr[n.HTTPAddr] = n
	}
	client := nodes[0].Client(5 * time.Second) // one cluster, one key
	go func() {
		defer close(w.finished)
		for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); {
			for _, asked := range nodes {
				if w.isExcluded(asked.Name) {
					continue
				}
				list, err := seedersVia(client, asked, blob.Digest)
				if err != nil {
					continue // a node being killed; the next round asks again
				}
				for _, s := range list {
					if s.Complete {
						w.check(asked, byAddr[s.HTTPAddr], s, blob)
					}
				}
			}
			select {
			case <-w.quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

// check verifies, the first time a member is listed complete, that it
// serves the whole blob with the right digest from its peer endpoint (a
// killed member: that it left a verified spool behind).
func (w *seederWatch) check(asked, n *testenv.Node, s seeder, blob testenv.Blob) {
	w.mu.Lock()
	seen := w.checked[s.HTTPAddr]
	w.checked[s.HTTPAddr] = true
	w.mu.Unlock()
	if seen {
		return
	}
	if n == nil {
		w.record(fmt.Sprintf("%s lists an unknown member %s as a complete seeder of %s", asked.Name, s.HTTPAddr, blob.Digest))
		return
	}
	err := peerBlobVerified(asked, n, blob)
	if err == nil {
		w.mu.Lock()
		w.verified[s.HTTPAddr] = true
		w.mu.Unlock()
		return
	}
	if errors.Is(err, errNotMemberYet) {
		// Right after a partition heals one side may list the other
		// before the other takes it back as a member; ask again later.
		w.mu.Lock()
		delete(w.checked, s.HTTPAddr)
		w.mu.Unlock()
		return
	}
	if w.isExcluded(n.Name) {
		if st, serr := os.Stat(spoolPath(n, blob.Digest)); serr == nil && st.Size() == blob.Size {
			return
		}
	}
	w.record(fmt.Sprintf("%s lists %s as a complete seeder of %s, but it does not hold the blob: %v", asked.Name, n.Name, blob.Digest, err))
}

// errNotMemberYet is a peer endpoint's 403: it does not count the asking
// node as a member (yet).
var errNotMemberYet = errors.New("the peer does not count the asker as a member")

// peerBlobVerified GETs blob from n's peer endpoint as member `as` would
// (from its address, with the no-forward header) and checks every byte.
func peerBlobVerified(as, n *testenv.Node, blob testenv.Blob) error {
	dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(as.IP)}}
	transport := &http.Transport{DialContext: dialer.DialContext}
	client := &http.Client{Transport: &peerauth.Transport{Base: transport, Keys: as.Key.Keys, Node: as.Name}}
	defer transport.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/peer/v1/blobs/"+blob.Digest.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Dregistry-No-Forward", "1")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusForbidden:
		return fmt.Errorf("peer GET: %s: %w", resp.Status, errNotMemberYet)
	default:
		return fmt.Errorf("peer GET: %s", resp.Status)
	}
	v := blob.Digest.Verifier()
	got, err := io.Copy(v, resp.Body)
	if err != nil || got != blob.Size || !v.Verified() {
		return fmt.Errorf("peer GET: %d of %d bytes, digest verified %v, err %v", got, blob.Size, v.Verified(), err)
	}
	return nil
}

func (w *seederWatch) record(msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bad = append(w.bad, msg)
}

// hasChecked reports whether the watch has seen a complete seeder at
// httpAddr and read the whole verified blob from it (a test may then kill
// it without cutting a check short).
func (w *seederWatch) hasChecked(httpAddr string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.verified[httpAddr]
}

// exclude stops asking n (killed) for its view.
func (w *seederWatch) exclude(n *testenv.Node) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.excluded[n.Name] = true
}

func (w *seederWatch) isExcluded(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.excluded[name]
}

func (w *seederWatch) stop() {
	close(w.quit)
	<-w.finished
}

func (w *seederWatch) violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.bad...)
}

// seedersVia is seeders() for a goroutine: it returns the error instead of
// failing the test.
func seedersVia(client *http.Client, n *testenv.Node, d digest.Digest) ([]seeder, error) {
	resp, err := client.Get(n.URL() + "/admin/v1/seeders/" + d.String())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: seeders of %s: %s", n.Name, d, resp.Status)
	}
	var out []seeder
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}
