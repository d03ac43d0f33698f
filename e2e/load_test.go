package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 7, case 9: many concurrent pulls of many images for a bounded time;
// every pull succeeds with the right digests, the daemons' memory stays
// flat and their goroutines return to the warm-up figure once load stops.

const (
	// loadDurationEnv / loadPullersEnv lengthen the run or raise the
	// concurrency for a local soak (e.g. DREGISTRY_LOAD_DURATION=30m).
	loadDurationEnv = "DREGISTRY_LOAD_DURATION"
	loadPullersEnv  = "DREGISTRY_LOAD_PULLERS"
	// loadKeepLogsEnv names a directory the daemons' logs are copied to at
	// the end (the test's temp dirs are removed), to study a failure.
	loadKeepLogsEnv     = "DREGISTRY_LOAD_KEEP_LOGS"
	defaultLoadDuration = 90 * time.Second
	defaultLoadPullers  = 3
	// maxPullsPerWorker bounds each worker's loop in count, beside time.
	maxPullsPerWorker = 100000
	// settleTimeout bounds the wait for goroutines and RSS to come back
	// after load.
	settleTimeout = 90 * time.Second
	// goroutineSlack is how many more goroutines than after warm-up a
	// settled daemon may run (idle peer connections, timers).
	goroutineSlack = 50
	// A settled daemon's RSS may be at most rssGrowth times its warm-up
	// figure plus rssSlack (buffers a busy daemon keeps, the Go runtime's
	// lag in returning memory) before the test calls it a leak.
	rssGrowth   = 1.3
	rssSlack    = 20 << 20
	sampleEvery = 5 * time.Second
)

func TestLoadManyConcurrentPullsKeepDaemonsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: four nodes under minutes of concurrent pulls")
	}
	testenv.RequireRoot(t)
	duration := loadEnvDuration(t, loadDurationEnv, defaultLoadDuration)
	pullers := loadEnvInt(t, loadPullersEnv, defaultLoadPullers)

	up := testenv.StartRegistry(t, testenv.LoopbackIP(40)+":5500")
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 4, Upstream: up, Args: egressFirst(1)})
	waitEgressKnown(t, up, nodes, nodes[:1])
	images := pushLoadImages(t, up)

	workers := make([]*loadWorker, 0, len(nodes)*pullers)
	for _, n := range nodes {
		for k := range pullers {
			workers = append(workers, &loadWorker{node: n, ns: fmt.Sprintf("load-%d", k)})
		}
	}
	// Warm-up: every node pulls every image once, so each daemon has met
	// every blob before the figures are taken.
	runWorkers(workers, func(w *loadWorker, i int) {
		for j := i % pullers; j < len(images); j += pullers {
			w.pullOnce(t, images[j])
		}
	})
	warm := loadWorkerTotals(workers)
	if warm.failures > 0 {
		t.Fatalf("warm-up: %d of %d pulls failed:\n%s", warm.failures, warm.pulls, strings.Join(warm.errors, "\n"))
	}
	before := sampleNodes(t, nodes)
	// The seeder watch follows the most shared layer (every image built on
	// base-a has it) and the largest stand-alone one through the load.
	var watches []*seederWatch
	for _, b := range []testenv.Blob{images[0].Layers[0], images[len(images)-2].Layers[0]} {
		watches = append(watches, watchSeeders(nodes, b))
	}

	sampler := startSampler(nodes)
	deadline := time.Now().Add(duration)
	runWorkers(workers, func(w *loadWorker, i int) {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
		for range maxPullsPerWorker {
			if time.Now().After(deadline) {
				return
			}
			w.pullOnce(t, images[rng.IntN(len(images))])
		}
	})
	peak := sampler.stop()
	total := loadWorkerTotals(workers)

	// Settle: seeding goes on, transfers end; wait (bounded) for each
	// daemon's goroutines to come back within the slack.
	settleStart := time.Now()
	after := settleNodes(t, nodes, before)
	t.Logf("settled in %s", time.Since(settleStart).Round(time.Second))

	for _, w := range watches {
		w.stop()
		for _, v := range w.violations() {
			t.Error(v)
		}
		if len(w.verifiedSeeders()) == 0 {
			t.Errorf("the seeder watch of %s never read the whole blob from a seeder", w.blob.Digest)
		}
	}
	reqs := up.Requests(t)
	if dir := os.Getenv(loadKeepLogsEnv); dir != "" {
		keepLogs(t, dir, nodes)
	}
	logLoadFigures(t, nodes, images, reqs, duration, pullers, warm, total, before, peak, after)

	if total.failures > 0 {
		t.Errorf("%d of %d pulls failed (first %d):\n%s", total.failures, total.pulls, len(total.errors), strings.Join(total.errors, "\n"))
	}
	if total.pulls-warm.pulls == 0 {
		t.Errorf("no pull ran in the load window of %s", duration)
	}
	if direct := testenv.FromContainerd(reqs); len(direct) > 0 {
		t.Errorf("containerd went to the upstream itself %d times (dregistry failed it), first: %+v", len(direct), direct[0])
	}
	for i, n := range nodes {
		b, a := before[i], after[i]
		if b.err != nil || a.err != nil {
			t.Errorf("%s: figures unavailable: before %v, after %v", n.Name, b.err, a.err)
			continue
		}
		if bound := rssBound(b.rss); a.rss > bound {
			t.Errorf("%s: RSS grew from %s to %s under load, more than %.1fx + %s = %s: memory is not flat", n.Name, mib(b.rss), mib(a.rss), rssGrowth, mib(rssSlack), mib(bound))
		}
		if a.goroutines > b.goroutines+goroutineSlack {
			t.Errorf("%s: %d goroutines %s after the load stopped, %d after warm-up: leak", n.Name, a.goroutines, settleTimeout, b.goroutines)
		}
	}
}

