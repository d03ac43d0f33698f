package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// coldSingleBlobMiB is the one layer of BenchmarkColdSingleNode's image;
// DREGISTRY_BENCH_BLOB_MIB overrides it.
const coldSingleBlobMiB = 512

// BenchmarkColdSingleNode is item 3 of issue 13: one node (the lone member,
// so its own egress) in front of docker-registry on uncapped loopback. Each
// iteration pushes two new images of one uncompressed layer and fetches
// them with `ctr content fetch` (no unpacking): one straight from the
// upstream (direct), one through the node's hosts dir (dregistry), the
// order alternating between iterations so neither always runs second.
// Reported: seconds of each and their ratio (goal ≤ 1.25). Each iteration
// also checks that the upstream sent the blob exactly once through
// dregistry and that containerd never asked the upstream itself.
//
//	DREGISTRY_E2E=required go test -run '^$' -bench ColdSingleNode -benchtime 3x ./e2e
func BenchmarkColdSingleNode(b *testing.B) {
	testenv.RequireRoot(b)
	size := int64(envInt(b, "DREGISTRY_BENCH_BLOB_MIB", coldSingleBlobMiB)) << 20
	up := testenv.StartRegistry(b, testenv.LoopbackIP(9)+":5501")
	node := testenv.StartNode(b, testenv.NodeConfig{Name: "cold1", IP: testenv.LoopbackIP(32), Upstream: up})

	// CPU time of each daemon, the figure that the machine's load disturbs
	// least: wall time on 2 shared cores swings by 2x between runs.
	procs := []cpuWatch{
		{name: "dregistry", pid: node.Pid()},
		{name: "containerd", pid: pidOf(b, node.Containerd.ConfigPath)},
		{name: "registry", pid: pidOf(b, up.ConfigPath)},
	}
	cpu := map[string]time.Duration{}
	var direct, via time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		push := func(kind string) testenv.Image {
			return up.Push(b, testenv.ImageSpec{Repo: "bench/cold1-" + kind, Tag: "v" + strconv.Itoa(i),
				LayerSizes: []int64{size}, Uncompressed: true})
		}
		imgDirect, imgVia := push("direct"), push("dregistry")
		b.StartTimer()
		var d, v time.Duration
		timed := func(kind string, img testenv.Image, mode fetchMode) time.Duration {
			before := cpuTimes(b, procs)
			took := fetchAll(b, []*testenv.Node{node}, img, mode)
			for i, t := range cpuTimes(b, procs) {
				cpu[kind+"-"+procs[i].name] += t - before[i]
			}
			// The daemon seeds what containerd now holds: a layer fetched
			// straight from the upstream is read and hashed once, about
			// 1 CPU s per 512 MiB. Left running, it took the cores from
			// the next fetch, so the fetch that ran second was slowed by
			// the first one's aftermath (1.37-1.38x with direct first,
			// 1.12-1.21x with dregistry first).
			b.StopTimer()
			settle(b, procs)
			b.StartTimer()
			return took
		}
		runs := []func(){
			func() { d = timed("direct", imgDirect, fetchDirect) },
			func() { v = timed("dregistry", imgVia, fetchViaDregistry) },
		}
		if i%2 == 1 {
			runs[0], runs[1] = runs[1], runs[0]
		}
		for _, run := range runs {
			run()
		}
		b.StopTimer()
		direct, via = direct+d, via+v
		b.Logf("iteration %d: direct %.2f s, dregistry %.2f s, %.2fx", i, d.Seconds(), v.Seconds(), v.Seconds()/d.Seconds())
		reqs := up.Requests(b)
		if containsRepo(testenv.FromContainerd(reqs), imgVia.Repo) {
			b.Errorf("containerd went to the upstream itself for %s, which dregistry should serve", imgVia.Ref)
		}
		for _, blob := range imgVia.Blobs() {
			if gets := blobGETs(reqs, blob.Digest); len(gets) != 1 || testenv.BlobSends(gets, blob.Digest, blob.Size) != 1 {
				b.Errorf("upstream answered %+v for blob %s of %s, want one whole send", gets, blob.Digest, imgVia.Ref)
			}
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(direct.Seconds()/n, "direct-s")
	b.ReportMetric(via.Seconds()/n, "dregistry-s")
	b.ReportMetric(via.Seconds()/direct.Seconds(), "dregistry/direct")
	for _, kind := range []string{"direct", "dregistry"} {
		for _, p := range procs {
			b.ReportMetric(cpu[kind+"-"+p.name].Seconds()/n, kind+"-cpu-"+p.name+"-s")
		}
	}
	b.Logf("one node, one layer of %d MiB, loopback, %d iterations", size>>20, b.N)
}

// settle waits, at most settleMax, until the daemons used less than
// settleIdle of CPU time over settleWindow: the work a fetch leaves behind
// (seeding, containerd's garbage collection) is done.
func settle(b *testing.B, procs []cpuWatch) {
	b.Helper()
	const (
		settleWindow = 500 * time.Millisecond
		settleIdle   = 30 * time.Millisecond
		settleMax    = 30 * time.Second
	)
	sum := func() (t time.Duration) {
		for _, d := range cpuTimes(b, procs) {
			t += d
		}
		return t
	}
	start, last := time.Now(), sum()
	for time.Since(start) < settleMax {
		time.Sleep(settleWindow)
		now := sum()
		if now-last < settleIdle {
			return
		}
		last = now
	}
	b.Logf("the daemons were still busy %v after a fetch", settleMax)
}

// cpuWatch names a daemon whose CPU time the benchmark reads.
type cpuWatch struct {
	name string
	pid  int
}

// cpuTimes reads each process's user+system time from /proc.
func cpuTimes(b *testing.B, procs []cpuWatch) []time.Duration {
	out := make([]time.Duration, len(procs))
	for i, p := range procs {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
		if err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		// Fields after the command name (which may hold spaces): state is
		// field 3, utime and stime are 14 and 15, in clock ticks (100/s on
		// Linux).
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 13 {
			b.Fatalf("%s: /proc/%d/stat: %q", p.name, p.pid, stat)
		}
		var ticks int64
		for _, v := range f[11:13] {
			t, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatalf("%s: /proc/%d/stat: %v", p.name, p.pid, err)
			}
			ticks += t
		}
		out[i] = time.Duration(ticks) * 10 * time.Millisecond
	}
	return out
}

// pidOf finds the one process whose command line names configPath.
func pidOf(b *testing.B, configPath string) int {
	b.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		b.Fatal(err)
	}
	pid := 0
	for _, d := range dirs {
		cmdline, err := os.ReadFile(d)
		if err != nil || !bytes.Contains(cmdline, []byte(configPath)) {
			continue
		}
		if pid != 0 {
			b.Fatalf("two processes name %s", configPath)
		}
		pid, _ = strconv.Atoi(strings.Split(d, "/")[2])
	}
	if pid == 0 {
		b.Fatalf("no process names %s", configPath)
	}
	return pid
}
