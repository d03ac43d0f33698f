package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Defaults of BenchmarkRollout; DREGISTRY_BENCH_NODES,
// DREGISTRY_BENCH_LAYER_MIB and DREGISTRY_BENCH_RATE_MBIT override them.
// DREGISTRY_BENCH_CC sets every host's TCP congestion control (by default
// the machine's, which namespaces inherit; a namespace may only choose one
// of net.ipv4.tcp_allowed_congestion_control, e.g. reno or bbr).
// DREGISTRY_BENCH_QUEUE_MS sets the length of every link's tbf queue
// (default testenv.DefaultQueue, 100 ms: a deep FIFO; a real NIC with
// fq_codel keeps its queue near 5 ms, and this kernel has no fq_codel).
// DREGISTRY_BENCH_SWITCH_QUEUE_MS, if set, is the queue of what each host
// receives instead (the bridge's end of its link: a switch port's buffer),
// so the host's own queue (what it sends) and the switch's can differ.
const (
	rolloutNodes    = 8
	rolloutLayerMiB = 128
	rolloutRateMbit = 200
	// rolloutFetchTimeout bounds one node's `ctr content fetch`: a star
	// of 16 nodes moving a 1 GiB layer at 200 Mbit/s takes about 12 minutes.
	rolloutFetchTimeout = 30 * time.Minute
)

// BenchmarkRollout is issue 13's benchmark: a cluster where every node
// has its own NIC. Every node (its own containerd and its own dregistry)
// and the upstream registry run each in a network namespace of their own,
// joined by a bridge (testenv.Fabric); every one of those links is capped
// both ways with tbf at the same rate. Only the test's own link to the
// bridge (pushes, admin requests) is free. Node 1 is --egress.
//
// Each iteration pushes three new images (one uncompressed layer plus
// config; the upstream's receiving cap is lifted while the test pushes)
// and times, with `ctr content fetch` (no unpacking):
//   - single: the last node fetching an image straight from the upstream,
//     without the mirror: the reference;
//   - cold: every node fetching a new image at once through dregistry,
//     until the last one finished;
//   - warm: node 1 holds a new image (fetched through dregistry, and every
//     node lists it as a seeder); the other N−1 fetch it at once.
//
// It reports the times and their ratio to single, the upstream's bytes in
// the cold rollout per byte of the image (from the registry's log), and
// each node's upload (its link's tx bytes, headers and gossip included)
// per byte of the layer, max and sum over the nodes. It prints one row
// for docs/benchmarks.md per iteration. Afterwards every node must hold
// every blob it fetched, whole and matching its digest; the cold rollout
// must have taken each blob from the upstream exactly once, and containerd
// never went to the upstream itself.
//
//	DREGISTRY_E2E=required DREGISTRY_BENCH_NODES=8 go test -run '^$' -bench Rollout -benchtime 1x -timeout 60m ./e2e
func BenchmarkRollout(b *testing.B) {
	testenv.RequireRoot(b)
	count := envInt(b, "DREGISTRY_BENCH_NODES", rolloutNodes)
	if count < 2 || count > 200 {
		b.Fatalf("$DREGISTRY_BENCH_NODES=%d: want 2..200", count)
	}
	layerSize := int64(envInt(b, "DREGISTRY_BENCH_LAYER_MIB", rolloutLayerMiB)) << 20
	rate := int64(envInt(b, "DREGISTRY_BENCH_RATE_MBIT", rolloutRateMbit)) * 1_000_000

	queue := time.Duration(envInt(b, "DREGISTRY_BENCH_QUEUE_MS", int(testenv.DefaultQueue/time.Millisecond))) * time.Millisecond
	switchQueue := time.Duration(envInt(b, "DREGISTRY_BENCH_SWITCH_QUEUE_MS", int(queue/time.Millisecond))) * time.Millisecond
	c := startRolloutCluster(b, count, rate, queue, switchQueue, os.Getenv("DREGISTRY_BENCH_CC"))
	waitEgressKnown(b, c.up, c.nodes, c.nodes[:1])
	b.Logf("load average at the start: %s; TCP congestion control: %s; tbf queues %s", loadAverage(), cmp.Or(os.Getenv("DREGISTRY_BENCH_CC"), "the machine's"), queuesOf(queue, switchQueue))

	var sum rolloutResult
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := c.iteration(b, strconv.Itoa(i), layerSize)
		b.StartTimer()
		sum.add(r)
		if i == 0 {
			fmt.Println(rolloutHeader)
		}
		fmt.Println(r.row(count, layerSize, rate))
	}
	n := float64(b.N)
	b.ReportMetric(sum.single/n, "single-s")
	b.ReportMetric(sum.cold/n, "cold-s")
	b.ReportMetric(sum.cold/sum.single, "cold/single")
	b.ReportMetric(sum.warm/n, "warm-s")
	b.ReportMetric(sum.warm/sum.single, "warm/single")
	b.ReportMetric(sum.upstreamX/n, "cold-upstream-x")
	b.ReportMetric(sum.coldUp.max/n, "cold-upload-max-x")
	b.ReportMetric(sum.coldUp.sum/n, "cold-upload-sum-x")
	b.ReportMetric(sum.warmUp.max/n, "warm-upload-max-x")
	b.ReportMetric(sum.warmUp.sum/n, "warm-upload-sum-x")
	b.ReportMetric(sum.coldCPU/n, "cold-cpu-busy")
	b.ReportMetric(sum.warmCPU/n, "warm-cpu-busy")
	b.Logf("%d nodes, layer %d MiB, every link capped both ways at %d Mbit/s; load average at the end: %s",
		count, layerSize>>20, rate/1_000_000, loadAverage())
}

