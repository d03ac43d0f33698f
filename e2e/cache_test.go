package e2e

import (
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 14, the disk: --cache-size is the most a node's data dir holds. The
// egress keeps its spools under its size by evicting the least recently
// used; a node pulling more than its size in total keeps within it (its
// downloads go once containerd holds the blob), and a layer larger than
// the whole size is streamed from the egress without being kept. A layer
// larger than the egress's own size is not spooled there either: it is
// streamed from the upstream through the egress. Every pull succeeds.
func TestCacheSizeBoundsTheDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts two nodes")
	}
	const egressSize, nodeSize = 72 << 20, 64 << 20
	up := testenv.StartRegistry(t, testenv.LoopbackIP(9)+":5500")
	var imgs []testenv.Image
	// 68 MiB: more than the node's size, within the egress's; 80 MiB: more
	// than either.
	for i, size := range []int64{40 << 20, 40 << 20, 40 << 20, 68 << 20, 80 << 20} {
		imgs = append(imgs, up.Push(t, testenv.ImageSpec{
			Repo: "e2e/cache-" + string(rune('a'+i)), Tag: "v1", LayerSizes: []int64{size}, Uncompressed: true,
		}))
	}
	args := func(i int) []string {
		if i == 0 {
			return []string{"--egress", "--cache-size", "72MiB"}
		}
		return []string{"--cache-size", "64MiB"}
	}
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up, Args: args})
	n1, n2 := nodes[0], nodes[1]

	watch := watchDataDirs(nodes)
	for _, img := range imgs {
		n2.Pull(t, img.Ref)
	}
	peak := watch.stop()
	for _, img := range imgs {
		checkImage(t, n2, img)
	}
	for i, limit := range []int64{egressSize, nodeSize} {
		n := nodes[i]
		if now := dataDirBytes(t, n.DataDir); now > limit || peak[i] > limit {
			t.Errorf("%s's data dir held up to %d bytes (%d now), more than its --cache-size of %d", n.Name, peak[i], now, limit)
		}
		t.Logf("%s: data dir peak %d bytes of %d (%d samples)", n.Name, peak[i], limit, watch.samples)
	}
	if watch.samples < 10 {
		t.Errorf("the data dirs were sampled %d times only", watch.samples)
	}

	// The egress evicted spools to make room (120 MiB of the first three
	// layers in 72 MiB), and the metrics say so.
	m1, m2 := scrape(t, n1), scrape(t, n2)
	if v := metricValue(m1, "dregistry_cache_evictions_total"); v < 1 {
		t.Errorf("%s evicted %v spools, want at least one", n1.Name, v)
	}
	if v := metricValue(m1, "dregistry_cache_limit_bytes"); v != egressSize {
		t.Errorf("%s dregistry_cache_limit_bytes = %v, want %d", n1.Name, v, egressSize)
	}
	if v := metricValue(m2, "dregistry_cache_limit_bytes"); v != nodeSize {
		t.Errorf("%s dregistry_cache_limit_bytes = %v, want %d", n2.Name, v, nodeSize)
	}
	if v := metricValue(m2, "dregistry_cache_size_bytes"); v < 0 || v > nodeSize {
		t.Errorf("%s dregistry_cache_size_bytes = %v, want within %d", n2.Name, v, nodeSize)
	}

	// The layers larger than n2's whole cache came through the egress's
	// stream, whole, and nothing of them stays in n2's data dir.
	for _, img := range imgs[3:] {
		big := img.Layers[0]
		var viaEgress int64
		for _, s := range n2.Served(t) {
			if strings.Contains(s.Path, big.Digest.String()) && s.Method == http.MethodGet && s.Source == "egress" && !s.Aborted {
				viaEgress += s.Bytes
			}
		}
		if viaEgress < big.Size {
			t.Errorf("%s served %d bytes of the %d-byte layer larger than its cache through the egress stream, want all of it", n2.Name, viaEgress, big.Size)
		}
	}
	// The 68 MiB layer was spooled on the egress and followed in the swarm,
	// where n2 had no room to keep it.
	if !logHas(t, n2, "download not kept: the cache is full") {
		t.Errorf("%s's log does not say the download was not kept; tail:\n%s", n2.Name, n2.LogTail())
	}
	// The 80 MiB layer is larger than the egress's whole cache too: it had
	// no spool there, and came through an upstream stream of its own.
	if v := metricValue(m1, "dregistry_egress_unkept_streams_total"); v < 1 {
		t.Errorf("%s dregistry_egress_unkept_streams_total = %v, want at least 1", n1.Name, v)
	}
	if !logHas(t, n1, "streams from the upstream without being kept") {
		t.Errorf("%s's log does not say the blob streamed without a spool; tail:\n%s", n1.Name, n1.LogTail())
	}
}

// dataDirWatch samples the bytes each node's data dir holds until stop.
type dataDirWatch struct {
	done    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	peak    []int64
	samples int
}

func watchDataDirs(nodes []*testenv.Node) *dataDirWatch {
	w := &dataDirWatch{done: make(chan struct{}), peak: make([]int64, len(nodes))}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		// Bounded by the test's pulls: stop ends it; so does this cap.
		deadline := time.After(10 * time.Minute)
		for {
			select {
			case <-w.done:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			w.mu.Lock()
			for i, n := range nodes {
				w.peak[i] = max(w.peak[i], dirBytes(n.DataDir))
			}
			w.samples++
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *dataDirWatch) stop() []int64 {
	close(w.done)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

// dataDirBytes is what the files under dir take on disk now.
func dataDirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	return dirBytes(dir)
}

// dirBytes sums the allocated blocks of the regular files under dir (files
// vanishing during the walk are skipped).
func dirBytes(dir string) int64 {
	var sum int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			sum += st.Blocks * 512
		} else {
			sum += info.Size()
		}
		return nil
	})
	return sum
}
