package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 14, item 2: 20 large GETs whose clients stop reading or hang up
// after the first MiB. Each response is cut once it makes no write
// progress for --stall-timeout, each download loses its piece buffers when
// its last reader goes and is dropped with its files after
// --abandon-timeout, so the daemon's RSS and goroutines come back to their
// warm-up figures, as in TestLoadManyConcurrentPullsKeepDaemonsFlat.
func TestLoadAbandonedLargeGetsLeaveDaemonsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: two nodes and 20 abandoned 128 MiB GETs")
	}
	testenv.RequireRoot(t)
	const (
		stall   = 10 * time.Second
		abandon = 10 * time.Second
		gets    = 20
		// readFirst is what each client reads before it stops.
		readFirst = 1 << 20
	)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(40)+":5500")
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up, Args: func(i int) []string {
		args := []string{"--stall-timeout", stall.String(), "--abandon-timeout", abandon.String()}
		if i == 0 {
			args = append(args, "--egress")
		}
		return args
	}})
	n1, n2 := nodes[0], nodes[1]
	waitEgressKnown(t, up, nodes, nodes[:1])
	// warm: pulled whole by both nodes, so each daemon has streamed a large
	// blob through the swarm before the figures are taken. seeded: held by
	// node 1's containerd, so node 2 downloads it from the swarm. cold:
	// nobody has it, so node 2 follows node 1's fetch from the upstream.
	warm := up.Push(t, testenv.ImageSpec{Repo: "load/abandon-warm", Tag: "v1", LayerSizes: []int64{128 << 20}, Uncompressed: true})
	seeded := up.Push(t, testenv.ImageSpec{Repo: "load/abandon-seeded", Tag: "v1", LayerSizes: []int64{128 << 20}, Uncompressed: true})
	cold := up.Push(t, testenv.ImageSpec{Repo: "load/abandon-cold", Tag: "v1", LayerSizes: []int64{128 << 20}, Uncompressed: true})
	n1.Pull(t, warm.Ref)
	waitSeeds(t, []*testenv.Node{n2}, n1, warm.Layers[0].Digest)
	n2.Pull(t, warm.Ref)
	n1.Pull(t, seeded.Ref)
	waitSeeds(t, []*testenv.Node{n2}, n1, seeded.Layers[0].Digest)
	// The warm figures are taken once each daemon settled after its
	// warm-up pulls, as the end figures are: sampled at once, they still
	// hold the warm-up's buffers (node 2 at 177 MiB, 47 MiB once idle), and
	// the bound of the end figure would be that much looser.
	settleStart := time.Now()
	early := sampleNodes(t, nodes)
	before := settleWarm(t, nodes)
	for i, n := range nodes {
		t.Logf("%s warm: RSS %s just after the warm-up, %s settled (in %s); %s", n.Name, mib(early[i].rss), mib(before[i].rss),
			time.Since(settleStart).Round(time.Second), heapFigures(n))
	}

	mark := len(n2.Served(t))
	var wg sync.WaitGroup
	held := make(chan func(), gets) // closes the connections that stopped reading
	errs := make(chan error, gets)
	for i := range gets {
		img := seeded
		if i%2 == 1 {
			img = cold
		}
		hangUp := i%4 >= 2 // half of each: hang up, or stop reading and hold on
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := n2.URL() + "/v2/" + img.Repo + "/blobs/" + img.Layers[0].Digest.String() + "?ns=" + up.Addr
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				cancel()
				errs <- err
				return
			}
			resp, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
			if err != nil {
				cancel()
				errs <- fmt.Errorf("GET %s: %w", url, err)
				return
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				cancel()
				errs <- fmt.Errorf("GET %s: %s", url, resp.Status)
				return
			}
			if _, err := io.CopyN(io.Discard, resp.Body, readFirst); err != nil {
				errs <- fmt.Errorf("GET %s: first MiB: %w", url, err)
			}
			if hangUp {
				resp.Body.Close()
				cancel()
				return
			}
			held <- func() { resp.Body.Close(); cancel() }
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	close(held)
	defer func() {
		for release := range held {
			release()
		}
	}()

	// Every response ends on the daemon, those whose client still holds
	// the connection too: cut after --stall-timeout without progress.
	blobPaths := []string{seeded.Layers[0].Digest.String(), cold.Layers[0].Digest.String()}
	waitFor(t, 3*stall+30*time.Second, "node 2 to end all 20 abandoned responses", func() (bool, string) {
		ended := 0
		for _, s := range n2.Served(t)[mark:] {
			if s.Method == http.MethodGet && (strings.HasSuffix(s.Path, blobPaths[0]) || strings.HasSuffix(s.Path, blobPaths[1])) {
				ended++
				if s.Bytes >= 128<<20 {
					return false, fmt.Sprintf("a response of %d bytes went to a client that read %d", s.Bytes, readFirst)
				}
			}
		}
		return ended >= gets, fmt.Sprintf("%d ended", ended)
	})
	// The downloads nobody reads any more are dropped with their files.
	for _, img := range []testenv.Image{seeded, cold} {
		d := img.Layers[0].Digest
		waitFor(t, abandon+60*time.Second, "node 2 to drop its abandoned download of "+d.String(), func() (bool, string) {
			files, err := filepath.Glob(filepath.Join(n2.DataDir, "swarm", "downloads", string(d.Algorithm()), d.Encoded()+".*"))
			if err != nil {
				return false, err.Error()
			}
			return len(files) == 0, fmt.Sprint(files)
		})
	}
	if !logHas(t, n2, "abandoned download dropped") {
		t.Errorf("%s's log does not report an abandoned download; tail:\n%s", n2.Name, n2.LogTail())
	}

	settleStart = time.Now()
	after := settleNodes(t, nodes, before)
	t.Logf("settled in %s", time.Since(settleStart).Round(time.Second))
	for i, n := range nodes {
		b, a := before[i], after[i]
		t.Logf("%s: RSS warm %s, after %s; goroutines warm %d, after %d; %s", n.Name, mib(b.rss), mib(a.rss), b.goroutines, a.goroutines, heapFigures(n))
		if b.err != nil || a.err != nil {
			t.Errorf("%s: figures unavailable: before %v, after %v", n.Name, b.err, a.err)
			continue
		}
		if bound := rssBound(b.rss); a.rss > bound {
			t.Errorf("%s: RSS %s after 20 abandoned GETs, warm %s: more than %.1fx + %s = %s", n.Name, mib(a.rss), mib(b.rss), rssGrowth, mib(rssSlack), mib(bound))
		}
		if a.goroutines > b.goroutines+goroutineSlack {
			t.Errorf("%s: %d goroutines after the abandoned GETs, %d warm: leak", n.Name, a.goroutines, b.goroutines)
		}
	}
	if dir := os.Getenv(loadKeepLogsEnv); dir != "" {
		keepLogs(t, dir, nodes)
	}
}

