package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/testenv"
	"github.com/dregistry/dregistry/swarm"
)

// faultTimeout bounds each wait of the fault tests: a pull, a daemon
// recovering, gossip spreading an announcement.
const faultTimeout = 60 * time.Second

// torrentState is one entry of GET /admin/v1/torrents with its progress.
type torrentState struct {
	Digest         string           `json:"digest"`
	Size           int64            `json:"size"`
	Seeding        bool             `json:"seeding"`
	ConnectedPeers int              `json:"connectedPeers"`
	Verified       bool             `json:"verified"`
	BytesCompleted int64            `json:"bytesCompleted"`
	ReceivedFrom   map[string]int64 `json:"receivedFrom"`
}

// torrentOf returns n's torrent of d; ok is false when it has none.
func torrentOf(n *testenv.Node, d digest.Digest) (st torrentState, ok bool, err error) {
	list, err := torrentsOf(n)
	if err != nil {
		return st, false, err
	}
	for _, tr := range list {
		if tr.Digest == d.String() {
			return tr, true, nil
		}
	}
	return st, false, nil
}

// torrentsOf returns every torrent of n (GET /admin/v1/torrents).
func torrentsOf(n *testenv.Node) ([]torrentState, error) {
	var list []torrentState
	err := adminGet(n, "/admin/v1/torrents", &list)
	return list, err
}

// pullAsync starts `ctr images pull` of ref on n; the channel gets its result.
func pullAsync(t *testing.T, n *testenv.Node, ref string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := n.TryPull(t, ref)
		done <- err
	}()
	return done
}

// waitPull waits for a pull started by pullAsync and fails the test if it
// failed or did not end within faultTimeout.
func waitPull(t *testing.T, n *testenv.Node, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: the pull failed: %v", n.Name, err)
		}
	case <-time.After(faultTimeout):
		t.Fatalf("%s: the pull did not end within %s", n.Name, faultTimeout)
	}
}

