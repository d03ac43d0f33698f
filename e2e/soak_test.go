package e2e

import (
	"encoding/csv"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 14, item 6: the soak. Four nodes (node1 the egress), each with a
// 96 MiB --cache-size, pull a rotating set of images without pause while
// members are killed with SIGKILL and restarted in turn. Every pull must
// succeed with the pushed content, or fail only for a reason
// docs/reliability.md documents; no data dir may grow past its size; and
// each daemon's RSS, goroutines and open fds at the end must be within a
// bound of their level after warm-up. Run by `make soak` only:
// DREGISTRY_SOAK (a duration) enables it.

const (
	soakEnv        = "DREGISTRY_SOAK"         // how long the pulls and kills go on, e.g. 10m; unset skips
	soakOutEnv     = "DREGISTRY_SOAK_OUT"     // directory for soak.csv, soak.png and summary.md
	soakPullersEnv = "DREGISTRY_SOAK_PULLERS" // pull workers per node (default 2)
	// soakKeepLogsEnv names a directory the daemons' logs are copied to at
	// the end (the test's temp dirs are removed), to study a failure.
	soakKeepLogsEnv = "DREGISTRY_SOAK_KEEP_LOGS"

	soakNodes     = 4
	soakCacheSize = 96 << 20
	// soakSampleEvery is the period of the recorded samples; the data dirs
	// are walked every soakDiskEvery besides, so a short peak is caught.
	soakSampleEvery = 3 * time.Second
	soakDiskEvery   = 100 * time.Millisecond
	// A member is killed every soakKillEvery and started again soakDownFor
	// later, so one member at most is down at a time.
	soakKillEvery = 30 * time.Second
	soakDownFor   = 5 * time.Second
	// soakFDSlack is how many more fds than after warm-up a settled daemon
	// may hold (idle peer connections, the torrent client's sockets).
	soakFDSlack = 40
	// soakOverlapGrace widens a kill's window: a pull that ended within it
	// after the restart may still have been hurt by the kill (containerd
	// retrying a host that just came back, gossip not yet updated).
	soakOverlapGrace = 10 * time.Second
)

// soakDiskBound is the most node i's data dir may hold at any time: its
// --cache-size, the egress's too (a spool the cache has no room for is
// not written; its callers stream from the upstream instead).
func soakDiskBound(int) int64 { return soakCacheSize }

// largeFiles lists the files of at least 1 MiB under dir with their
// allocated sizes, to tell what held a data dir past its bound.
func largeFiles(dir string) string {
	var out []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if b := dirBytes(path); b >= 1<<20 {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel+"="+mib(b))
		}
		return nil
	})
	return strings.Join(out, " ")
}

// soakVictims are the nodes killed in turn (indexes into the cluster).
// node1 is the only egress and is killed in its turn: its crash is the
// case where fetches from the upstream are in flight and no other node may
// fetch for the cluster. node4 is never killed: it is the control whose
// figures span the whole soak, so a leak cannot hide behind a restart.
var soakVictims = []int{1, 2, 0}

// The failures a pull may have during the soak without failing it: each
// overlaps a kill (see docs/reliability.md, the soak). Any other failure,
// or one of these outside a kill's window, fails the soak.
var soakDocumentedFailures = []struct{ reason, match string }{
	// The puller's own daemon (its mirror) died mid-body: ctr 1.6 does not
	// resume a blob on the next host, so the pull ends with this error
	// (notes/containerd.md); the next pull of the image succeeds.
	{"own mirror killed mid-blob", "unexpected EOF"},
	{"own mirror killed mid-blob", "connection reset by peer"},
}

