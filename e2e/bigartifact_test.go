package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
	"github.com/dregistry/dregistry/swarm"
)

// Issue 15, item 3: big artifacts — model weights pushed with ORAS as an
// OCI artifact whose one layer is many GiB, pulled on several nodes with
// `ctr content fetch` (an artifact is not unpackable, so containerd only
// fetches it; containerd 1.6 fetches a manifest's config and layers
// whatever their media types).
const (
	bigLayerSize = 4 << 30
	// bigRSSLimit is what one daemon may hold while 4 GiB pass through it.
	// A daemon that buffered the blob, or a chunk window of it per peer,
	// would pass it; an idle daemon holds about 40 MiB.
	bigRSSLimit = 512 << 20
	// bigKillAfter is how much of the layer the crashed node holds verified
	// when it is killed.
	bigKillAfter = 384 << 20
	// bigTimeout bounds each fetch and the crashed node's GET.
	bigTimeout = 10 * time.Minute
	// bigSample is how often RSS and the data dirs are read.
	bigSample = 100 * time.Millisecond
)

// The cache sizes of the test. A swarm download is admitted whole (each
// chunk's data file is allocated at full length before the first byte is
// served, so a full disk falls back before answering 200) and the egress
// spool is admitted with Force (it must be written to be served at all):
// a node that downloads the layer through the swarm, and the egress that
// fetches it, need a --cache-size of the layer plus its marks and metainfo
// (a 4 KiB marks file per 32 MiB chunk, 40 KiB of piece hashes). With
// 2 GiB the egress would hold 4 GiB over its limit and no node could keep a
// piece, so nothing could resume. So nodes 1 and 2 get 4.5 GiB, and node 3
// gets 2 GiB, less than the layer: it cannot keep a download and streams
// the layer from the egress without keeping it.
const (
	bigCacheSize   = "4.5GiB"
	bigCacheBytes  = 4608 << 20
	smallCacheSize = "2GiB"
	smallCacheByte = 2 << 30
)

// bigArtifact is the artifact of the test and the benchmark.
func bigArtifact(repo string, seed uint64) testenv.ArtifactSpec {
	return testenv.ArtifactSpec{
		Repo: repo, Tag: "v1", ArtifactType: "application/vnd.example.model.v1",
		LayerMediaType: "application/vnd.example.model.weights.v1.tar", LayerSize: bigLayerSize, Seed: seed,
	}
}

