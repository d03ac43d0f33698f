package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 7, process and disk faults: a seeder dying, dregistry stopped or
// hung, containerd restarted, a full data directory and a corrupted cached
// blob. Every case ends with each pull complete and the right digests in
// containerd, and no node listed as a complete seeder without the whole
// verified blob (the seeder watch of egress_test.go).

// downloadLimit caps the downloading node's swarm at 24 MiB/s, so a 96 MiB
// layer takes about four seconds: time to see it mid-way and act.
const downloadLimit = 24 << 20

func TestFaultSeederKilledMidDownload(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts three nodes")
	}
	up, img, nodes := startFaultCluster(t, 6, "e2e/fault-seeder", 2)
	layer := img.Layers[0]
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n1.Pull(t, img.Ref)
	n2.Pull(t, img.Ref)
	waitSeeds(t, []*testenv.Node{n3}, n1, layer.Digest)
	waitSeeds(t, []*testenv.Node{n3}, n2, layer.Digest)
	// With the upstream gone the rest can only come from the surviving seeder.
	up.Stop(t)

	watch := watchSeeders(nodes, layer)
	// Both seeders are checked while alive: a killed one is listed complete
	// until gossip notices, and must not be judged by a refused connection.
	for _, n := range []*testenv.Node{n1, n2} {
		waitFor(t, faultTimeout, "the seeder watch checked "+n.Name, func() (bool, string) { return watch.hasChecked(n.HTTPAddr), "" })
	}
	pull := pullAsync(t, n3, img.Ref)
	st := waitDownloading(t, n3, layer, 8<<20, pull)
	// Kill the seeder that gave the most so far (n1 is the egress, but the
	// tag and manifest were resolved before the layer started).
	victim, survivor := n2, n1
	if st.ReceivedFrom[n1.IP] > st.ReceivedFrom[n2.IP] {
		victim, survivor = n1, n2
	}
	t.Logf("%s has %d of %d bytes (from %v); killing %s", n3.Name, st.BytesCompleted, layer.Size, st.ReceivedFrom, victim.Name)
	victim.Kill(t)
	watch.exclude(victim)
	waitPull(t, n3, pull)

	checkImage(t, n3, img)
	after, ok, err := torrentOf(n3, layer.Digest)
	if err != nil || !ok {
		t.Fatalf("%s: no torrent of the layer after the pull: %v", n3.Name, err)
	}
	t.Logf("%s received the layer from %v", n3.Name, after.ReceivedFrom)
	if after.ReceivedFrom[survivor.IP] <= st.ReceivedFrom[survivor.IP] {
		t.Errorf("%s received nothing from %s after %s died: before %v, after %v", n3.Name, survivor.Name, victim.Name, st.ReceivedFrom, after.ReceivedFrom)
	}
	by := testenv.BytesBySource(n3.Served(t))
	if by["swarm"] < layer.Size {
		t.Errorf("%s served %v bytes by source, want the %d-byte layer from the swarm", n3.Name, by, layer.Size)
	}
	waitSeeds(t, []*testenv.Node{survivor}, n3, layer.Digest)
	finishWatch(t, watch, []*testenv.Node{survivor, n3})
}

