package e2e

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 13: a cold rollout is a swarm, not a star. The egress owner seeds a
// new blob while it still arrives from the upstream, chunk by chunk, and
// the nodes waiting for it follow it in the swarm, trading its pieces with
// each other instead of each streaming the whole blob from the owner.
func TestColdRolloutFollowersTradePiecesWhileTheOwnerFetches(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts four nodes and a rate-capped upstream")
	}
	testenv.RequireRoot(t)
	// At 200 Mbit/s the 96 MiB layer takes about 4 s to leave the upstream:
	// its first chunks are published, and traded, while the rest arrives.
	up, _, nodes := egressCluster(t, "pipe", 4)
	owner, followers := nodes[0], nodes[1:]

	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/pipeline", Tag: "v1", LayerSizes: []int64{96 << 20}, Uncompressed: true})
	layer := img.Layers[0]

	w := watchTrades(t, owner, followers, layer)
	reqs := fetchLayerOnce(t, up, nodes, img, w.stop)
	if gets := blobGETs(reqs, layer.Digest); len(gets) != 1 {
		t.Errorf("upstream answered %d GETs of the layer, want one: %+v", len(gets), gets)
	}

	// Where each follower's pieces came from, by peer: the followers got
	// bytes from each other, not only from the owner, and some of them
	// while the owner was still fetching the layer.
	ownerIP := owner.IP
	var fromFollowers int64
	for _, f := range followers {
		st, ok, err := torrentOf(f, layer.Digest)
		if err != nil || !ok {
			t.Fatalf("%s: no torrent of the layer in /admin/v1/torrents (%v)", f.Name, err)
		}
		t.Logf("%s received %s", f.Name, describeReceived(st.ReceivedFrom, nodes))
		for ip, n := range st.ReceivedFrom {
			if ip != ownerIP {
				fromFollowers += n
			}
		}
	}
	if fromFollowers == 0 {
		t.Error("no follower received a byte of the layer from another follower: the owner served every copy (a star)")
	}
	early := w.result()
	t.Logf("while the owner's download was partial: %s", early)
	if early.fromFollowers == 0 {
		t.Errorf("no follower had received bytes from another follower while the owner still fetched the layer (%d polls, %d while partial)",
			early.polls, early.partialPolls)
	}
}

// tradeWatch polls the followers' torrents while the owner's egress
// download of a blob is still partial.
type tradeWatch struct {
	done chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex
	early earlyTrades
}

// earlyTrades is what the followers had received from each other while
// the owner's spool was still partial.
type earlyTrades struct {
	polls, partialPolls int
	fromFollowers       int64 // the most seen at once, summed over followers
}

func (e earlyTrades) String() string {
	return fmt.Sprintf("%d bytes between followers (%d of %d polls during the download)", e.fromFollowers, e.partialPolls, e.polls)
}