// TestBigArtifact pushes an artifact with a 4 GiB layer and fetches it on 3
// nodes at once through their mirrors (node 1 is the egress). Node 2 is
// killed with SIGKILL once it holds some hundreds of MiB verified,
// restarted on the same data dir, and fetches again: it receives at most
// what it lacked. Checked: the upstream sent each blob once (1.00x), each
// daemon's RSS stayed under bigRSSLimit and each data dir within its
// --cache-size, sampled every bigSample throughout.
func TestBigArtifact(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: pushes a 4 GiB artifact and starts three nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(7)+":5500")
	pushed := time.Now()
	art := up.PushArtifact(t, bigArtifact("e2e/model", 15))
	layer := art.Layers[0]
	t.Logf("pushed %s: layer %s of %d bytes in %.1f s", art.Ref, layer.Digest, layer.Size, time.Since(pushed).Seconds())

	limits := []int64{bigCacheBytes, bigCacheBytes, smallCacheByte}
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 3, Upstream: up, Args: func(i int) []string {
		args := []string{"--cache-size", bigCacheSize}
		switch i {
		case 0:
			args = append(args, "--egress")
		case 2:
			args = []string{"--cache-size", smallCacheSize}
		}
		return args
	}})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	// Every node knows the egress before the fetches, so none takes the
	// upstream itself for want of one.
	warm := waitEgressKnown(t, up, nodes, []*testenv.Node{n1})

	watch := watchResources(nodes)
	defer watch.stop()
	began := time.Now()
	fetches := map[*testenv.Node]<-chan fetchResult{n1: fetchAsync(n1, art.Ref), n3: fetchAsync(n3, art.Ref)}

	// Node 2 first asks its mirror for the layer with a GET as containerd
	// sends it, not through containerd: containerd would take the upstream
	// once the mirror died (hosts.toml keeps it as the last host), right
	// for a user and not what this test counts.
	got := make(chan error, 1)
	go func() { got <- getBody(n2, n2.URL()+"/v2/"+art.Repo+"/blobs/"+layer.Digest.String()+"?ns="+up.Addr) }()
	st := waitDownloading(t, n2, layer, bigKillAfter, got)
	watch.setPid(1, 0)
	n2.Kill(t)
	had := verifiedOnDisk(t, n2, layer)
	t.Logf("%s killed %.1f s in, holding %d of %d bytes (%d verified on disk)", n2.Name, time.Since(began).Seconds(), st.BytesCompleted, layer.Size, had)
	// The torrent's count includes pieces in flight, the marks do not.
	if had < bigKillAfter/2 {
		t.Fatalf("%s's download marks %d bytes verified on disk after the kill, its torrent said %d", n2.Name, had, st.BytesCompleted)
	}
	n2.Start(t)
	watch.setPid(1, n2.Pid())
	waitEgressListed(t, []*testenv.Node{n2}, []*testenv.Node{n1}, warm)
	fetches[n2] = fetchAsync(n2, art.Ref)

	for _, n := range nodes {
		r := <-fetches[n]
		if r.err != nil {
			t.Fatalf("%s: %v", n.Name, r.err)
		}
		t.Logf("%s fetched %s in %.1f s", n.Name, art.Ref, r.took.Seconds())
	}
	t.Logf("all three fetched in %.1f s", time.Since(began).Seconds())
	peakRSS, peakDisk, samples := watch.stop()
	for _, n := range nodes {
		checkHolds(t, n, append([]testenv.Blob{art.Manifest}, art.Blobs()...))
	}

	// The upstream sent each blob once, and containerd never asked it.
	reqs := up.Requests(t)
	for _, b := range art.Blobs() {
		if gets := blobGETs(reqs, b.Digest); len(gets) > 1 || testenv.BlobSends(gets, b.Digest, b.Size) != len(gets) {
			t.Errorf("the upstream answered %+v for %s (%s), want at most one whole send", gets, b.Digest, b.MediaType)
		}
	}
	if testenv.BlobSends(reqs, layer.Digest, layer.Size) != 1 {
		t.Errorf("the upstream sent the layer %d times, want once", testenv.BlobSends(reqs, layer.Digest, layer.Size))
	}
	if containsRepo(testenv.FromContainerd(reqs), art.Repo) {
		t.Errorf("containerd went to the upstream itself: %+v", testenv.FromContainerd(reqs))
	}
	t.Logf("upstream bytes: %.2fx the artifact (%d of %d)", float64(upstreamBytes(reqs, art))/float64(imageBytes(art)), upstreamBytes(reqs, art), imageBytes(art))

	// Node 2 resumed: what it received after the restart is at most what
	// it lacked at the kill. Without the resume it would receive it all.
	after, ok, err := torrentOf(n2, layer.Digest)
	if err != nil || !ok {
		t.Fatalf("%s: no torrent of the layer after the fetch: %v", n2.Name, err)
	}
	var received int64
	for _, n := range after.ReceivedFrom {
		received += n
	}
	t.Logf("%s after the restart received %d bytes from %v; it lacked %d", n2.Name, received, after.ReceivedFrom, layer.Size-had)
	if received > layer.Size-had {
		t.Errorf("%s received %d bytes after the restart, more than the %d it lacked: the %d bytes it had were fetched again", n2.Name, received, layer.Size-had, had)
	}
	if logHas(t, n2, "failed their hash check", layer.Digest.String()) {
		t.Errorf("%s found verified pieces corrupt after the kill", n2.Name)
	}

	// Node 3's cache cannot hold the layer: it streamed it from the egress.
	var viaEgress int64
	for _, s := range n3.Served(t) {
		if strings.Contains(s.Path, layer.Digest.String()) && s.Method == http.MethodGet && s.Source == "egress" && !s.Aborted {
			viaEgress += s.Bytes
		}
	}
	if viaEgress < layer.Size {
		t.Errorf("%s served %d bytes of the layer through the egress stream, want all %d", n3.Name, viaEgress, layer.Size)
	}

	for i, n := range nodes {
		t.Logf("%s: max RSS %d MiB, data dir peak %d MiB of --cache-size %d MiB (%d samples)", n.Name, peakRSS[i]>>20, peakDisk[i]>>20, limits[i]>>20, samples)
		if peakRSS[i] > bigRSSLimit {
			t.Errorf("%s's dregistry reached %d MiB RSS, over %d MiB", n.Name, peakRSS[i]>>20, bigRSSLimit>>20)
		}
		if peakRSS[i] == 0 {
			t.Errorf("%s's RSS was never read", n.Name)
		}
		if peakDisk[i] > limits[i] {
			t.Errorf("%s's data dir held %d bytes, over its --cache-size of %d", n.Name, peakDisk[i], limits[i])
		}
	}
	if samples < 20 {
		t.Errorf("RSS and data dirs sampled %d times only", samples)
	}
}

// fetchResult is the end of one `ctr content fetch`.
type fetchResult struct {
	err  error
	took time.Duration
}

// fetchAsync runs `ctr content fetch` of ref through n's mirror.
func fetchAsync(n *testenv.Node, ref string) <-chan fetchResult {
	done := make(chan fetchResult, 1)
	go func() {
		start := time.Now()
		err := contentFetch(n, ref, fetchViaDregistry)
		done <- fetchResult{err: err, took: time.Since(start)}
	}()
	return done
}

