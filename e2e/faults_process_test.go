package e2e

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

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
	watch.exclude(victim)
	victim.Kill(t)
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
	// node1 is the one stopped and frozen (the egress, so it fetches for
	// itself); node2 is there to list it, for the seeder watch.
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up, Args: egressFirst(1)})
	n, peer := nodes[0], nodes[1]
	stopped := testenv.PushImage(t, up, "e2e/fault-stopped", "v1", 1<<20, 4<<20)
	watched := stopped.Layers[len(stopped.Layers)-1]
	watch := watchSeeders(nodes, watched)

	t.Run("stopped: containerd falls back to the upstream, which hosts.toml keeps last", func(t *testing.T) {
		img := stopped
		watch.exclude(n)
		n.Stop(t)
		defer func() {
			n.Start(t)
			watch.include(n)
		}()
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
		// Once restarted, node1 seeds what containerd fetched while it was
		// down: node2 lists it, and the watch checks it serves the layer.
		waitSeeds(t, []*testenv.Node{peer}, n, watched.Digest)
		watch.exclude(n)
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
		watch.include(n)
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
	finishWatch(t, watch, []*testenv.Node{n})
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
	// containerd comes back on a socket dregistry does not know, so its
	// event stream stays down while an image is pulled straight from the
	// upstream (not through the mirror): dregistry can learn of it only
	// from its resync once containerd is back where it looks.
	n2.Containerd.StartElsewhere(t)
	if out, err := n2.Containerd.Ctr(t, "-n", "default", "images", "pull", "--plain-http", during.Ref); err != nil {
		t.Fatalf("direct pull: %v\n%s", err, out)
	}
	if code, body := get(t, n2.URL()+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("premise: %s /readyz during the direct pull: %d %s, want 503 (containerd out of its reach)", n2.Name, code, body)
	}
	n2.Containerd.Stop(t)
	n2.Containerd.Start(t)
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
	// The disk is the limit here, not --cache-size (whose default, a share
	// of the filesystem, would refuse the download before the disk does).
	args := func(i int) []string { return append(egressFirst(1)(i), "--cache-size", "1GiB") }
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up, Args: args})
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
	// The layer reached containerd whole through the egress stream, and
	// containerd never went to the upstream itself.
	var viaEgress int64
	for _, s := range n2.Served(t)[mark:] {
		if strings.Contains(s.Path, layer.Digest.String()) {
			t.Logf("%s answered %s %s: %d from %q, %d bytes, aborted %v", n2.Name, s.Method, s.Path, s.Status, s.Source, s.Bytes, s.Aborted)
			if s.Method == http.MethodGet && s.Source == "egress" && !s.Aborted {
				viaEgress += s.Bytes
			}
		}
	}
	if viaEgress < layer.Size {
		t.Errorf("%s served %d bytes of the %d-byte layer through the egress stream, want all of it", n2.Name, viaEgress, layer.Size)
	}
	if direct := layerGETsFromContainerd(up.Requests(t), layer.Digest); len(direct) > 0 {
		t.Errorf("containerd fetched the layer from the upstream itself: %+v", direct)
	}
	if st, ok, err := torrentOf(n2, layer.Digest); err == nil && ok && !st.Seeding {
		t.Errorf("%s keeps a download of the layer that did not fit: %+v", n2.Name, st)
	}
	// Nothing partial is left on the full disk (bounded: the daemon drops
	// what it cannot store once it gives up on it).
	waitFor(t, faultTimeout, "no partial file of the layer is left in "+n2.Name+"'s data dir", func() (bool, string) {
		left := partialFiles(t, n2.DataDir, layer.Digest)
		return len(left) == 0, strings.Join(left, ", ")
	})
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
	got := make(chan error, 1)
	go func() {
		resp, cancel, err := open(http.MethodGet, n2.URL()+"/v2/"+img.Repo+"/blobs/"+layer.Digest.String()+"?ns="+up.Addr)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cancel()
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
	watch.exclude(n1)
	n1.Stop(t)
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
	watch.corrupted(n1)
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
	// The puller's copy came from the other seeder: nothing useful from the
	// corrupted one, the whole layer from n2, through the swarm.
	from := receivedFrom(t, n3, layer.Digest.String())
	t.Logf("%s received the layer from %v", n3.Name, from)
	if from[n1.IP] != 0 || from[n2.IP] < layer.Size {
		t.Errorf("%s received %v piece bytes by peer, want all %d from %s (%s) and none from the corrupted %s (%s)", n3.Name, from, layer.Size, n2.Name, n2.IP, n1.Name, n1.IP)
	}
	if by := testenv.BytesBySource(n3.Served(t)); by["swarm"] < layer.Size {
		t.Errorf("%s served %v bytes by source, want the %d-byte layer from the swarm", n3.Name, by, layer.Size)
	}
	waitSeeds(t, []*testenv.Node{n2}, n3, layer.Digest)
	finishWatch(t, watch, []*testenv.Node{n2, n3})
}

// partialFiles lists the files under dir that hold a download or an egress
// fetch of d that did not finish: swarm/downloads/... and *.partial.
func partialFiles(t *testing.T, dir string, d digest.Digest) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if !e.IsDir() && strings.Contains(path, d.Encoded()) &&
			(strings.HasPrefix(rel, filepath.Join("swarm", "downloads")) || strings.HasSuffix(path, ".partial")) {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}