// loadWorker pulls images one at a time into its own containerd namespace
// on one node and removes each again, so the next pull of it goes through
// dregistry instead of finding it in place.
type loadWorker struct {
	node *testenv.Node
	ns   string

	pulls, failures atomic.Int64
	bytes           atomic.Int64 // image bytes of successful pulls
	mu              sync.Mutex
	errors          []string // the first few
}

// maxLoggedErrors caps the failure messages kept per worker.
const maxLoggedErrors = 3

func (w *loadWorker) pullOnce(t *testing.T, img testenv.Image) {
	w.pulls.Add(1)
	err := w.pullAndCheck(t, img)
	if rmErr := w.remove(t, img); err == nil {
		err = rmErr
	}
	if err != nil {
		w.failures.Add(1)
		w.mu.Lock()
		if len(w.errors) < maxLoggedErrors {
			w.errors = append(w.errors, fmt.Sprintf("%s/%s %s: %v", w.node.Name, w.ns, img.Ref, err))
		}
		w.mu.Unlock()
		return
	}
	w.bytes.Add(imageBytes(img))
}

// pullAndCheck pulls img and checks the tag names the pushed manifest and
// every blob is committed (containerd commits content only once its digest
// matched).
func (w *loadWorker) pullAndCheck(t *testing.T, img testenv.Image) error {
	if out, err := w.node.TryPullIn(t, w.ns, img.Ref); err != nil {
		return fmt.Errorf("pull: %w: %s", err, lastLines(out, 3))
	}
	out, err := w.node.Containerd.Ctr(t, "-n", w.ns, "images", "ls")
	if err != nil {
		return err
	}
	target := ""
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == img.Ref {
			target = f[2]
		}
	}
	if target != img.Manifest.Digest.String() {
		return fmt.Errorf("image %s points at %q, pushed %s", img.Ref, target, img.Manifest.Digest)
	}
	out, err = w.node.Containerd.Ctr(t, "-n", w.ns, "content", "ls", "-q")
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, d := range strings.Fields(out) {
		have[d] = true
	}
	for _, b := range append([]testenv.Blob{img.Manifest}, img.Blobs()...) {
		if !have[b.Digest.String()] {
			return fmt.Errorf("containerd lacks %s (%s) after the pull", b.Digest, b.MediaType)
		}
	}
	return nil
}