func TestFaultDregistryStoppedOrHung(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts a node")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(7)+":5500")
	n := testenv.StartNode(t, testenv.NodeConfig{Name: "node1", IP: testenv.LoopbackIP(11), Upstream: up})

	t.Run("stopped: containerd falls back to the upstream, which hosts.toml keeps last", func(t *testing.T) {
		img := testenv.PushImage(t, up, "e2e/fault-stopped", "v1", 1<<20, 4<<20)
		n.Stop(t)
		defer n.Start(t)
		n.Pull(t, img.Ref)
		checkImage(t, n, img)
		reqs := up.Requests(t)
		for _, b := range img.Blobs() {
			if sends := testenv.BlobSends(testenv.FromContainerd(reqs), b.Digest, b.Size); sends != 1 {
				t.Errorf("upstream sent %s to containerd itself %d times, want once (the fallback)", b.Digest, sends)
			}
		}
	})

	t.Run("hung (SIGSTOP): containerd 1.6 waits on the mirror, and the same pull completes once it resumes", func(t *testing.T) {
		img := testenv.PushImage(t, up, "e2e/fault-hung", "v1", 1<<20, 4<<20)
		n.Pause(t)
		pull := pullAsync(t, n, img.Ref)
		// containerd has no timeout for a mirror that accepted the
		// connection (notes/containerd.md): the pull is still waiting.
		select {
		case err := <-pull:
			n.Resume(t)
			t.Fatalf("the pull ended (err %v) while the mirror was frozen; containerd 1.6 was expected to wait on it", err)
		case <-time.After(10 * time.Second):
		}
		for _, q := range testenv.FromContainerd(up.Requests(t)) {
			if strings.Contains(q.Path, img.Repo) {
				t.Errorf("containerd reached the upstream while the mirror hung: %+v", q)
			}
		}
		n.Resume(t)
		waitPull(t, n, pull)
		checkImage(t, n, img)
		waitStatus(t, n, "/readyz", http.StatusOK)
		var served int
		for _, s := range n.Served(t) {
			if strings.Contains(s.Path, img.Repo) && s.Status == http.StatusOK {
				served++
			}
		}
		if served == 0 {
			t.Errorf("%s served nothing of %s after resuming", n.Name, img.Repo)
		}
	})
}

func TestFaultContainerdRestartedUnderDregistry(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts two nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(8)+":5500")
	before := testenv.PushImage(t, up, "e2e/fault-ctrd-before", "v1", 1<<20)
	// Above the swarm's small-blob size: it must come as a torrent.
	during := up.Push(t, testenv.ImageSpec{Repo: "e2e/fault-ctrd-during", Tag: "v1", LayerSizes: []int64{24 << 20}, Uncompressed: true})
	after := testenv.PushImage(t, up, "e2e/fault-ctrd-after", "v1", 2<<20)
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up, Args: egressFirst(1)})
	n1, n2 := nodes[0], nodes[1]
	n2.Pull(t, before.Ref)
	waitSeeds(t, []*testenv.Node{n1}, n2, before.Layers[0].Digest)
	waitStatus(t, n2, "/readyz", http.StatusOK)

	n2.Containerd.Stop(t)
	waitStatus(t, n2, "/readyz", http.StatusServiceUnavailable)
	if code, body := get(t, n2.URL()+"/v2/"); code != http.StatusOK {
		t.Errorf("%s /v2/ with containerd down: %d %s, want 200 (dregistry keeps serving)", n2.Name, code, body)
	}
	n2.Containerd.Start(t)
	// Pulled straight from the upstream, not through the mirror: dregistry
	// learns of it only from containerd (its events or its resync).
	if out, err := n2.Containerd.Ctr(t, "-n", "default", "images", "pull", "--plain-http", during.Ref); err != nil {
		t.Fatalf("direct pull: %v\n%s", err, out)
	}
	waitStatus(t, n2, "/readyz", http.StatusOK)
	for _, b := range []testenv.Blob{before.Layers[0], during.Layers[0], during.Manifest} {
		waitSeeds(t, []*testenv.Node{n1}, n2, b.Digest)
	}

	mark := len(n2.Served(t))
	n2.Pull(t, after.Ref)
	checkImage(t, n2, after)
	served := 0
	for _, s := range n2.Served(t)[mark:] {
		if strings.Contains(s.Path, after.Repo) && s.Status == http.StatusOK && !s.Aborted {
			served++
		}
	}
	if served == 0 {
		t.Errorf("%s served nothing of %s after containerd's restart", n2.Name, after.Repo)
	}
	if direct := testenv.FromContainerd(up.Requests(t)); len(direct) > 0 {
		for _, q := range direct {
			if strings.Contains(q.Path, after.Repo) {
				t.Errorf("containerd fell back to the upstream after the restart: %+v", q)
			}
		}
	}

	// A peer fetches what containerd gained while dregistry watched it
	// restart: with the upstream gone, only node 2 has it.
	up.Stop(t)
	layer := during.Layers[0]
	watch := watchSeeders(nodes, layer)
	byDigest := up.Addr + "/" + during.Repo + "@" + during.Manifest.Digest.String()
	n1.Pull(t, byDigest)
	checkHolds(t, n1, append([]testenv.Blob{during.Manifest}, during.Blobs()...))
	if err := peerBlobVerified(n1, n2, layer); err != nil {
		t.Errorf("%s fetching the layer from %s: %v", n1.Name, n2.Name, err)
	}
	st, ok, err := torrentOf(n1, layer.Digest)
	if err != nil || !ok || st.ReceivedFrom[n2.IP] < layer.Size {
		t.Errorf("%s's torrent of the layer: %+v (found %v, err %v); want all %d bytes from %s", n1.Name, st, ok, err, layer.Size, n2.Name)
	}
	waitSeeds(t, []*testenv.Node{n2}, n1, layer.Digest)
	finishWatch(t, watch, []*testenv.Node{n1, n2})
}