func TestSoakPullsThroughKillsWithinBounds(t *testing.T) {
	if os.Getenv(soakEnv) == "" {
		t.Skipf("the soak runs with $%s set (make soak), e.g. %s=10m", soakEnv, soakEnv)
	}
	testenv.RequireRoot(t)
	duration := loadEnvDuration(t, soakEnv, 10*time.Minute)
	pullers := loadEnvInt(t, soakPullersEnv, 2)
	outDir := os.Getenv(soakOutEnv)

	up := testenv.StartRegistry(t, testenv.LoopbackIP(60)+":5500")
	images := pushSoakImages(t, up)
	cacheFlag := strconv.Itoa(soakCacheSize>>20) + "MiB"
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: soakNodes, Upstream: up, Args: func(i int) []string {
		if i == 0 {
			return []string{"--egress", "--cache-size", cacheFlag}
		}
		return []string{"--cache-size", cacheFlag}
	}})
	waitEgressKnown(t, up, nodes, nodes[:1])

	rec := newSoakRecorder(nodes)
	rec.start()

	workers := make([]*soakWorker, 0, len(nodes)*pullers)
	for ni, n := range nodes {
		for k := range pullers {
			workers = append(workers, &soakWorker{loadWorker: loadWorker{node: n, ns: fmt.Sprintf("soak-%d", k)}, node: ni})
		}
	}
	// Warm-up: every node pulls every image once, so each daemon has met
	// every blob (and its caches have filled) before the reference figures.
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i % pullers; j < len(images); j += pullers {
				w.pull(t, rec, images[j], "warm-up")
			}
		}()
	}
	wg.Wait()
	if failed := rec.failures(); len(failed) > 0 {
		t.Fatalf("warm-up: %d pulls failed, first: %s", len(failed), failed[0])
	}
	warmAt := rec.sampleNow()

	// The soak: pulls never stop; the main goroutine kills and restarts.
	deadline := time.Now().Add(duration)
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			// Each worker walks the images in its own rotation from a
			// random start, so all images stay in play on every node.
			next := rng.IntN(len(images))
			for range maxPullsPerWorker {
				if time.Now().After(deadline) {
					return
				}
				w.pull(t, rec, images[next], "soak")
				next = (next + 1 + rng.IntN(2)) % len(images)
			}
		}()
	}
	for k := 0; ; k++ {
		wait := time.Until(deadline)
		if wait > soakKillEvery {
			wait = soakKillEvery
		}
		time.Sleep(wait)
		if time.Until(deadline) < soakDownFor+soakOverlapGrace {
			break
		}
		victim := soakVictims[k%len(soakVictims)]
		rec.kill(t, victim, soakDownFor)
	}
	wg.Wait()
	pullsEnd := rec.sampleNow()

	// Settle: transfers have ended; wait (bounded) for each daemon's
	// figures to come back within bounds of the warm-up ones.
	settleDeadline := time.Now().Add(settleTimeout)
	for time.Now().Before(settleDeadline) && len(rec.leaks(warmAt)) > 0 {
		time.Sleep(soakSampleEvery)
		rec.sampleNow()
	}
	endAt := rec.sampleNow()
	rec.stop()

	reqs := up.Requests(t)
	direct := testenv.FromContainerd(reqs)
	summary := rec.summary(t, images, warmAt, pullsEnd, endAt, duration, pullers, len(direct))
	t.Log("\n" + summary)
	if outDir != "" {
		rec.write(t, outDir, summary, warmAt, pullsEnd)
	}
	if dir := os.Getenv(soakKeepLogsEnv); dir != "" {
		keepLogs(t, dir, nodes)
	}

	for _, f := range rec.failures() {
		if f.reason == "" {
			t.Errorf("pull failed for an undocumented reason: %s", f)
		}
	}
	if rec.pullsIn("soak") == 0 {
		t.Errorf("no pull ran in the soak window of %s", duration)
	}
	for _, v := range rec.diskViolations() {
		t.Error(v)
	}
	for _, v := range rec.leaks(warmAt) {
		t.Error(v)
	}
	// Settled too, every data dir is within --cache-size.
	for i, n := range nodes {
		if s, ok := rec.row(i, endAt); ok && s.disk > soakCacheSize {
			t.Errorf("%s: data dir holds %s after the settle, more than its --cache-size of %s", n.Name, mib(s.disk), mib(soakCacheSize))
		}
	}
}