// remove deletes the image and its content from the worker's namespace
// (the image delete with --sync runs containerd's GC, taking the snapshots).
func (w *loadWorker) remove(t *testing.T, img testenv.Image) error {
	if out, err := w.node.Containerd.Ctr(t, "-n", w.ns, "images", "rm", "--sync", img.Ref); err != nil &&
		!strings.Contains(out, "not found") {
		return fmt.Errorf("images rm: %w", err)
	}
	args := []string{"-n", w.ns, "content", "rm"}
	for _, b := range append([]testenv.Blob{img.Manifest}, img.Blobs()...) {
		args = append(args, b.Digest.String())
	}
	// GC has usually taken them already; what is left goes now.
	if out, err := w.node.Containerd.Ctr(t, args...); err != nil && !strings.Contains(out, "not found") {
		return fmt.Errorf("content rm: %w", err)
	}
	return nil
}

// runWorkers runs do on every worker at once and waits for all.
func runWorkers(workers []*loadWorker, do func(w *loadWorker, i int)) {
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(w, i)
		}()
	}
	wg.Wait()
}

type loadTotals struct {
	pulls, failures, bytes int64
	errors                 []string
}

func loadWorkerTotals(workers []*loadWorker) loadTotals {
	var s loadTotals
	for _, w := range workers {
		s.pulls += w.pulls.Load()
		s.failures += w.failures.Load()
		s.bytes += w.bytes.Load()
		w.mu.Lock()
		s.errors = append(s.errors, w.errors...)
		w.mu.Unlock()
	}
	return s
}

// pushLoadImages pushes 20 images, about 130 MiB of distinct blobs: two
// base images with others built on them (shared base layers), busybox
// images sharing the busybox layer, and two stand-alone ones.
func pushLoadImages(t *testing.T, up *testenv.Registry) []testenv.Image {
	t.Helper()
	baseA := up.Push(t, testenv.ImageSpec{Repo: "load/base-a", Tag: "v1", LayerSizes: []int64{24 << 20}, Uncompressed: true})
	baseB := up.Push(t, testenv.ImageSpec{Repo: "load/base-b", Tag: "v1", LayerSizes: []int64{8 << 20, 2 << 20}, Uncompressed: true})
	images := []testenv.Image{baseA, baseB}
	for i, own := range []int64{1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20} {
		images = append(images, pushOnBase(t, up, baseA, fmt.Sprintf("load/on-a-%d", i), own))
	}
	for i, own := range []int64{512 << 10, 1 << 20, 2 << 20, 3 << 20, 4 << 20} {
		images = append(images, pushOnBase(t, up, baseB, fmt.Sprintf("load/on-b-%d", i), own, 256<<10))
	}
	for i, pad := range []int64{1 << 20, 2 << 20, 3 << 20, 4 << 20, 6 << 20, 8 << 20} {
		images = append(images, testenv.PushBusybox(t, up, fmt.Sprintf("load/busybox-%d", i), "v1", pad))
	}
	images = append(images,
		up.Push(t, testenv.ImageSpec{Repo: "load/medium", Tag: "v1", LayerSizes: []int64{32 << 20}, Uncompressed: true}),
		up.Push(t, testenv.ImageSpec{Repo: "load/small", Tag: "v1", LayerSizes: []int64{64 << 10, 128 << 10}, Format: testenv.Docker}),
	)
	return images
}