// rolloutCluster is the upstream and the nodes, each behind its own port.
type rolloutCluster struct {
	up     *testenv.Registry
	upPort *testenv.Port
	rate   int64
	queue  time.Duration // every link's tbf queue of what its host sends
	swq    time.Duration // and of what it receives (the switch port's)
	nodes  []*testenv.Node
	ports  []*testenv.Port // ports[i] is nodes[i]'s
}

// startRolloutCluster puts the upstream on fabric host .2 and node i on
// .11+i, each a host of its own: the node's containerd, every ctr it runs
// and its dregistry share its namespace and so its capped port.
func startRolloutCluster(b *testing.B, count int, rate int64, queue, switchQueue time.Duration, cc string) *rolloutCluster {
	b.Helper()
	f := testenv.NewFabric(b, "ro")
	c := &rolloutCluster{rate: rate, queue: queue, swq: switchQueue, upPort: f.Attach(b, "up", 2, 0)}
	c.shape(b, c.upPort)
	setCC(b, c.upPort, cc)
	c.up = testenv.StartRegistryIn(b, c.upPort.Netns, c.upPort.Addr+":5500")
	bin := testenv.BuildDregistry(b)
	key := testenv.NewClusterKey(b)
	for i := range count {
		port := f.Attach(b, fmt.Sprintf("n%d", i+1), 11+i, 0)
		c.shape(b, port)
		setCC(b, port, cc)
		args := []string{"--egress"}
		if i > 0 {
			args = []string{"--join", c.nodes[0].GossipAddr}
		}
		c.nodes = append(c.nodes, testenv.StartNode(b, testenv.NodeConfig{
			Name: fmt.Sprintf("node%d", i+1), IP: port.Addr, Upstream: c.up, Netns: port.Netns,
			Containerd: testenv.StartContainerdIn(b, "", port.Netns),
			ExtraArgs:  args, Binary: bin, Key: key,
		}))
		c.ports = append(c.ports, port)
	}
	return c
}