// pushSoakImages pushes the rotating set: small images (KiB blobs,
// busybox) and images with layers of 20 to 64 MiB, two of them on a
// shared 20 MiB base; about 220 MiB of distinct blobs, more than twice a
// node's cache.
func pushSoakImages(t *testing.T, up *testenv.Registry) []testenv.Image {
	t.Helper()
	base := up.Push(t, testenv.ImageSpec{Repo: "soak/base", Tag: "v1", LayerSizes: []int64{20 << 20}, Uncompressed: true})
	return []testenv.Image{
		up.Push(t, testenv.ImageSpec{Repo: "soak/small", Tag: "v1", LayerSizes: []int64{64 << 10, 128 << 10}, Format: testenv.Docker}),
		testenv.PushBusybox(t, up, "soak/busybox", "v1", 256<<10),
		base,
		pushOnBase(t, up, base, "soak/on-base-a", 4<<20),
		pushOnBase(t, up, base, "soak/on-base-b", 512<<10, 8<<20),
		up.Push(t, testenv.ImageSpec{Repo: "soak/tiny", Tag: "v1", LayerSizes: []int64{4 << 10}, Uncompressed: true}),
		up.Push(t, testenv.ImageSpec{Repo: "soak/l32", Tag: "v1", LayerSizes: []int64{32 << 20, 1 << 20}, Uncompressed: true}),
		up.Push(t, testenv.ImageSpec{Repo: "soak/l48", Tag: "v1", LayerSizes: []int64{48 << 20}, Uncompressed: true}),
		up.Push(t, testenv.ImageSpec{Repo: "soak/l64", Tag: "v1", LayerSizes: []int64{64 << 20}, Uncompressed: true}),
		up.Push(t, testenv.ImageSpec{Repo: "soak/l24", Tag: "v1", LayerSizes: []int64{24 << 20, 2 << 20}, Uncompressed: true}),
	}
}

// soakWorker is a load worker that records each pull's time and outcome.
type soakWorker struct {
	loadWorker
	node int
}

func (w *soakWorker) pull(t *testing.T, rec *soakRecorder, img testenv.Image, phase string) {
	start := time.Now()
	err := w.pullAndCheck(t, img)
	if rmErr := w.remove(t, img); err == nil {
		err = rmErr
	}
	rec.pulled(soakPull{node: w.node, ns: w.ns, ref: img.Ref, phase: phase, start: start, end: time.Now(), err: err, bytes: imageBytes(img)})
}

type soakPull struct {
	node       int
	ns, ref    string
	phase      string
	start, end time.Time
	err        error
	bytes      int64
	reason     string // the documented reason of a failure; "" if none fits
}

func (p soakPull) String() string {
	reason := p.reason
	if reason == "" {
		reason = "undocumented"
	}
	return fmt.Sprintf("node%d/%s %s at %s (%s, %s): %v", p.node+1, p.ns, p.ref, p.start.Format("15:04:05"),
		p.end.Sub(p.start).Round(time.Millisecond), reason, p.err)
}

// soakKill is one member's down time.
type soakKill struct {
	node     int
	at, upAt time.Time
}

// soakSample is one node's figures at one time; -1 where unknown (the
// daemon is down).
type soakSample struct {
	at                   time.Time
	node                 int
	up                   bool
	rss, goroutines, fds int64
	disk, diskPeak       int64 // data dir now, and its peak since the last sample
}

// soakRecorder owns the soak's records: the samples, the pulls and the
// kills. Its mutex guards them and pids; the main goroutine alone starts
// and kills daemons (testenv.Node is not safe for concurrent Start/Kill
// and Pid), and publishes each daemon's pid here.
type soakRecorder struct {
	nodes []*testenv.Node
	t0    time.Time

	mu        sync.Mutex
	pids      []int
	samples   []soakSample
	pulls     []soakPull
	kills     []soakKill
	diskPeak  []int64 // since the last sample
	diskMax   []int64 // over the whole soak
	diskOver  []string
	diskWalks int
	// diskOverWalks counts, per node, the walks that found the data dir
	// over --cache-size.
	diskOverWalks []int

	done chan struct{}
	wg   sync.WaitGroup
}

func newSoakRecorder(nodes []*testenv.Node) *soakRecorder {
	r := &soakRecorder{nodes: nodes, t0: time.Now(), pids: make([]int, len(nodes)),
		diskPeak: make([]int64, len(nodes)), diskMax: make([]int64, len(nodes)), diskOverWalks: make([]int, len(nodes)), done: make(chan struct{})}
	for i, n := range nodes {
		r.pids[i] = n.Pid()
	}
	return r
}

// start begins the periodic samples and the data dir watch.
func (r *soakRecorder) start() {
	r.sampleNow()
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		tick := time.NewTicker(soakSampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-r.done:
				return
			case <-tick.C:
				r.sampleNow()
			}
		}
	}()
	go func() {
		defer r.wg.Done()
		tick := time.NewTicker(soakDiskEvery)
		defer tick.Stop()
		for {
			select {
			case <-r.done:
				return
			case <-tick.C:
			}
			for i, n := range r.nodes {
				b := dirBytes(n.DataDir)
				r.mu.Lock()
				r.diskPeak[i] = max(r.diskPeak[i], b)
				r.diskMax[i] = max(r.diskMax[i], b)
				if b > soakCacheSize {
					r.diskOverWalks[i]++
				}
				if b > soakDiskBound(i) && len(r.diskOver) < 20 {
					r.diskOver = append(r.diskOver, fmt.Sprintf("%s: data dir held %s at %s, more than its bound of %s: %s",
						n.Name, mib(b), time.Since(r.t0).Round(time.Second), mib(soakDiskBound(i)), largeFiles(n.DataDir)))
				}
				r.mu.Unlock()
			}
			r.mu.Lock()
			r.diskWalks++
			r.mu.Unlock()
		}
	}()
}