// waitDownloading waits until n's swarm download of blob holds at least min
// verified bytes but is not complete; it fails if the pull ends first.
func waitDownloading(t *testing.T, n *testenv.Node, blob testenv.Blob, min int64, pull <-chan error) torrentState {
	t.Helper()
	deadline := time.Now().Add(faultTimeout)
	var last torrentState
	for time.Now().Before(deadline) {
		st, ok, err := torrentOf(n, blob.Digest)
		if err == nil && ok && !st.Seeding && !st.Verified && st.BytesCompleted >= min && st.BytesCompleted < blob.Size {
			return st
		}
		last = st
		select {
		case err := <-pull:
			t.Fatalf("%s: the pull ended (err %v) before the download of %s was seen mid-way (last %+v)", n.Name, err, blob.Digest, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s: no download of %s with %d bytes within %s (last %+v)", n.Name, blob.Digest, min, faultTimeout, last)
	return last
}

// waitSeeds waits until every node in askers lists seed as a complete seeder
// of d.
func waitSeeds(t *testing.T, askers []*testenv.Node, seed *testenv.Node, d digest.Digest) {
	t.Helper()
	for _, a := range askers {
		if a == seed {
			continue
		}
		waitFor(t, faultTimeout, a.Name+" lists "+seed.Name+" as a complete seeder of "+d.String(), func() (bool, string) {
			s := seeders(t, a, d.String())
			return hasSeeder(s, seed.HTTPAddr, true), fmt.Sprint(s)
		})
	}
}

// checkImage asserts n's containerd holds every blob of img (it commits
// content only once its digest matched) and that `ctr images check` calls
// the image complete.
func checkImage(t *testing.T, n *testenv.Node, img testenv.Image) {
	t.Helper()
	checkHolds(t, n, append([]testenv.Blob{img.Manifest}, img.Blobs()...))
	out, err := n.Containerd.Ctr(t, "-n", "default", "images", "check", "name=="+img.Ref)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	if !strings.Contains(out, img.Manifest.Digest.String()) || !strings.Contains(out, "complete") {
		t.Errorf("%s: ctr images check %s:\n%s", n.Name, img.Ref, out)
	}
}

// finishWatch waits until the watch has checked each node in complete as a
// complete seeder (so its verdict is not empty), stops it and reports every
// member it saw listed complete without the whole verified blob.
func finishWatch(t *testing.T, w *seederWatch, complete []*testenv.Node) {
	t.Helper()
	for _, n := range complete {
		waitFor(t, faultTimeout, "the seeder watch checked "+n.Name, func() (bool, string) {
			return w.hasChecked(n.HTTPAddr), ""
		})
	}
	w.stop()
	for _, v := range w.violations() {
		t.Error(v)
	}
}

// mountTmpfs mounts a tmpfs of size (e.g. "16m") on dir until the test ends.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir); err != nil {
		t.Fatalf("mount tmpfs on %s: %v: %s", dir, err, out)
	}
	// Lazy: the daemon using it may still be stopping when this runs.
	t.Cleanup(func() {
		if out, err := runCmd("umount", "-l", dir); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// resizeTmpfs changes the size of the tmpfs on dir, keeping its files.
func resizeTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if out, err := runCmd("mount", "-o", "remount,size="+size, dir); err != nil {
		t.Fatalf("remount %s: %v: %s", dir, err, out)
	}
}

func runCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// downloadPaths are the files of n's swarm download of d: the bytes and the
// completion marks (infohash, then one byte per piece, 1 = verified).
func downloadPaths(n *testenv.Node, d digest.Digest) (data, pieces string) {
	// Chunk 0's files: a blob travels as chunk torrents, each stored apart.
	base := filepath.Join(n.DataDir, "swarm", "downloads", d.Algorithm().String(), d.Encoded()+".0")
	return base + ".data", base + ".pieces"
}

// corruptCompletePiece flips bytes in the middle of the first piece n's
// download of blob marks verified and returns its index.
func corruptCompletePiece(t *testing.T, n *testenv.Node, blob testenv.Blob) int {
	t.Helper()
	data, pieces := downloadPaths(n, blob.Digest)
	marks, err := os.ReadFile(pieces)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	const infoHashSize = 20
	if len(marks) <= infoHashSize {
		t.Fatalf("%s: completion marks of %s hold %d bytes", n.Name, blob.Digest, len(marks))
	}
	index := -1
	for i, m := range marks[infoHashSize:] {
		if m == 1 {
			index = i
			break
		}
	}
	if index < 0 {
		t.Fatalf("%s: no piece of %s is marked verified on disk", n.Name, blob.Digest)
	}
	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off := int64(index)*swarm.PieceLength(blob.Size) + 4096
	buf := make([]byte, 512)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] ^= 0xa5
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
	return index
}

// logHas reports whether n's daemon log has a line holding every part.
func logHas(t *testing.T, n *testenv.Node, parts ...string) bool {
	t.Helper()
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return hasLine(b, parts...)
}

// layerGETsFromContainerd returns the upstream GETs of d containerd itself
// sent (its fallback when the mirror failed).
func layerGETsFromContainerd(reqs []testenv.Request, d digest.Digest) []testenv.Request {
	return testenv.FromContainerd(blobGETs(reqs, d))
}

// flipEveryPiece flips one byte in each 16 KiB of a blob file: whatever the
// piece length, every piece is wrong.
func flipEveryPiece(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1)
	for off := int64(100); off < size; off += 16 << 10 {
		if _, err := f.ReadAt(b, off); err != nil {
			return err
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
	}
	return nil
}

// startFaultCluster starts an upstream on LoopbackIP(host) holding repo:v1,
// one uncompressed 96 MiB layer, and 3 nodes mirroring it: node 0 is the
// egress, node `limited` downloads at downloadLimit, so a test can act while
// its download is under way.
func startFaultCluster(t *testing.T, host int, repo string, limited int) (*testenv.Registry, testenv.Image, []*testenv.Node) {
	t.Helper()
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(host)+":5500")
	img := up.Push(t, testenv.ImageSpec{Repo: repo, Tag: "v1", LayerSizes: []int64{96 << 20}, Uncompressed: true})
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 3, Upstream: up, Args: func(i int) []string {
		switch i {
		case 0:
			return []string{"--egress"}
		case limited:
			return []string{"--download-limit", strconv.Itoa(downloadLimit)}
		}
		return nil
	}})
	return up, img, nodes
}