// getBody GETs url from n as a member would and reads the body to its end
// (or until the daemon dies), within bigTimeout.
func getBody(n *testenv.Node, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), bigTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := n.Client(bigTimeout).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// verifiedOnDisk is the bytes of blob n's download marks verified in its
// chunks' marks files (infohash, then one byte per piece, 1 = verified).
func verifiedOnDisk(t *testing.T, n *testenv.Node, blob testenv.Blob) int64 {
	t.Helper()
	d := blob.Digest
	marks, err := filepath.Glob(filepath.Join(n.DataDir, "swarm", "downloads", d.Algorithm().String(), d.Encoded()+".*.pieces"))
	if err != nil {
		t.Fatal(err)
	}
	const infoHashSize = 20
	var pieces int64
	for _, m := range marks {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > infoHashSize {
			pieces += int64(bytes.Count(b[infoHashSize:], []byte{1}))
		}
	}
	// Every piece of a 4 GiB blob is whole: 4 GiB is a multiple of it.
	return pieces * swarm.PieceLength(blob.Size)
}

// resourceWatch samples each node's dregistry RSS (VmRSS) and the bytes
// its data dir holds until stop, keeping the peaks.
type resourceWatch struct {
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu      sync.Mutex
	pids    []int // 0 while a daemon is down
	dirs    []string
	rss     []int64
	disk    []int64
	samples int
}

func watchResources(nodes []*testenv.Node) *resourceWatch {
	w := &resourceWatch{done: make(chan struct{})}
	for _, n := range nodes {
		w.pids = append(w.pids, n.Pid())
		w.dirs = append(w.dirs, n.DataDir)
	}
	w.rss, w.disk = make([]int64, len(nodes)), make([]int64, len(nodes))
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(bigSample)
		defer tick.Stop()
		deadline := time.After(4 * bigTimeout) // stop ends it; so does this cap
		for {
			select {
			case <-w.done:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			w.sample()
		}
	}()
	return w
}

func (w *resourceWatch) sample() {
	w.mu.Lock()
	pids, dirs := append([]int(nil), w.pids...), w.dirs
	w.mu.Unlock()
	rss, disk := make([]int64, len(pids)), make([]int64, len(pids))
	for i, pid := range pids {
		if pid != 0 {
			rss[i], _ = vmRSS(pid) // 0 when it is gone: killed between samples
		}
		disk[i] = dirBytes(dirs[i])
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range pids {
		w.rss[i] = max(w.rss[i], rss[i])
		w.disk[i] = max(w.disk[i], disk[i])
	}
	w.samples++
}

// setPid names node i's daemon after a restart (0: down, not sampled).
func (w *resourceWatch) setPid(i, pid int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pids[i] = pid
}

// stop ends the sampling and returns the peaks and the number of samples.
func (w *resourceWatch) stop() (rss, disk []int64, samples int) {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int64(nil), w.rss...), append([]int64(nil), w.disk...), w.samples
}

// BenchmarkBigArtifact times 3 nodes fetching an artifact with a 4 GiB
// layer at once through dregistry (node 1 the egress, default cache size)
// against one node fetching it straight from the upstream; both with
// `ctr content fetch`. It reports the seconds of each and their ratio.
//
//	DREGISTRY_E2E=required go test -run '^$' -bench BigArtifact -benchtime 1x -timeout 30m ./e2e
func BenchmarkBigArtifact(b *testing.B) {
	testenv.RequireRoot(b)
	up := testenv.StartRegistry(b, testenv.LoopbackIP(7)+":5501")
	var direct, via time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		art := up.PushArtifact(b, bigArtifact("bench/model-"+strconv.Itoa(i), uint64(1500+i)))
		// The direct node goes first and is removed before the cluster
		// starts: the disk holds the layer 5 times at most, not 6.
		dir, err := os.MkdirTemp("", "bigdirect")
		if err != nil {
			b.Fatal(err)
		}
		ctd := testenv.StartContainerd(b, dir)
		b.StartTimer()
		d := fetchAll(b, []*testenv.Node{{Name: "direct", Containerd: ctd}}, art, fetchDirect)
		b.StopTimer()
		ctd.Stop(b)
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		nodes := testenv.StartCluster(b, testenv.ClusterConfig{Nodes: 3, Upstream: up, Args: func(i int) []string {
			if i == 0 {
				return []string{"--egress"}
			}
			return nil
		}})
		waitEgressKnown(b, up, nodes, nodes[:1])
		b.StartTimer()
		v := fetchAll(b, nodes, art, fetchViaDregistry)
		b.StopTimer()
		reqs := up.Requests(b)
		if n := testenv.BlobSends(reqs, art.Layers[0].Digest, art.Layers[0].Size); n != 2 {
			b.Errorf("the upstream sent the layer %d times, want twice (direct, then dregistry)", n)
		}
		for _, n := range nodes {
			n.Stop(b)
			n.Containerd.Stop(b)
		}
		direct, via = direct+d, via+v
		b.Logf("iteration %d: direct (1 node) %.1f s, dregistry (3 nodes) %.1f s, %.2fx", i, d.Seconds(), v.Seconds(), v.Seconds()/d.Seconds())
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(direct.Seconds()/n, "direct-s")
	b.ReportMetric(via.Seconds()/n, "dregistry-3-nodes-s")
	b.ReportMetric(via.Seconds()/direct.Seconds(), "dregistry/direct")
}