func (r *soakRecorder) stop() {
	close(r.done)
	r.wg.Wait()
}

// sampleNow records every node's figures and returns the time of the row.
func (r *soakRecorder) sampleNow() time.Time {
	at := time.Now()
	r.mu.Lock()
	pids := slices.Clone(r.pids)
	r.mu.Unlock()
	rows := make([]soakSample, len(r.nodes))
	for i, n := range r.nodes {
		s := soakSample{at: at, node: i, rss: -1, goroutines: -1, fds: -1, disk: dirBytes(n.DataDir)}
		if pid := pids[i]; pid > 0 {
			rss, err1 := vmRSS(pid)
			fds, err2 := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			gr, err3 := scrapeGoroutines(n)
			if err1 == nil && err2 == nil && err3 == nil {
				s.up, s.rss, s.fds, s.goroutines = true, rss, int64(len(fds)), int64(gr)
			}
		}
		rows[i] = s
	}
	r.mu.Lock()
	for i := range rows {
		rows[i].diskPeak = max(r.diskPeak[i], rows[i].disk)
		r.diskPeak[i] = 0
		r.diskMax[i] = max(r.diskMax[i], rows[i].disk)
	}
	r.samples = append(r.samples, rows...)
	r.mu.Unlock()
	return at
}

// kill SIGKILLs node i, waits down, and starts it again (main goroutine
// only).
func (r *soakRecorder) kill(t *testing.T, i int, down time.Duration) {
	t.Helper()
	n := r.nodes[i]
	r.mu.Lock()
	r.pids[i] = 0
	k := soakKill{node: i, at: time.Now()}
	r.mu.Unlock()
	n.Kill(t)
	time.Sleep(down)
	n.Start(t)
	r.mu.Lock()
	r.pids[i] = n.Pid()
	k.upAt = time.Now()
	r.kills = append(r.kills, k)
	r.mu.Unlock()
	t.Logf("killed %s at %s, up again after %s", n.Name, k.at.Sub(r.t0).Round(time.Second), k.upAt.Sub(k.at).Round(time.Millisecond))
}

func (r *soakRecorder) pulled(p soakPull) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pulls = append(r.pulls, p)
}

// failures lists the failed pulls, each with its documented reason when
// one fits: the error matches, and the pull overlapped a kill of its own
// node (the kill of another member is never a reason to fail).
func (r *soakRecorder) failures() []soakPull {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []soakPull
	for _, p := range r.pulls {
		if p.err == nil {
			continue
		}
		for _, k := range r.kills {
			if k.node != p.node || p.start.After(k.upAt.Add(soakOverlapGrace)) || p.end.Before(k.at) {
				continue
			}
			for _, d := range soakDocumentedFailures {
				if strings.Contains(p.err.Error(), d.match) {
					p.reason = d.reason
				}
			}
		}
		out = append(out, p)
	}
	return out
}

func (r *soakRecorder) pullsIn(phase string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.pulls {
		if p.phase == phase {
			n++
		}
	}
	return n
}

func (r *soakRecorder) diskViolations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.diskOver)
	for _, s := range r.samples {
		if s.disk > soakDiskBound(s.node) && len(out) < 40 {
			out = append(out, fmt.Sprintf("node%d: data dir held %s at sample %s, more than its bound of %s",
				s.node+1, mib(s.disk), s.at.Sub(r.t0).Round(time.Second), mib(soakDiskBound(s.node))))
		}
	}
	return out
}

// row returns node i's sample taken at at (zero and false if none).
func (r *soakRecorder) row(i int, at time.Time) (soakSample, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.samples {
		if s.node == i && s.at.Equal(at) {
			return s, true
		}
	}
	return soakSample{}, false
}