// Settling of the warm figures: a daemon hands freed buffers back to the
// OS once downloads stopped freeing them for 3 s (cmd/dregistry/memory.go),
// so its RSS is settled once it has not fallen by more than warmSettleStep
// for warmSettleQuiet; the wait is bounded by settleTimeout.
const (
	warmSettleQuiet = 6 * time.Second
	warmSettleStep  = 1 << 20
)

// settleWarm samples nodes until each one's RSS stopped falling, and
// returns each one's last figures.
func settleWarm(t *testing.T, nodes []*testenv.Node) []nodeFigures {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	last := sampleNodes(t, nodes)
	since := make([]time.Time, len(nodes)) // when the RSS last fell
	for i := range since {
		since[i] = time.Now()
	}
	for {
		time.Sleep(time.Second)
		now := sampleNodes(t, nodes)
		settled := true
		for i := range nodes {
			if now[i].err != nil {
				t.Fatalf("%s: warm figures: %v", nodes[i].Name, now[i].err)
			}
			if now[i].rss < last[i].rss-warmSettleStep {
				since[i] = time.Now()
				last[i] = now[i]
			} else if now[i].rss < last[i].rss {
				last[i].rss = now[i].rss
			}
			last[i].goroutines = now[i].goroutines
			if time.Since(since[i]) < warmSettleQuiet {
				settled = false
			}
		}
		if settled {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemons' RSS still fell %s after the warm-up: %+v", settleTimeout, now)
		}
	}
}

// heapFigures reads the Go heap's figures from n's /metrics, to tell
// memory still referenced from memory the runtime has not returned yet.
func heapFigures(n *testenv.Node) string {
	r, err := getURL(n.URL() + "/metrics")
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, m := range []string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_next_gc_bytes"} {
		parts = append(parts, fmt.Sprintf("%s=%s", strings.TrimPrefix(m, "go_memstats_"), mib(int64(metricValue(string(r.Body), m)))))
	}
	return strings.Join(parts, " ")
}