// pushOnBase pushes base plus one uncompressed random layer per size as
// up/repo:v1: the base's layers are then shared by every image built on it.
func pushOnBase(t *testing.T, up *testenv.Registry, base testenv.Image, repo string, sizes ...int64) testenv.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	baseRef, err := name.ParseReference(base.Ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(baseRef, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("read base %s: %v", base.Ref, err)
	}
	for _, size := range sizes {
		layer, err := randomTarLayer(size)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	ref, err := name.ParseReference(up.Addr+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	out, err := describeLoadImage(img)
	if err != nil {
		t.Fatalf("describe %s: %v", ref, err)
	}
	out.Ref, out.Registry, out.Repo, out.Tag = ref.String(), up.Addr, repo, "v1"
	return out
}

// randomTarLayer is an uncompressed tar layer holding one random file.
func randomTarLayer(size int64) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "random", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		return nil, err
	}
	if _, err := io.CopyN(tw, crand.Reader, size); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer), nil
}

func describeLoadImage(img v1.Image) (testenv.Image, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return testenv.Image{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return testenv.Image{}, err
	}
	out := testenv.Image{
		Manifest:      testenv.Blob{Digest: digest.FromBytes(raw), Size: int64(len(raw)), MediaType: string(m.MediaType)},
		Config:        testenv.Blob{Digest: digest.Digest(m.Config.Digest.String()), Size: m.Config.Size, MediaType: string(m.Config.MediaType)},
		ManifestBytes: raw,
	}
	for _, l := range m.Layers {
		out.Layers = append(out.Layers, testenv.Blob{Digest: digest.Digest(l.Digest.String()), Size: l.Size, MediaType: string(l.MediaType)})
	}
	return out, nil
}

// nodeFigures is one daemon's resident memory and goroutine count.
type nodeFigures struct {
	rss        int64
	goroutines int
	err        error
}

func sampleNodes(t *testing.T, nodes []*testenv.Node) []nodeFigures {
	t.Helper()
	out := make([]nodeFigures, len(nodes))
	for i, n := range nodes {
		out[i] = sampleNode(n)
	}
	return out
}

// sampleNode reads VmRSS from /proc and go_goroutines from /metrics.
func sampleNode(n *testenv.Node) nodeFigures {
	var f nodeFigures
	if f.rss, f.err = vmRSS(n.Pid()); f.err != nil {
		return f
	}
	f.goroutines, f.err = scrapeGoroutines(n)
	return f
}

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

func scrapeGoroutines(n *testenv.Node) (int, error) {
	r, err := getURL(n.URL() + "/metrics")
	if err != nil {
		return 0, err
	}
	if r.Status != http.StatusOK {
		return 0, fmt.Errorf("/metrics: status %d", r.Status)
	}
	v := metricValue(string(r.Body), "go_goroutines")
	if v < 0 {
		return 0, errors.New("/metrics has no go_goroutines")
	}
	return int(v), nil
}

// sampler records each daemon's peak figures while the load runs.
type sampler struct {
	done chan struct{}
	out  chan []nodeFigures
}

func startSampler(nodes []*testenv.Node) *sampler {
	s := &sampler{done: make(chan struct{}), out: make(chan []nodeFigures, 1)}
	go func() {
		peak := make([]nodeFigures, len(nodes))
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-s.done:
				s.out <- peak
				return
			case <-tick.C:
			}
			for i, n := range nodes {
				f := sampleNode(n)
				if f.err != nil {
					continue
				}
				peak[i].rss = max(peak[i].rss, f.rss)
				peak[i].goroutines = max(peak[i].goroutines, f.goroutines)
			}
		}
	}()
	return s
}

func (s *sampler) stop() []nodeFigures {
	close(s.done)
	return <-s.out
}

// settleNodes waits, up to settleTimeout, until every daemon runs at most
// goroutineSlack goroutines more than before and holds at most rssBound of
// its warm-up RSS (the runtime returns freed memory over minutes, not at
// once), and returns the last figures.
func settleNodes(t *testing.T, nodes []*testenv.Node, before []nodeFigures) []nodeFigures {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for {
		after := sampleNodes(t, nodes)
		settled := true
		for i := range nodes {
			if after[i].err != nil || after[i].goroutines > before[i].goroutines+goroutineSlack || after[i].rss > rssBound(before[i].rss) {
				settled = false
			}
		}
		if settled || time.Now().After(deadline) {
			return after
		}
		time.Sleep(time.Second)
	}
}