func TestFaultDataDirFull(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts two nodes and mounts a tmpfs")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(9)+":5500")
	first := up.Push(t, testenv.ImageSpec{Repo: "e2e/fault-full-1", Tag: "v1", LayerSizes: []int64{48 << 20}, Uncompressed: true})
	second := up.Push(t, testenv.ImageSpec{Repo: "e2e/fault-full-2", Tag: "v1", LayerSizes: []int64{48 << 20}, Uncompressed: true})
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up, Args: egressFirst(1)})
	n1, n2 := nodes[0], nodes[1]
	// Node 2's data dir becomes a 16 MiB tmpfs: a 48 MiB download cannot fit.
	n2.Stop(t)
	mountTmpfs(t, n2.DataDir, "16m")
	n2.Start(t)

	layer := first.Layers[0]
	n1.Pull(t, first.Ref)
	waitSeeds(t, []*testenv.Node{n2}, n1, layer.Digest)
	watch := watchSeeders(nodes, layer)
	mark := len(n2.Served(t))
	n2.Pull(t, first.Ref)
	checkImage(t, n2, first)
	if !logHas(t, n2, "no space left on device") {
		t.Errorf("%s's log does not say its data dir is full; tail:\n%s", n2.Name, n2.LogTail())
	}
	for _, s := range n2.Served(t)[mark:] {
		if strings.Contains(s.Path, layer.Digest.String()) {
			t.Logf("%s answered %s %s: %d from %q, %d bytes, aborted %v", n2.Name, s.Method, s.Path, s.Status, s.Source, s.Bytes, s.Aborted)
		}
	}
	for _, q := range layerGETsFromContainerd(up.Requests(t), layer.Digest) {
		t.Logf("containerd fell back to the upstream for the layer: %d, %d bytes", q.Status, q.Bytes)
	}
	if st, ok, err := torrentOf(n2, layer.Digest); err == nil && ok && !st.Seeding {
		t.Errorf("%s keeps a download of the layer that did not fit: %+v", n2.Name, st)
	}
	waitSeeds(t, []*testenv.Node{n1}, n2, layer.Digest)
	finishWatch(t, watch, []*testenv.Node{n1, n2})

	// Space returns: the next download goes through the swarm again.
	resizeTmpfs(t, n2.DataDir, "256m")
	layer = second.Layers[0]
	n1.Pull(t, second.Ref)
	waitSeeds(t, []*testenv.Node{n2}, n1, layer.Digest)
	mark = len(n2.Served(t))
	n2.Pull(t, second.Ref)
	checkImage(t, n2, second)
	if by := testenv.BytesBySource(n2.Served(t)[mark:]); by["swarm"] < layer.Size {
		t.Errorf("%s served %v bytes by source once space returned, want the %d-byte layer from the swarm", n2.Name, by, layer.Size)
	}
	if direct := layerGETsFromContainerd(up.Requests(t), layer.Digest); len(direct) > 0 {
		t.Errorf("containerd fetched the layer itself once space returned: %+v", direct)
	}
}

func TestFaultCorruptedDownloadOnDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts three nodes")
	}
	up, img, nodes := startFaultCluster(t, 10, "e2e/fault-corrupt", 1)
	layer := img.Layers[0]
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n1.Pull(t, img.Ref)
	waitSeeds(t, []*testenv.Node{n2, n3}, n1, layer.Digest)

	// Node 2 downloads part of the layer (a GET on its mirror, as containerd
	// sends), crashes, and finds one of its verified pieces corrupted on
	// disk when it comes back.
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n2.URL()+"/v2/"+img.Repo+"/blobs/"+layer.Digest.String()+"?ns="+up.Addr, nil)
		if err == nil {
			var resp *http.Response
			if resp, err = http.DefaultClient.Do(req); err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		got <- err
	}()
	waitDownloading(t, n2, layer, 32<<20, got)
	n2.Kill(t)
	piece := corruptCompletePiece(t, n2, layer)
	t.Logf("flipped bytes of verified piece %d in %s's download", piece, n2.Name)
	n2.Start(t)

	watch := watchSeeders(nodes, layer)
	n2.Pull(t, img.Ref)
	checkImage(t, n2, img)
	if !logHas(t, n2, "failed their hash check", layer.Digest.String()) {
		t.Errorf("%s's log does not report the corrupted piece; tail:\n%s", n2.Name, n2.LogTail())
	}
	waitSeeds(t, []*testenv.Node{n3}, n2, layer.Digest)

	// Node 3 takes the image from node 2 alone: the upstream and node 1 are
	// gone, so every byte it commits passed through node 2's disk.
	up.Stop(t)
	n1.Stop(t)
	watch.exclude(n1)
	n3.Pull(t, up.Addr+"/"+img.Repo+"@"+img.Manifest.Digest.String())
	checkHolds(t, n3, append([]testenv.Blob{img.Manifest}, img.Blobs()...))
	if err := peerBlobVerified(n3, n2, layer); err != nil {
		t.Errorf("%s fetching the layer from %s: %v", n3.Name, n2.Name, err)
	}
	waitSeeds(t, []*testenv.Node{n2}, n3, layer.Digest)
	finishWatch(t, watch, []*testenv.Node{n2, n3})
}

func TestFaultCorruptedSeedWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts three nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(10)+":5500")
	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/fault-spool", Tag: "v1", LayerSizes: []int64{48 << 20}, Uncompressed: true})
	layer := img.Layers[0]
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 3, Upstream: up, Args: func(i int) []string {
		switch i {
		case 0:
			return []string{"--egress"}
		case 1:
			// The good seeder is slow, so node 3 asks the corrupted one too.
			return []string{"--upload-limit", strconv.Itoa(downloadLimit)}
		}
		return nil
	}})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	// Node 2's pull makes node 1 fetch the layer into its egress spool and
	// seed it from there.
	n2.Pull(t, img.Ref)
	waitSeeds(t, []*testenv.Node{n3}, n1, layer.Digest)
	waitSeeds(t, []*testenv.Node{n3}, n2, layer.Digest)
	watch := watchSeeders(nodes, layer)
	for _, n := range []*testenv.Node{n1, n2} {
		waitFor(t, faultTimeout, "the seeder watch checked "+n.Name, func() (bool, string) { return watch.hasChecked(n.HTTPAddr), "" })
	}
	spool := spoolPath(n1, layer.Digest)
	if err := flipEveryPiece(spool, layer.Size); err != nil {
		t.Fatalf("corrupt %s's spool: %v", n1.Name, err)
	}

	n3.Pull(t, img.Ref)
	checkImage(t, n3, img)
	if !logHas(t, n1, "does not match its piece hash", layer.Digest.String()) {
		t.Errorf("%s's log does not report its corrupted seed; tail:\n%s", n1.Name, n1.LogTail())
	}
	for _, asker := range []*testenv.Node{n2, n3} {
		waitFor(t, faultTimeout, asker.Name+" no longer lists "+n1.Name+" as a seeder", func() (bool, string) {
			s := seeders(t, asker, layer.Digest.String())
			return !hasSeeder(s, n1.HTTPAddr, false), fmt.Sprint(s)
		})
	}
	if err := peerBlobVerified(n3, n1, layer); err == nil {
		t.Errorf("%s still serves the layer from its corrupted spool and it verified", n1.Name)
	} else if !strings.Contains(err.Error(), "404") {
		t.Errorf("%s's peer endpoint after the corruption: %v, want 404 (not seeded)", n1.Name, err)
	}
	st, ok, err := torrentOf(n3, layer.Digest)
	t.Logf("%s received the layer from %v (found %v, err %v)", n3.Name, st.ReceivedFrom, ok, err)
	waitSeeds(t, []*testenv.Node{n2}, n3, layer.Digest)
	watch.exclude(n1)
	finishWatch(t, watch, []*testenv.Node{n2, n3})
}