// setCC sets the TCP congestion control of p's host to cc, unless cc is
// empty.
func setCC(b *testing.B, p *testenv.Port, cc string) {
	b.Helper()
	if cc == "" {
		return
	}
	if out, err := p.Netns.Exec("sysctl", "-w", "net.ipv4.tcp_congestion_control="+cc); err != nil {
		b.Fatalf("%s: congestion control %q (allowed in a namespace: net.ipv4.tcp_allowed_congestion_control): %v: %s", p.Name, cc, err, out)
	}
}

// rolloutResult is one iteration's figures (or their sum).
type rolloutResult struct {
	single, cold, warm float64 // seconds
	upstreamX          float64 // upstream body bytes of the cold image ÷ its size
	upstreamLinkX      float64 // the upstream link's tx bytes in the cold rollout ÷ the image's size
	coldUp, warmUp     uploads
	coldCPU, warmCPU   float64 // the machine's CPU busy fraction during cold and warm
}

// uploads are the nodes' tx bytes per byte of the layer.
type uploads struct{ max, sum float64 }

func (r *rolloutResult) add(o rolloutResult) {
	r.single += o.single
	r.cold += o.cold
	r.warm += o.warm
	r.upstreamX += o.upstreamX
	r.upstreamLinkX += o.upstreamLinkX
	r.coldUp.max += o.coldUp.max
	r.coldUp.sum += o.coldUp.sum
	r.warmUp.max += o.warmUp.max
	r.warmUp.sum += o.warmUp.sum
	r.coldCPU += o.coldCPU
	r.warmCPU += o.warmCPU
}

const rolloutHeader = "| N | layer | link | single | cold | warm | upstream bytes (log / link) | cold upload max / sum | warm upload max / sum | CPU busy cold / warm |\n" +
	"|---|---|---|---|---|---|---|---|---|---|"

func (r rolloutResult) row(n int, layer, rate int64) string {
	return fmt.Sprintf("| %d | %d MiB | %d Mbit/s | %.1f s | %.1f s = %.2fx | %.1f s = %.2fx | %.3fx / %.3fx | %.2fx / %.2fx | %.2fx / %.2fx | %.0f%% / %.0f%% |",
		n, layer>>20, rate/1_000_000, r.single, r.cold, r.cold/r.single, r.warm, r.warm/r.single,
		r.upstreamX, r.upstreamLinkX, r.coldUp.max, r.coldUp.sum, r.warmUp.max, r.warmUp.sum, 100*r.coldCPU, 100*r.warmCPU)
}