// leaks compares each node's newest sample with its warm-up row.
func (r *soakRecorder) leaks(warmAt time.Time) []string {
	r.mu.Lock()
	var last []soakSample
	if n := len(r.samples); n >= len(r.nodes) {
		last = slices.Clone(r.samples[n-len(r.nodes):])
	}
	r.mu.Unlock()
	var out []string
	for i, n := range r.nodes {
		warm, ok := r.row(i, warmAt)
		if !ok || !warm.up {
			out = append(out, fmt.Sprintf("%s: no warm-up figures", n.Name))
			continue
		}
		if last == nil || !last[i].up {
			out = append(out, fmt.Sprintf("%s: no figures at the end", n.Name))
			continue
		}
		end := last[i]
		if bound := rssBound(warm.rss); end.rss > bound {
			out = append(out, fmt.Sprintf("%s: RSS %s at the end, %s after warm-up: more than %.1fx + %s = %s", n.Name, mib(end.rss), mib(warm.rss), rssGrowth, mib(rssSlack), mib(bound)))
		}
		if end.goroutines > warm.goroutines+goroutineSlack {
			out = append(out, fmt.Sprintf("%s: %d goroutines at the end, %d after warm-up (slack %d): leak", n.Name, end.goroutines, warm.goroutines, goroutineSlack))
		}
		if end.fds > warm.fds+soakFDSlack {
			out = append(out, fmt.Sprintf("%s: %d open fds at the end, %d after warm-up (slack %d): leak", n.Name, end.fds, warm.fds, soakFDSlack))
		}
	}
	return out
}

// soakMetric names one column of the samples.
type soakMetric struct {
	title string
	unit  float64
	get   func(soakSample) int64
}

var soakMetrics = []soakMetric{
	{"RSS (MIB)", 1 << 20, func(s soakSample) int64 { return s.rss }},
	{"GOROUTINES", 1, func(s soakSample) int64 { return s.goroutines }},
	{"OPEN FDS", 1, func(s soakSample) int64 { return s.fds }},
	{"DATA DIR (MIB, PEAK PER SAMPLE)", 1 << 20, func(s soakSample) int64 { return s.diskPeak }},
}

// summary is the table docs/reliability.md records: per node and metric
// the first sample, the one after warm-up, the one after the settle and
// the maximum; then the pulls.
func (r *soakRecorder) summary(t *testing.T, images []testenv.Image, warmAt, pullsEnd, endAt time.Time, duration time.Duration, pullers, direct int) string {
	t.Helper()
	failed := r.failures()
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %d nodes (node1 egress), --cache-size %s each, %d pull workers per node, %d images, %s of pulls and kills; warm-up ended at %s, pulls at %s, settled at %s\n\n",
		len(r.nodes), mib(soakCacheSize), pullers, len(images), duration,
		warmAt.Sub(r.t0).Round(time.Second), pullsEnd.Sub(r.t0).Round(time.Second), endAt.Sub(r.t0).Round(time.Second))
	fmt.Fprintf(&b, "| node | metric | start | after warm-up | end (settled) | max |\n|---|---|---|---|---|---|\n")
	for i, n := range r.nodes {
		var first, warm, end *soakSample
		maxes := make([]int64, len(soakMetrics))
		for j := range r.samples {
			s := &r.samples[j]
			if s.node != i {
				continue
			}
			if first == nil {
				first = s
			}
			if s.at.Equal(warmAt) {
				warm = s
			}
			if s.at.Equal(endAt) {
				end = s
			}
			for m, metric := range soakMetrics {
				maxes[m] = max(maxes[m], metric.get(*s))
			}
		}
		for m, metric := range soakMetrics {
			cell := func(s *soakSample) string {
				if s == nil || metric.get(*s) < 0 {
					return "down"
				}
				return formatMetric(metric, metric.get(*s))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", n.Name, strings.ToLower(metric.title), cell(first), cell(warm), cell(end), formatMetric(metric, maxes[m]))
		}
	}
	phases := map[string][2]int{}
	var bytes int64
	for _, p := range r.pulls {
		c := phases[p.phase]
		c[0]++
		if p.err != nil {
			c[1]++
		} else {
			bytes += p.bytes
		}
		phases[p.phase] = c
	}
	fmt.Fprintf(&b, "\npulls: %d in warm-up (%d failed), %d in the soak (%d failed); %s pulled in all\n",
		phases["warm-up"][0], phases["warm-up"][1], phases["soak"][0], phases["soak"][1], mib(bytes))
	kills := map[int]int{}
	for _, k := range r.kills {
		kills[k.node]++
	}
	var ks []string
	for _, i := range slices.Sorted(maps.Keys(kills)) {
		ks = append(ks, fmt.Sprintf("%s x%d", r.nodes[i].Name, kills[i]))
	}
	fmt.Fprintf(&b, "kills (SIGKILL, restarted %s later): %s\n", soakDownFor, strings.Join(ks, ", "))
	fmt.Fprintf(&b, "data dir: walked every %s (%d walks); max per node:", soakDiskEvery, r.diskWalks)
	for i, n := range r.nodes {
		fmt.Fprintf(&b, " %s %s", n.Name, mib(r.diskMax[i]))
	}
	fmt.Fprintf(&b, " (limit %s); walks over the limit:", mib(soakCacheSize))
	for i, n := range r.nodes {
		fmt.Fprintf(&b, " %s %d", n.Name, r.diskOverWalks[i])
	}
	fmt.Fprintln(&b)
	fmt.Fprintf(&b, "containerd fetched from the upstream itself %d times (its fallback while its mirror was down)\n", direct)
	reasons := map[string]int{}
	for _, f := range failed {
		reasons[f.reason]++
	}
	for _, reason := range slices.Sorted(maps.Keys(reasons)) {
		label := reason
		if label == "" {
			label = "UNDOCUMENTED"
		}
		fmt.Fprintf(&b, "failed pulls, %s: %d\n", label, reasons[reason])
	}
	for i, f := range failed {
		if i == 10 {
			fmt.Fprintf(&b, "  ... %d more\n", len(failed)-i)
			break
		}
		fmt.Fprintf(&b, "  %s\n", f)
	}
	return b.String()
}