func watchTrades(t *testing.T, owner *testenv.Node, followers []*testenv.Node, blob testenv.Blob) *tradeWatch {
	w := &tradeWatch{done: make(chan struct{})}
	partial := spoolPath(owner, blob.Digest) + ".partial"
	stillPartial := func() bool {
		st, err := os.Stat(partial)
		return err == nil && st.Size() < blob.Size
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		// Bounded by the fetch's own timeout; stop ends it sooner.
		deadline := time.After(coldFetchTimeout)
		for {
			select {
			case <-w.done:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			// The spool is checked before and after the torrents are
			// read, so what was read was received while it was partial.
			before := stillPartial()
			var sum int64
			for _, f := range followers {
				st, ok, err := torrentOf(f, blob.Digest)
				if err != nil || !ok {
					continue
				}
				for ip, n := range st.ReceivedFrom {
					if ip != owner.IP {
						sum += n
					}
				}
			}
			during := before && stillPartial()
			w.mu.Lock()
			w.early.polls++
			if during {
				w.early.partialPolls++
				w.early.fromFollowers = max(w.early.fromFollowers, sum)
			}
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *tradeWatch) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
}

func (w *tradeWatch) result() earlyTrades {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.early
}

// describeReceived names the peers of a ReceivedFrom map by node.
func describeReceived(from map[string]int64, nodes []*testenv.Node) string {
	name := map[string]string{}
	for _, n := range nodes {
		name[n.IP] = n.Name
		if host, _, err := net.SplitHostPort(n.TorrentAddr); err == nil {
			name[host] = n.Name
		}
	}
	var parts []string
	for ip, n := range from {
		who := name[ip]
		if who == "" {
			who = ip
		}
		parts = append(parts, fmt.Sprintf("%s: %.1f MiB", who, float64(n)/(1<<20)))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ", ") + "}"
}

// An upstream too slow for a first chunk within containerd's wait for the
// headers (30 s): at 3 Mbit/s the 16 MiB chunk 0 takes about 45 s. The
// followers' handlers send the headers while it comes, containerd keeps
// waiting, and no follower leaves the swarm for the owner's stream (the
// egress's former limit on the first byte made each do so at 25 s) or
// containerd for the upstream.
func TestFollowersWaitOutASlowFirstChunk(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts three nodes and an upstream capped at 3 Mbit/s")
	}
	testenv.RequireRoot(t)
	up, link, nodes := egressCluster(t, "slow1", 3)
	followers := nodes[1:]
	// One chunk and a bit: the whole pull is chunk 0's wait, and then 1 MiB.
	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/slow-first-chunk", Tag: "v1", LayerSizes: []int64{17 << 20}, Uncompressed: true})
	if err := link.LimitQueue(false, 3_000_000, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	fetchLayerOnce(t, up, followers, img, nil)
	for _, n := range followers {
		log, err := os.ReadFile(n.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(log), "headers sent before it") {
			t.Errorf("%s sent no headers before a first byte: the premise (a first chunk slower than 30 s) did not hold", n.Name)
		}
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(line, "streaming it from the owner") || strings.Contains(line, "streaming the rest from the owners") {
				t.Errorf("%s left the swarm for the owner's stream: %s", n.Name, line)
			}
		}
	}
}

// fetchLayerOnce makes nodes fetch img's one layer at once through
// dregistry (ended, if set, runs as soon as the fetches end), and checks
// that each holds the image, that the upstream sent the layer exactly once
// for the cluster, and that containerd never went there itself. It returns
// the upstream's requests.
func fetchLayerOnce(t *testing.T, up *testenv.Registry, nodes []*testenv.Node, img testenv.Image, ended func()) []testenv.Request {
	t.Helper()
	layer := img.Layers[0]
	errs, took := atOnce(len(nodes), func(i int) error { return contentFetch(nodes[i], img.Ref, fetchViaDregistry) })
	if ended != nil {
		ended()
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", nodes[i].Name, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d nodes fetched the %d MiB layer at once in %s", len(nodes), layer.Size>>20, took.Round(10*time.Millisecond))
	for _, n := range nodes {
		checkHolds(t, n, img.Blobs())
	}
	reqs := up.Requests(t)
	if n := testenv.BlobSends(reqs, layer.Digest, layer.Size); n != 1 {
		t.Errorf("upstream sent the layer %d times, want exactly once for the cluster", n)
	}
	if direct := testenv.FromContainerd(reqs); len(direct) > 0 {
		t.Errorf("containerd contacted the upstream itself %d times, first: %+v", len(direct), direct[0])
	}
	return reqs
}

// egressCluster starts an upstream in its own namespace, its link capped
// at 200 Mbit/s (id names it), and n nodes, the first an egress node that
// every node knows as one.
func egressCluster(t *testing.T, id string, n int) (*testenv.Registry, *testenv.Link, []*testenv.Node) {
	t.Helper()
	up, link := testenv.StartShapedRegistry(t, id, 200_000_000)
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: n, Upstream: up, Args: egressFirst(1)})
	waitEgressKnown(t, up, nodes, nodes[:1])
	return up, link, nodes
}