// iteration pushes three new images and runs single, cold and warm; its
// caller times it as a whole only for the Go benchmark's own line.
func (c *rolloutCluster) iteration(b *testing.B, iter string, layerSize int64) rolloutResult {
	b.Helper()
	imgSingle, imgCold, imgWarm := c.push(b, "single", iter, layerSize), c.push(b, "cold", iter, layerSize), c.push(b, "warm", iter, layerSize)
	last := len(c.nodes) - 1
	var r rolloutResult

	r.single = c.fetchAll(b, []int{last}, imgSingle, false).Seconds()

	all := make([]int, len(c.nodes))
	for i := range all {
		all[i] = i
	}
	upBefore, before := c.counters(b)
	lost := c.losses(b)
	waste := c.waste(b)
	cpu := readCPU(b)
	r.cold = c.fetchAll(b, all, imgCold, true).Seconds()
	r.coldCPU = readCPU(b).busySince(cpu)
	upAfter, after := c.counters(b)
	r.coldUp = uploadsPer(before, after, imgCold.Layers[0].Size)
	b.Logf("cold, per node (up/down per blob): %s", perNode(c.nodes, before, after, imgCold.Layers[0].Size))
	b.Logf("cold, losses: %s", c.lossesSince(b, lost))
	b.Logf("cold, piece bytes each node sent (per blob): %s", c.piecesSent(b, imgCold.Layers[0], nil))
	b.Logf("cold, useful piece bytes each node received (per blob): %s", c.piecesReceived(b, imgCold.Layers[0]))
	b.Logf("cold, piece bytes each node received but did not need (per blob) / requests it moved: %s", c.wasteSince(b, waste, imgCold.Layers[0].Size))
	r.upstreamLinkX = float64(upAfter.Sub(upBefore).Tx) / float64(imageBytes(imgCold))

	// Warm: node 1 holds the image, and every other node lists it.
	c.fetchAll(b, []int{0}, imgWarm, true)
	waitSeederKnown(b, c.nodes[1:], c.nodes[0], imgWarm.Layers[0])
	_, before = c.counters(b)
	lost = c.losses(b)
	seeded := make([]int64, len(c.nodes))
	for i, n := range c.nodes {
		seeded[i] = uploadedBytes(b, n, imgWarm.Layers[0])
	}
	waste = c.waste(b)
	cpu = readCPU(b)
	r.warm = c.fetchAll(b, all[1:], imgWarm, true).Seconds()
	r.warmCPU = readCPU(b).busySince(cpu)
	_, after = c.counters(b)
	r.warmUp = uploadsPer(before, after, imgWarm.Layers[0].Size)
	b.Logf("warm, per node (up/down per blob): %s", perNode(c.nodes, before, after, imgWarm.Layers[0].Size))
	b.Logf("warm, losses: %s", c.lossesSince(b, lost))
	b.Logf("warm, piece bytes each node sent (per blob): %s", c.piecesSent(b, imgWarm.Layers[0], seeded))
	b.Logf("warm, useful piece bytes each node received (per blob): %s", c.piecesReceived(b, imgWarm.Layers[0]))
	b.Logf("warm, piece bytes each node received but did not need (per blob) / requests it moved: %s", c.wasteSince(b, waste, imgWarm.Layers[0].Size))

	reqs := c.up.Requests(b)
	r.upstreamX = float64(upstreamBytes(reqs, imgCold)) / float64(imageBytes(imgCold))
	for _, img := range []testenv.Image{imgCold, imgWarm} {
		if direct := testenv.FromContainerd(reqs); containsRepo(direct, img.Repo) {
			b.Errorf("containerd went to the upstream itself for %s, which dregistry should serve", img.Ref)
		}
		for _, blob := range img.Blobs() {
			if gets := blobGETs(reqs, blob.Digest); len(gets) != 1 || testenv.BlobSends(gets, blob.Digest, blob.Size) != 1 {
				b.Errorf("upstream answered %+v for blob %s of %s, want one whole send", gets, blob.Digest, img.Ref)
			}
		}
	}
	c.checkHolds(b, []int{last}, imgSingle)
	c.checkHolds(b, all, imgCold)
	c.checkHolds(b, all, imgWarm)
	return r
}

// push pushes a new image of one uncompressed layer with the upstream's
// receiving cap lifted: the pushes are the test's, not the cluster's.
func (c *rolloutCluster) push(b *testing.B, kind, iter string, layerSize int64) testenv.Image {
	b.Helper()
	if err := c.upPort.Unlimit(); err != nil {
		b.Fatal(err)
	}
	img := c.up.Push(b, testenv.ImageSpec{Repo: "bench/rollout-" + kind, Tag: "v" + iter, LayerSizes: []int64{layerSize}, Uncompressed: true})
	c.shape(b, c.upPort)
	return img
}

// shape caps p both ways at the cluster's rate, with its queue lengths.
func (c *rolloutCluster) shape(b *testing.B, p *testenv.Port) {
	b.Helper()
	if err := p.LimitQueues(c.rate, c.queue, c.swq); err != nil {
		b.Fatal(err)
	}
}

// queuesOf describes the links' queues for the benchmark's log.
func queuesOf(queue, switchQueue time.Duration) string {
	if queue == switchQueue {
		return "of " + queue.String()
	}
	return fmt.Sprintf("of %s (what a host sends) and %s (what it receives)", queue, switchQueue)
}