func formatMetric(m soakMetric, v int64) string {
	if m.unit == 1 {
		return strconv.FormatInt(v, 10)
	}
	return fmt.Sprintf("%.1f", float64(v)/m.unit)
}

// write stores soak.csv, soak.png and summary.md in dir.
func (r *soakRecorder) write(t *testing.T, dir, summary string, warmAt, pullsEnd time.Time) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("$%s: %v", soakOutEnv, err)
		return
	}
	r.mu.Lock()
	samples := slices.Clone(r.samples)
	kills := slices.Clone(r.kills)
	r.mu.Unlock()
	sort.SliceStable(samples, func(a, b int) bool { return samples[a].at.Before(samples[b].at) })

	var csvBuf strings.Builder
	w := csv.NewWriter(&csvBuf)
	_ = w.Write([]string{"seconds", "node", "up", "rss_bytes", "goroutines", "open_fds", "data_dir_bytes", "data_dir_peak_bytes"})
	for _, s := range samples {
		_ = w.Write([]string{
			strconv.FormatFloat(s.at.Sub(r.t0).Seconds(), 'f', 1, 64), r.nodes[s.node].Name, strconv.FormatBool(s.up),
			strconv.FormatInt(s.rss, 10), strconv.FormatInt(s.goroutines, 10), strconv.FormatInt(s.fds, 10),
			strconv.FormatInt(s.disk, 10), strconv.FormatInt(s.diskPeak, 10),
		})
	}
	w.Flush()

	var panels []chartPanel
	for _, m := range soakMetrics {
		p := chartPanel{title: m.title}
		if m.title == soakMetrics[3].title {
			p.hline = float64(soakCacheSize) / m.unit
		}
		for i, n := range r.nodes {
			s := chartSeries{name: n.Name}
			for _, row := range samples {
				if row.node != i {
					continue
				}
				y := math.NaN()
				if v := m.get(row); v >= 0 {
					y = float64(v) / m.unit
				}
				s.points = append(s.points, chartPoint{row.at.Sub(r.t0).Seconds(), y})
			}
			p.series = append(p.series, s)
		}
		for _, k := range kills {
			p.marks = append(p.marks, chartMark{k.at.Sub(r.t0).Seconds(), k.node})
		}
		panels = append(panels, p)
	}
	xLabel := fmt.Sprintf("SECONDS (WARM-UP TO %.0f, PULLS TO %.0f; TICKS: KILLS)", warmAt.Sub(r.t0).Seconds(), pullsEnd.Sub(r.t0).Seconds())
	png, err := drawChart(panels, xLabel)
	if err != nil {
		t.Errorf("soak chart: %v", err)
		return
	}
	for name, data := range map[string][]byte{"soak.csv": []byte(csvBuf.String()), "soak.png": png, "summary.md": []byte(summary)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Errorf("write %s: %v", name, err)
		}
	}
	t.Logf("wrote soak.csv, soak.png (%d KiB) and summary.md to %s", len(png)>>10, dir)
}