// rssBound is the most RSS a settled daemon may hold after a warm-up figure.
func rssBound(warm int64) int64 { return int64(float64(warm)*rssGrowth) + rssSlack }

func logLoadFigures(t *testing.T, nodes []*testenv.Node, images []testenv.Image, reqs []testenv.Request, duration time.Duration,
	pullers int, warm, total loadTotals, before, peak, after []nodeFigures) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "load: %d nodes x %d pullers, %d images, %s window\n", len(nodes), pullers, len(images), duration)
	fmt.Fprintf(&b, "pulls: %d warm-up + %d under load, %d failed; %s pulled by containerd in all\n",
		warm.pulls, total.pulls-warm.pulls, total.failures, mib(total.bytes))
	fmt.Fprintf(&b, "%-6s %12s %12s %12s %8s %8s %8s %8s  %s\n", "node", "RSS warm", "RSS peak", "RSS after", "gr warm", "gr peak", "gr after", "aborted", "served by source")
	for i, n := range nodes {
		served := n.Served(t)
		bySource := testenv.BytesBySource(served)
		var parts []string
		for _, k := range sortedKeys(bySource) {
			parts = append(parts, k+"="+mib(bySource[k]))
		}
		// Responses cut off mid-body (a stalled source): containerd then
		// resumes elsewhere, the upstream itself if dregistry keeps failing.
		aborted := 0
		for _, s := range served {
			if s.Aborted {
				aborted++
			}
		}
		fmt.Fprintf(&b, "%-6s %12s %12s %12s %8d %8d %8d %8d  %s\n", n.Name, mib(before[i].rss), mib(peak[i].rss), mib(after[i].rss),
			before[i].goroutines, peak[i].goroutines, after[i].goroutines, aborted, strings.Join(parts, " "))
	}
	unique := map[digest.Digest]int64{}
	for _, img := range images {
		for _, bl := range append([]testenv.Blob{img.Manifest}, img.Blobs()...) {
			unique[bl.Digest] = bl.Size
		}
	}
	var imageBytes, upBlobs, upAll int64
	for _, s := range unique {
		imageBytes += s
	}
	blobGets := 0
	for _, q := range reqs {
		upAll += q.Bytes
		if q.Method == http.MethodGet && strings.Contains(q.Path, "/blobs/") {
			upBlobs += q.Bytes
			blobGets++
		}
	}
	// Every pull deletes what it fetched, so a blob no node holds any more
	// comes from the upstream again: the ratio to distinct content measures
	// that churn, the ratio to pulled bytes what the cluster saved.
	fmt.Fprintf(&b, "upstream: %s of blobs in %d GETs (%s in all); %.2fx the %s of distinct image content (%d blobs), %.3fx the bytes pulled\n",
		mib(upBlobs), blobGets, mib(upAll), float64(upBlobs)/float64(imageBytes), mib(imageBytes), len(unique),
		float64(upBlobs)/float64(max(total.bytes, 1)))
	t.Log(b.String())
}

// keepLogs copies each daemon's log to dir/<node>.log.
func keepLogs(t *testing.T, dir string, nodes []*testenv.Node) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("$%s: %v", loadKeepLogsEnv, err)
		return
	}
	for _, n := range nodes {
		b, err := os.ReadFile(n.LogPath)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, n.Name+".log"), b, 0o644)
		}
		if err != nil {
			t.Errorf("keep %s's log: %v", n.Name, err)
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }

func loadEnvDuration(t *testing.T, env string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("$%s=%q: want a positive duration such as 10m", env, v)
	}
	return d
}

func loadEnvInt(t *testing.T, env string, def int) int {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 16 {
		t.Fatalf("$%s=%q: want 1..16", env, v)
	}
	return n
}