// fetchAll runs `ctr content fetch` of img on the nodes of idx at the same
// moment, through dregistry (viaMirror) or straight from the upstream, and
// returns the time until the last one finished.
//
// With more than one node it also logs when each finished and, second by
// second, how much of the fetching nodes' downlinks was used: idle links
// in the middle point at piece choice, a long tail at a straggler.
func (c *rolloutCluster) fetchAll(b *testing.B, idx []int, img testenv.Image, viaMirror bool) time.Duration {
	b.Helper()
	var use <-chan string
	stop := make(chan struct{})
	if len(idx) > 1 {
		use = c.sampleDownlinks(b, idx, stop)
	}
	finished := make([]time.Duration, len(idx))
	began := time.Now()
	errs, took := atOnce(len(idx), func(i int) error {
		defer func() { finished[i] = time.Since(began) }()
		return c.fetch(idx[i], img.Ref, viaMirror)
	})
	close(stop)
	for i, err := range errs {
		if err != nil {
			b.Fatalf("%s: %v", c.nodes[idx[i]].Name, err)
		}
	}
	if use != nil {
		var parts []string
		for i, d := range finished {
			parts = append(parts, fmt.Sprintf("%s %.1f", c.nodes[idx[i]].Name, d.Seconds()))
		}
		b.Logf("%s: finished (s): %s; link use per second (%% of a link): %s", img.Ref, strings.Join(parts, ", "), <-use)
	}
	return took
}

// sampleDownlinks reads the ports every second until stop and then sends,
// for each second, as a percentage of what a capped link carries: the
// bytes the nodes of idx received (over all their downlinks), what node 1
// (the egress, the warm seeder) sent, and what the upstream sent.
func (c *rolloutCluster) sampleDownlinks(b *testing.B, idx []int, stop <-chan struct{}) <-chan string {
	b.Helper()
	out := make(chan string, 1)
	type reading struct{ down, seed, up int64 }
	read := func() (reading, bool) {
		var r reading
		for _, i := range idx {
			n, err := c.ports[i].Counters()
			if err != nil {
				return r, false
			}
			r.down += n.Rx
		}
		n, err := c.ports[0].Counters()
		if err != nil {
			return r, false
		}
		r.seed = n.Tx
		if n, err = c.upPort.Counters(); err != nil {
			return r, false
		}
		r.up = n.Tx
		return r, true
	}
	go func() {
		var down, seed, up []string
		series := func() string {
			return fmt.Sprintf("downlinks [%s]; node1 uplink [%s]; upstream uplink [%s]",
				strings.Join(down, " "), strings.Join(seed, " "), strings.Join(up, " "))
		}
		last, ok := read()
		at := time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for len(down) < 3600 {
			select {
			case <-stop:
				out <- series()
				return
			case <-tick.C:
			}
			now, okNow := read()
			t := time.Now()
			link := float64(c.rate) / 8 * t.Sub(at).Seconds()
			pct := func(d int64, links int) string {
				if !ok || !okNow {
					return "?"
				}
				return fmt.Sprintf("%.0f", 100*float64(d)/(link*float64(links)))
			}
			down = append(down, pct(now.down-last.down, len(idx)))
			seed = append(seed, pct(now.seed-last.seed, 1))
			up = append(up, pct(now.up-last.up, 1))
			last, ok, at = now, okNow, t
		}
		<-stop
		out <- series() + " …"
	}()
	return out
}

// fetch runs ctr inside node i's namespace: ctr itself resolves and
// downloads, so its traffic must cross the node's port.
func (c *rolloutCluster) fetch(i int, ref string, viaMirror bool) error {
	n := c.nodes[i]
	ctx, cancel := context.WithTimeout(context.Background(), rolloutFetchTimeout)
	defer cancel()
	args := []string{"-a", n.Containerd.Address, "-n", "default", "content", "fetch", "--plain-http"}
	if viaMirror {
		args = append(args, "--hosts-dir", n.HostsDir)
	}
	path, argv := c.ports[i].Netns.Command("ctr", append(args, ref))
	cmd := exec.CommandContext(ctx, path, argv...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, lastLines(out.String(), 5))
	}
	return nil
}

// counters reads the upstream's and every node's port counters.
func (c *rolloutCluster) counters(b *testing.B) (testenv.Counters, []testenv.Counters) {
	b.Helper()
	up, err := c.upPort.Counters()
	if err != nil {
		b.Fatal(err)
	}
	nodes := make([]testenv.Counters, len(c.ports))
	for i, p := range c.ports {
		if nodes[i], err = p.Counters(); err != nil {
			b.Fatal(err)
		}
	}
	return up, nodes
}

// piecesSent lists the piece bytes each node's swarm sent for blob since
// before (nil: since it started), per byte of the blob: the payload of
// its upload, without the headers and retransmissions its link counts.
func (c *rolloutCluster) piecesSent(b *testing.B, blob testenv.Blob, before []int64) string {
	b.Helper()
	parts := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		sent := uploadedBytes(b, n, blob)
		if before != nil {
			sent -= before[i]
		}
		parts[i] = fmt.Sprintf("%s %.3f", n.Name, float64(sent)/float64(blob.Size))
	}
	return strings.Join(parts, ", ")
}

// piecesReceived lists the useful piece bytes each node's swarm received
// for blob from its peers (downloadedBytes of /admin/v1/stats), as
// multiples of the blob. Above 1.0 a node fetched pieces again (a chunk
// torrent dropped and added back); what the nodes sent beyond what they
// received usefully (piecesSent) is chunks that arrived after they were
// no longer wanted (a cancelled request, a piece another peer delivered).
func (c *rolloutCluster) piecesReceived(b *testing.B, blob testenv.Blob) string {
	b.Helper()
	parts := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		var st struct {
			Torrents []struct {
				Digest     string `json:"digest"`
				Downloaded int64  `json:"downloadedBytes"`
			} `json:"torrents"`
		}
		if err := adminGet(n, "/admin/v1/stats", &st); err != nil {
			b.Fatal(err)
		}
		var got int64
		for _, tr := range st.Torrents {
			if tr.Digest == blob.Digest.String() {
				got = tr.Downloaded
			}
		}
		parts[i] = fmt.Sprintf("%s %.3f", n.Name, float64(got)/float64(blob.Size))
	}
	return strings.Join(parts, ", ")
}

// swarmWaste is a node's swarmWastedBytes and swarmRequestsStolen.
type swarmWaste struct {
	Wasted int64 `json:"swarmWastedBytes"`
	Stolen int64 `json:"swarmRequestsStolen"`
}

// waste reads every node's swarmWaste.
func (c *rolloutCluster) waste(b *testing.B) []swarmWaste {
	b.Helper()
	out := make([]swarmWaste, len(c.nodes))
	for i, n := range c.nodes {
		var st struct {
			Totals swarmWaste `json:"totals"`
		}
		if err := adminGet(n, "/admin/v1/stats", &st); err != nil {
			b.Fatal(err)
		}
		out[i] = st.Totals
	}
	return out
}

// wasteSince lists, per node since before, the piece bytes it received
// but did not need (as multiples of size) and the requests it moved from
// a peer that delivered nothing in time to another. With piecesSent and
// piecesReceived it splits what was sent and not used into chunks that
// arrived after their request moved (counted here) and chunks lost with a
// closed connection (neither here nor in the useful bytes).
func (c *rolloutCluster) wasteSince(b *testing.B, before []swarmWaste, size int64) string {
	b.Helper()
	after := c.waste(b)
	parts := make([]string, len(after))
	for i := range after {
		parts[i] = fmt.Sprintf("%s %.3f / %d", c.nodes[i].Name, float64(after[i].Wasted-before[i].Wasted)/float64(size), after[i].Stolen-before[i].Stolen)
	}
	return strings.Join(parts, ", ")
}

// losses reads the upstream's port's losses (first) and every node's.
func (c *rolloutCluster) losses(b *testing.B) []testenv.Losses {
	b.Helper()
	ports := append([]*testenv.Port{c.upPort}, c.ports...)
	out := make([]testenv.Losses, len(ports))
	for i, p := range ports {
		l, err := p.Losses()
		if err != nil {
			b.Fatal(err)
		}
		out[i] = l
	}
	return out
}

// lossesSince lists, for the upstream and each node, the TCP segments it
// retransmitted and the packets its link's queues dropped since before:
// of what it sent (its own queue; the segment never crossed the link) and
// of what was sent to it (the sender's link carried it for nothing).
func (c *rolloutCluster) lossesSince(b *testing.B, before []testenv.Losses) string {
	b.Helper()
	after := c.losses(b)
	parts := make([]string, len(after))
	for i := range after {
		d := after[i].Sub(before[i])
		name := "upstream"
		if i > 0 {
			name = c.nodes[i-1].Name
		}
		parts[i] = fmt.Sprintf("%s retransmitted %d, dropped sending %d / receiving %d", name, d.Retrans, d.TxDrops, d.RxDrops)
	}
	return strings.Join(parts, "; ")
}

func uploadsPer(before, after []testenv.Counters, blobSize int64) uploads {
	var u uploads
	for i := range before {
		x := float64(after[i].Sub(before[i]).Tx) / float64(blobSize)
		u.max = max(u.max, x)
		u.sum += x
	}
	return u
}

// perNode lists each node's upload and download between two readings,
// per byte of the blob: where the bytes went, for the record.
func perNode(nodes []*testenv.Node, before, after []testenv.Counters, blobSize int64) string {
	var parts []string
	for i := range before {
		d := after[i].Sub(before[i])
		parts = append(parts, fmt.Sprintf("%s %.2f/%.2f", nodes[i].Name, float64(d.Tx)/float64(blobSize), float64(d.Rx)/float64(blobSize)))
	}
	return strings.Join(parts, ", ")
}

// checkHolds asserts that each node of idx holds every blob of img in its
// containerd content store, whole and matching its digest.
func (c *rolloutCluster) checkHolds(b *testing.B, idx []int, img testenv.Image) {
	b.Helper()
	for _, i := range idx {
		for _, blob := range img.Blobs() {
			if err := fileHasDigest(contentPath(c.nodes[i], blob.Digest), blob); err != nil {
				b.Errorf("%s: %s of %s: %v", c.nodes[i].Name, blob.Digest, img.Ref, err)
			}
		}
	}
}

// waitSeederKnown waits until every node lists holder as a complete
// seeder of blob (holder is an egress node).
func waitSeederKnown(b *testing.B, nodes []*testenv.Node, holder *testenv.Node, blob testenv.Blob) {
	b.Helper()
	for _, n := range nodes {
		deadline := time.Now().Add(clusterTimeout)
		for {
			missing, state := missingEgress(b, n, []*testenv.Node{holder}, blob.Digest.String())
			if missing == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s does not list %s as a seeder of %s after %s (last: %s)", n.Name, holder.Name, blob.Digest, clusterTimeout, state)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// machineCPU is the machine's CPU time from /proc/stat, in clock ticks.
type machineCPU struct{ busy, total uint64 }

// readCPU reads the aggregate "cpu" line: idle and iowait are idle, the
// rest (user, nice, system, irq, softirq, steal) busy.
func readCPU(b *testing.B) machineCPU {
	b.Helper()
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("/proc/stat starts with %q", line)
	}
	var t machineCPU
	for i, v := range f[1:9] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %q: %v", line, err)
		}
		t.total += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
	}
	return t
}

// busySince is the fraction of the machine's CPU time that was busy
// between then and t: near 1, the cores, not the links, set the pace.
func (t machineCPU) busySince(then machineCPU) float64 {
	if t.total <= then.total {
		return 0
	}
	return float64(t.busy-then.busy) / float64(t.total-then.total)
}

// loadAverage is the machine's 1, 5 and 15 minute load, for the record.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown: " + err.Error()
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return strings.TrimSpace(string(b))
	}
	return strings.Join(f[:3], " ")
}
