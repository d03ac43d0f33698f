package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
	"github.com/dregistry/dregistry/swarm"
)

// Issue 7, network and peer faults: a peer that serves wrong bytes, a slow
// peer, a node whose network is cut mid-pull. Every case checks that each
// pull ends with the right digests (containerd commits only verified
// content) and, with the seeder watch of egress_test.go, that no node is
// listed as a complete seeder without serving the verified blob.

// netFaultPullTimeout bounds one pull of these cases (ctr has its own 2 min).
const netFaultPullTimeout = 3 * time.Minute

// Case 7: a seeder serves corrupt data: its containerd content file is
// overwritten after every piece was read (and so checked) once by its swarm,
// which from then on serves what is on disk. The downloader rejects its
// pieces by piece hash and bans it; small blobs it sends wrong over /peer/v1
// fail their sha256 and come from the honest seeder. The pull completes.
func TestFaultPeerServingWrongBytesIsBanned(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts four nodes")
	}
	testenv.RequireRoot(t)
	began := time.Now()
	up := testenv.StartRegistry(t, testenv.LoopbackIP(41)+":5500")
	// One large layer for the torrent path and 16 small ones for the HTTP
	// path, whose two seeders are tried in random order: the liar is asked
	// first for at least one of them but with chance 2^-16.
	sizes := []int64{96 << 20}
	for range 16 {
		sizes = append(sizes, 16<<10)
	}
	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/faults-liar", Tag: "v1", LayerSizes: sizes, Uncompressed: true})
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 4, Upstream: up, Args: egressFirst(1)})
	n1, honest, liar, puller := nodes[0], nodes[1], nodes[2], nodes[3]
	ready := time.Now()
	big, small := img.Layers[0], img.Layers[1:]

	// The liar gets the image from node 1, which then leaves, so the honest
	// node gets every piece from the liar: each piece of the liar's seed is
	// read, and checked against its hash, once.
	n1.Pull(t, img.Ref)
	waitFor(t, clusterTimeout, liar.Name+" sees "+n1.Name+" seed the layer", func() (bool, string) {
		s := seeders(t, liar, big.Digest.String())
		return hasSeeder(s, n1.HTTPAddr, true), fmt.Sprint(s)
	})
	liar.Pull(t, img.Ref)
	n1.Stop(t)
	waitFor(t, clusterTimeout, honest.Name+" sees only "+liar.Name+" seed the layer", func() (bool, string) {
		s := seeders(t, honest, big.Digest.String())
		return hasSeeder(s, liar.HTTPAddr, true) && !hasSeeder(s, n1.HTTPAddr, false), fmt.Sprint(s)
	})
	honest.Pull(t, img.Ref)
	if from := receivedFrom(t, honest, big.Digest.String()); from[liar.IP] < big.Size {
		t.Fatalf("premise: %s got %v piece bytes by peer, want all %d from the liar", honest.Name, from, big.Size)
	}
	for _, l := range img.Layers {
		for _, s := range []*testenv.Node{honest, liar} {
			waitFor(t, clusterTimeout, puller.Name+" sees "+s.Name+" seed "+l.Digest.String(), func() (bool, string) {
				list := seeders(t, puller, l.Digest.String())
				return hasSeeder(list, s.HTTPAddr, true), fmt.Sprint(list)
			})
		}
	}
	// The watch checks each seeder once, while both are honest; the liar's
	// corruption is the fault injected below, the puller is checked later.
	nodes = nodes[1:]
	watch := watchSeeders(nodes, big)
	for _, s := range []*testenv.Node{honest, liar} {
		waitFor(t, clusterTimeout, "the watch checked "+s.Name, func() (bool, string) { return watch.hasChecked(s.HTTPAddr), "" })
	}
	const intact = 2 << 20
	watch.corrupted(liar)
	corruptContent(t, liar, big, intact/2, big.Size-intact/2)
	for _, l := range small {
		corruptContent(t, liar, l, 4<<10, l.Size-4<<10)
	}
	getsBefore := map[string]int{}
	reqs := up.Requests(t)
	for _, l := range img.Layers {
		getsBefore[l.Digest.String()] = len(blobGETs(reqs, l.Digest))
	}
	servedBefore := len(puller.Served(t))

	pullStart := time.Now()
	puller.Pull(t, img.Ref)
	pullTime := time.Since(pullStart)
	checkHolds(t, puller, append([]testenv.Blob{img.Manifest}, img.Blobs()...))

	// Torrent path: the liar banned, nobody else, and no bad piece kept
	// until the whole-blob check (no discarded download).
	if bans := netFaultLogLines(t, puller, swarm.MsgPeerBanned, "peer="+liar.IP); len(bans) > 0 {
		t.Logf("%s: %s", puller.Name, bans[0])
	} else {
		t.Errorf("%s never banned the liar %s; its log says:\n%s", puller.Name, liar.IP,
			strings.Join(netFaultLogLines(t, puller, "level=WARN"), "\n"))
	}
	if l := netFaultLogLines(t, puller, swarm.MsgPeerBanned, "peer="+honest.IP); len(l) > 0 {
		t.Errorf("%s banned the honest %s: %s", puller.Name, honest.Name, l[0])
	}
	if l := netFaultLogLines(t, puller, "download discarded"); len(l) > 0 {
		t.Errorf("a bad piece got past its piece hash into a whole blob: %s", l[0])
	}
	from := receivedFrom(t, puller, big.Digest.String())
	// The liar's first and last MiB are intact: pieces from there pass.
	if from[honest.IP] < big.Size-intact {
		t.Errorf("%s received %d piece bytes from the honest seeder, want all but the liar's %d intact bytes of %d; by peer: %v",
			puller.Name, from[honest.IP], intact, big.Size, from)
	}
	if from[liar.IP] == 0 {
		t.Errorf("%s received nothing from the liar: the fault was never exercised; by peer: %v", puller.Name, from)
	}
	// HTTP path: the liar's small blobs failed their digest at least once,
	// and nobody honest was blamed.
	if rejected := netFaultLogLines(t, puller, "peer sent wrong bytes", "peer="+liar.HTTPAddr); len(rejected) > 0 {
		t.Logf("%s: %d small blobs rejected from the liar, first: %s", puller.Name, len(rejected), rejected[0])
	} else {
		t.Errorf("%s never rejected a small blob from the liar %s", puller.Name, liar.HTTPAddr)
	}
	if l := netFaultLogLines(t, puller, "peer sent wrong bytes", "peer="+honest.HTTPAddr); len(l) > 0 {
		t.Errorf("the honest %s was blamed: %s", honest.Name, l[0])
	}
	// Every layer came from the swarm: neither the upstream nor containerd's
	// own fallback was needed.
	by := testenv.BytesBySource(puller.Served(t)[servedBefore:])
	if by["swarm"] < totalSize(img.Layers) {
		t.Errorf("%s served %v bytes by source, want the %d bytes of layers from the swarm", puller.Name, by, totalSize(img.Layers))
	}
	reqs = up.Requests(t)
	for _, l := range img.Layers {
		if n := len(blobGETs(reqs, l.Digest)); n != getsBefore[l.Digest.String()] {
			t.Errorf("the upstream was asked for %s during the pull (%d GETs, %d before)", l.Digest, n, getsBefore[l.Digest.String()])
		}
	}

	waitFor(t, clusterTimeout, "the watch checked "+puller.Name, func() (bool, string) { return watch.hasChecked(puller.HTTPAddr), "" })
	watch.stop()
	for _, v := range watch.violations() {
		t.Error(v)
	}
	t.Logf("pull with a lying seeder: %s (case %s, %s once the nodes were up); %s received from %v (liar %s)", pullTime.Round(time.Millisecond),
		time.Since(began).Round(time.Second), time.Since(ready).Round(time.Second), puller.Name, from, liar.IP)
}

// Case 8: one of three seeders sends at 1.5 Mbit/s (tc on its veth); the
// download must not wait on it: most bytes come from the fast seeders.
func TestFaultSlowPeerDoesNotHoldTheDownload(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts four nodes, one in a network namespace")
	}
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "tc")
	began := time.Now()
	// The slow seeder is in a namespace behind a veth; every other node
	// listens on an address of the veth's outer end, so it reaches them all
	// (and they it) and only its own sends cross the cap.
	up, link, outside, slow := startAcrossLink(t, "slw", []string{"fast1", "fast2", "puller"}, "slow")
	n1, n2, puller := outside[0], outside[1], outside[2]
	nodes := []*testenv.Node{n1, n2, slow, puller}
	waitEgressKnown(t, up, nodes, nodes[:1])
	ready := time.Now()

	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/faults-slow", Tag: "v1", LayerSizes: []int64{96 << 20}, Uncompressed: true})
	big := img.Layers[0]
	n1.Pull(t, img.Ref)
	for _, n := range []*testenv.Node{n2, slow} {
		waitFor(t, clusterTimeout, n.Name+" sees "+n1.Name+" seed the layer", func() (bool, string) {
			s := seeders(t, n, big.Digest.String())
			return hasSeeder(s, n1.HTTPAddr, true), fmt.Sprint(s)
		})
	}
	// The slow node gets its copy before its link is capped.
	for i, err := range pullTogether(t, []*testenv.Node{n2, slow}, img.Ref) {
		if err != nil {
			t.Fatalf("seeding pull %d: %v", i, err)
		}
	}
	for _, s := range []*testenv.Node{n1, n2, slow} {
		waitFor(t, clusterTimeout, puller.Name+" sees "+s.Name+" seed the layer", func() (bool, string) {
			list := seeders(t, puller, big.Digest.String())
			return hasSeeder(list, s.HTTPAddr, true), fmt.Sprint(list)
		})
	}
	// The watch checks each seeder once, before the cap (its check reads
	// the whole blob); the puller is checked once it seeds. It never asks
	// the slow node: the test cannot dial from its namespaced address.
	watch := watchSeeders(nodes, big)
	watch.notAsking(slow)
	for _, s := range []*testenv.Node{n1, n2, slow} {
		waitFor(t, clusterTimeout, "the watch checked "+s.Name, func() (bool, string) { return watch.hasChecked(s.HTTPAddr), "" })
	}
	const slowRate = 1_500_000 // bit/s: 96 MiB would take ~9 minutes from it alone
	if err := link.Limit(false, slowRate); err != nil {
		t.Fatal(err)
	}
	slowUpBefore := uploadedBytes(t, slow, big)

	pullStart := time.Now()
	done := make(chan error, 1)
	go func() { _, err := puller.TryPull(t, img.Ref); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: pull with a slow seeder: %v", puller.Name, err)
		}
	case <-time.After(netFaultPullTimeout):
		t.Fatalf("%s: the pull did not finish within %s with one slow seeder of three", puller.Name, netFaultPullTimeout)
	}
	pullTime := time.Since(pullStart)
	checkHolds(t, puller, append([]testenv.Blob{img.Manifest}, img.Blobs()...))

	from := receivedFrom(t, puller, big.Digest.String())
	slowSent := uploadedBytes(t, slow, big) - slowUpBefore
	fast := from[n1.IP] + from[n2.IP]
	var all int64
	for _, b := range from {
		all += b
	}
	// At 1.5 Mbit/s the slow seeder could send at most ~190 KB a second;
	// a download that waited on it would take minutes and carry its share.
	if fast*10 < big.Size*9 {
		t.Errorf("%s got %d of %d bytes from the fast seeders, want at least 90%%; by peer: %v", puller.Name, fast, big.Size, from)
	}
	if from[slow.IP]*10 > big.Size {
		t.Errorf("%s got %d bytes from the slow seeder, more than 10%% of %d; by peer: %v", puller.Name, from[slow.IP], big.Size, from)
	}
	// It took part: the puller asked it for pieces, and it sent some
	// (none of them in time to be useful, in every run so far).
	if slowSent <= 0 {
		t.Errorf("the slow seeder %s sent no piece bytes during the pull: it was never asked; %s received by peer: %v", slow.Name, puller.Name, from)
	}
	waitFor(t, clusterTimeout, "the watch checked "+puller.Name, func() (bool, string) { return watch.hasChecked(puller.HTTPAddr), "" })
	watch.stop()
	for _, v := range watch.violations() {
		t.Error(v)
	}
	t.Logf("pull with a %d bit/s seeder of three: %s (case %s, %s once the nodes were up); bytes by peer: %v (slow %s: %.2f%% of %d; it sent %d piece bytes meanwhile)",
		slowRate, pullTime.Round(time.Millisecond), time.Since(began).Round(time.Second), time.Since(ready).Round(time.Second), from, slow.IP,
		100*float64(from[slow.IP])/float64(max(all, 1)), all, slowSent)
}

// Case 2: a node (its daemon and its containerd) in a namespace loses its
// veth while it downloads a layer from its peers. The pull must finish
// without error, containerd fetching the layer from the upstream itself at
// most once; nothing partial is announced, and once the link is back the
// node rejoins the gossip and pulls through dregistry again.
func TestFaultNetworkCutMidPullThenRestored(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts three nodes, one in a network namespace")
	}
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "tc")
	began := time.Now()
	// The victim (its daemon and its containerd) is in a namespace; the
	// seeders and the upstream are on addresses of the veth's outer end.
	up, link, outside, victim := startAcrossLink(t, "cut", []string{"seed1", "seed2"}, "victim")
	n1, n2 := outside[0], outside[1]
	nodes := []*testenv.Node{n1, n2, victim}
	waitEgressKnown(t, up, nodes, nodes[:1])
	ready := time.Now()

	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/faults-cut", Tag: "v1", LayerSizes: []int64{96 << 20}, Uncompressed: true})
	big := img.Layers[0]
	n1.Pull(t, img.Ref)
	n2.Pull(t, img.Ref)
	for _, s := range []*testenv.Node{n1, n2} {
		waitFor(t, clusterTimeout, victim.Name+" sees "+s.Name+" seed the layer", func() (bool, string) {
			list := seeders(t, victim, big.Digest.String())
			return hasSeeder(list, s.HTTPAddr, true), fmt.Sprint(list)
		})
	}
	// 160 Mbit/s into the namespace: the layer takes seconds, time to cut
	// the link in the middle.
	if err := link.Limit(true, 160_000_000); err != nil {
		t.Fatal(err)
	}
	// The watch asks the seeders only (the test cannot dial from the
	// victim's address, inside the namespace): they are told of the victim.
	watch := watchSeeders(nodes, big)
	watch.notAsking(victim)
	upBefore := len(up.Requests(t))

	done := make(chan error, 1)
	go func() { _, err := victim.TryPull(t, img.Ref); done <- err }()
	at := waitTorrentBytes(t, victim, big, 24<<20, done)
	watch.exclude(victim) // cut off: its listing cannot be read
	if err := link.SetUp(false, false); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	t.Logf("cut %s's link at %d of %d bytes", victim.Name, at, big.Size)
	// Hold the cut until the cluster has noticed: the seeders no longer
	// list the victim as alive.
	waitFor(t, clusterTimeout, n1.Name+" stops listing "+victim.Name+" as alive", func() (bool, string) {
		st, err := memberState(n1, victim)
		return err == nil && st != "alive", fmt.Sprint(st, err)
	})
	held := time.Since(cutAt)
	if err := link.SetUp(false, true); err != nil {
		t.Fatal(err)
	}
	// Back: the victim rejoins, as both sides see it.
	waitFor(t, clusterTimeout, victim.Name+" rejoins the gossip", func() (bool, string) {
		a, aerr := memberState(n1, victim)
		b, berr := memberState(victim, n1)
		return a == "alive" && b == "alive", fmt.Sprint(a, aerr, b, berr)
	})
	rejoined := time.Since(cutAt)
	watch.include(victim)

	var firstErr error
	select {
	case firstErr = <-done:
	case <-time.After(netFaultPullTimeout):
		t.Fatalf("%s: the pull cut mid-layer did not end within %s of the restore", victim.Name, netFaultPullTimeout)
	}
	firstTime := time.Since(cutAt)
	fellBack := layerGETsFromContainerd(up.Requests(t)[upBefore:], big.Digest)
	t.Logf("the cut pull ended %s after the cut (held %s, rejoined after %s): err=%v; containerd fetched the layer from the upstream itself %d times",
		firstTime.Round(time.Millisecond), held.Round(time.Millisecond), rejoined.Round(time.Millisecond), firstErr, len(fellBack))
	checkCutPull(t, victim, firstErr, fellBack)
	checkHolds(t, victim, append([]testenv.Blob{img.Manifest}, img.Blobs()...))

	// A new image after the restore comes through dregistry, not through
	// containerd's own fallback to the upstream.
	img2 := up.Push(t, testenv.ImageSpec{Repo: "e2e/faults-cut-after", Tag: "v1", LayerSizes: []int64{32 << 20}, Uncompressed: true})
	n1.Pull(t, img2.Ref)
	waitFor(t, clusterTimeout, victim.Name+" sees "+n1.Name+" seed the new layer", func() (bool, string) {
		list := seeders(t, victim, img2.Layers[0].Digest.String())
		return hasSeeder(list, n1.HTTPAddr, true), fmt.Sprint(list)
	})
	servedBefore, upBefore := len(victim.Served(t)), len(up.Requests(t))
	victim.Pull(t, img2.Ref)
	checkHolds(t, victim, append([]testenv.Blob{img2.Manifest}, img2.Blobs()...))
	by := testenv.BytesBySource(victim.Served(t)[servedBefore:])
	if by["swarm"]+by["egress"] < totalSize(img2.Layers) {
		t.Errorf("%s served %v bytes by source after the restore, want the %d bytes of layers from its peers", victim.Name, by, totalSize(img2.Layers))
	}
	if direct := testenv.FromContainerd(up.Requests(t)[upBefore:]); len(direct) > 0 {
		t.Errorf("after the restore containerd fell back to the upstream %d times, first: %+v", len(direct), direct[0])
	}

	waitFor(t, clusterTimeout, "the watch checked "+victim.Name, func() (bool, string) { return watch.hasChecked(victim.HTTPAddr), "" })
	watch.stop()
	for _, v := range watch.violations() {
		t.Error(v)
	}
	t.Logf("network cut case: %s in all, %s once the nodes were up", time.Since(began).Round(time.Second), time.Since(ready).Round(time.Second))
}

// Case 2, long cut: a node is cut off mid-layer for longer than its
// swarm waits for progress (30 s) and than memberlist gossips to a failed
// member (30 s after it is declared dead), so the others never contact it
// again. The cut pull must finish without error, containerd fetching the
// layer from the upstream itself at most once; once the network is back the
// node must join again by itself and pull through its peer.
func TestFaultLongNetworkCutNodeJoinsAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts two nodes, one in a network namespace, and cuts it off for 40 s")
	}
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "tc")
	began := time.Now()
	up, link, outside, victim := startAcrossLink(t, "lng", []string{"seed1"}, "victim")
	n1 := outside[0]
	nodes := []*testenv.Node{n1, victim}
	waitEgressKnown(t, up, nodes, nodes[:1])

	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/faults-long-cut", Tag: "v1", LayerSizes: []int64{48 << 20}, Uncompressed: true})
	big := img.Layers[0]
	// The watch asks n1 only (the test cannot dial from the victim's
	// address, which is inside the namespace): it checks what n1 is told
	// of the victim.
	watch := watchSeeders(nodes, big)
	watch.notAsking(victim)
	n1.Pull(t, img.Ref)
	waitFor(t, clusterTimeout, victim.Name+" sees "+n1.Name+" seed the layer", func() (bool, string) {
		list := seeders(t, victim, big.Digest.String())
		return hasSeeder(list, n1.HTTPAddr, true), fmt.Sprint(list)
	})
	// 100 Mbit/s into the namespace: the layer takes seconds.
	if err := link.Limit(true, 100_000_000); err != nil {
		t.Fatal(err)
	}
	upBefore := len(up.Requests(t))
	done := make(chan error, 1)
	go func() { _, err := victim.TryPull(t, img.Ref); done <- err }()
	at := waitTorrentBytes(t, victim, big, 8<<20, done)
	watch.exclude(victim) // cut off: its listing cannot be read
	if err := link.SetUp(false, false); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	// Until memberlist declares it dead, n1 lists it (alive or suspect).
	waitFor(t, clusterTimeout, n1.Name+" drops "+victim.Name+" from its members", func() (bool, string) {
		st, err := memberState(n1, victim)
		return err == nil && st == "", fmt.Sprint(st, err)
	})
	deadAfter := time.Since(cutAt)
	// memberlist's LAN profile gossips to failed members for 30 s.
	const gossipToTheDead = 30 * time.Second
	time.Sleep(gossipToTheDead + 2*time.Second)
	if err := link.SetUp(false, true); err != nil {
		t.Fatal(err)
	}
	backAt := time.Now()
	waitFor(t, clusterTimeout, victim.Name+" joins the cluster again", func() (bool, string) {
		st, err := memberState(n1, victim)
		return st == "alive", fmt.Sprint(st, err)
	})
	rejoined := time.Since(backAt)
	watch.include(victim)
	if l := netFaultLogLines(t, victim, "joining the cluster again"); len(l) == 0 {
		t.Errorf("%s is back without saying it joined again; was it ever cut off?", victim.Name)
	}

	var firstErr error
	select {
	case firstErr = <-done:
	case <-time.After(netFaultPullTimeout):
		t.Fatalf("%s: the pull cut mid-layer did not end within %s of the restore", victim.Name, netFaultPullTimeout)
	}
	firstEnded := time.Since(backAt)
	// A cut longer than the stall timeout with every source behind it
	// cannot be ridden out: dregistry aborts the stalled response (it must
	// never hold a pull forever), containerd's Range retry finds no
	// reachable source, and its fallback to the upstream has no route
	// either. So the cut pull may end in an error, but only that way: in
	// bounded time (above), with nothing partial or wrong committed, and
	// the same pull run again once the network is back (as kubelet's
	// back-off does) completes through dregistry.
	if firstErr != nil {
		t.Logf("%s: the pull cut for longer than the stall timeout failed cleanly: %v", victim.Name, firstErr)
		checkNoPartialContent(t, victim, big)
		victim.Pull(t, img.Ref)
	}
	fellBack := layerGETsFromContainerd(up.Requests(t)[upBefore:], big.Digest)
	if len(fellBack) > 1 {
		t.Errorf("%s: containerd fetched the layer from the upstream itself %d times, want at most once: %+v", victim.Name, len(fellBack), fellBack)
	}
	checkHolds(t, victim, append([]testenv.Blob{img.Manifest}, img.Blobs()...))

	// A new image after the restore comes through dregistry, from the peer.
	img2 := testenv.PushImage(t, up, "e2e/faults-long-cut-after", "v1", 1<<20)
	n1.Pull(t, img2.Ref)
	waitFor(t, clusterTimeout, victim.Name+" sees "+n1.Name+" seed the new layer", func() (bool, string) {
		list := seeders(t, victim, img2.Layers[0].Digest.String())
		return hasSeeder(list, n1.HTTPAddr, true), fmt.Sprint(list)
	})
	servedBefore, upBefore := len(victim.Served(t)), len(up.Requests(t))
	victim.Pull(t, img2.Ref)
	checkHolds(t, victim, append([]testenv.Blob{img2.Manifest}, img2.Blobs()...))
	if by := testenv.BytesBySource(victim.Served(t)[servedBefore:]); by["swarm"]+by["egress"] < totalSize(img2.Layers) {
		t.Errorf("%s served %v bytes by source after joining again, want the %d bytes of layers from its peer", victim.Name, by, totalSize(img2.Layers))
	}
	if direct := testenv.FromContainerd(up.Requests(t)[upBefore:]); len(direct) > 0 {
		t.Errorf("after the long cut containerd fell back to the upstream %d times, first: %+v", len(direct), direct[0])
	}

	waitFor(t, clusterTimeout, "the watch checked "+victim.Name, func() (bool, string) { return watch.hasChecked(victim.HTTPAddr), "" })
	watch.stop()
	for _, v := range watch.violations() {
		t.Error(v)
	}
	t.Logf("long cut at %d of %d bytes: dead after %s, held %s, joined again %s after the restore; the cut pull ended %s after the restore: err=%v, containerd fetched the layer from the upstream itself %d times; case %s",
		at, big.Size, deadAfter.Round(time.Millisecond), backAt.Sub(cutAt).Round(time.Millisecond), rejoined.Round(time.Millisecond),
		firstEnded.Round(time.Millisecond), firstErr, len(fellBack), time.Since(began).Round(time.Second))
}

// checkCutPull asserts a pull cut mid-layer finished without error and that
// containerd fell back to the upstream for the layer at most once.
func checkCutPull(t *testing.T, n *testenv.Node, err error, fellBack []testenv.Request) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: the cut pull failed: %v", n.Name, err)
	}
	if len(fellBack) > 1 {
		t.Errorf("%s: containerd fetched the layer from the upstream itself %d times, want at most once: %+v", n.Name, len(fellBack), fellBack)
	}
}

// corruptContent flips the bytes [from, to) of blob in n's containerd
// content store in place (same inode: a seeder reading that file now
// serves wrong bytes, as a failing disk would make it).
func corruptContent(t *testing.T, n *testenv.Node, blob testenv.Blob, from, to int64) {
	t.Helper()
	path := filepath.Join(n.Containerd.Root, "io.containerd.content.v1.content", "blobs", blob.Digest.Algorithm().String(), blob.Digest.Encoded())
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for off := from; off < to; off += int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), to-off)]
		if _, err := f.ReadAt(chunk, off); err != nil {
			t.Fatalf("%s: read %s: %v", n.Name, path, err)
		}
		for i := range chunk {
			chunk[i] ^= 0xa5
		}
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatalf("%s: write %s: %v", n.Name, path, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
}

// netFaultLogLines returns the lines of n's daemon log that hold every part:
// a key=value part as a whole field, any other part as text.
func netFaultLogLines(t *testing.T, n *testenv.Node, parts ...string) []string {
	t.Helper()
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		all := true
		for _, p := range parts {
			if strings.Contains(p, "=") && !strings.Contains(p, " ") {
				all = all && slices.Contains(fields, p)
			} else {
				all = all && strings.Contains(line, p)
			}
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// memberState is how asker's gossip sees member ("alive", "suspect", ...;
// "" when it lists it no more), from GET /admin/v1/stats.
func memberState(asker, member *testenv.Node) (string, error) {
	var st struct {
		Members []struct {
			Address string `json:"address"`
			State   string `json:"state"`
		} `json:"members"`
	}
	if err := adminGet(asker, "/admin/v1/stats", &st); err != nil {
		return "", err
	}
	for _, m := range st.Members {
		if m.Address == member.GossipAddr {
			return m.State, nil
		}
	}
	return "", nil
}

// waitTorrentBytes waits until n's download of blob has at least min bytes
// but is not complete, and returns how many; it fails if the pull ends first.
func waitTorrentBytes(t *testing.T, n *testenv.Node, blob testenv.Blob, min int64, pull <-chan error) int64 {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if st, ok, err := torrentOf(n, blob.Digest); err == nil && ok && !st.Seeding && st.BytesCompleted >= min && st.BytesCompleted < blob.Size {
			return st.BytesCompleted
		}
		select {
		case err := <-pull:
			t.Fatalf("%s: the pull ended (err %v) before its download of %s was seen mid-way", n.Name, err, blob.Digest)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s: no download of %d bytes of %s within 2 minutes", n.Name, min, blob.Digest)
	return 0
}

// uploadedBytes is the piece bytes n sent to peers for blob, from GET
// /admin/v1/stats (0 when n has no torrent of it).
func uploadedBytes(t testing.TB, n *testenv.Node, blob testenv.Blob) int64 {
	t.Helper()
	var st struct {
		Torrents []struct {
			Digest   string `json:"digest"`
			Uploaded int64  `json:"uploadedBytes"`
		} `json:"torrents"`
	}
	if err := adminGet(n, "/admin/v1/stats", &st); err != nil {
		t.Fatal(err)
	}
	for _, tr := range st.Torrents {
		if tr.Digest == blob.Digest.String() {
			return tr.Uploaded
		}
	}
	return 0
}

// startAcrossLink starts the upstream and nodes on the two ends of one veth:
// the inside node runs its daemon and its containerd (with every ctr pull)
// in a namespace of its own at <subnet>.2, as one host; the outside nodes
// listen on <subnet>.1 (outside[0], the egress, which every other node
// joins), .3, .4, …, and the upstream on <subnet>.100. Every byte between
// the inside node and the rest, upstream included, crosses the link a test
// cuts or shapes.
func startAcrossLink(t *testing.T, id string, outside []string, inside string) (*testenv.Registry, *testenv.Link, []*testenv.Node, *testenv.Node) {
	t.Helper()
	ns := testenv.NewNetns(t, id)
	sub := testenv.LinkSubnet()
	link := testenv.NewLink(t, id, nil, sub+".1/24", ns, sub+".2/24")
	link.AddAddr(t, true, sub+".100/32")
	up := testenv.StartRegistry(t, sub+".100:5500")
	bin := testenv.BuildDregistry(t)
	key := testenv.NewClusterKey(t)
	var out []*testenv.Node
	for i, name := range outside {
		ip, args := sub+".1", []string{"--egress"}
		if i > 0 {
			ip, args = fmt.Sprintf("%s.%d", sub, i+2), []string{"--join", out[0].GossipAddr}
			link.AddAddr(t, true, ip+"/32")
		}
		out = append(out, testenv.StartNode(t, testenv.NodeConfig{Name: name, IP: ip, Upstream: up, ExtraArgs: args, Binary: bin, Key: key}))
	}
	in := testenv.StartNode(t, testenv.NodeConfig{Name: inside, IP: sub + ".2", Upstream: up, Netns: ns,
		Containerd: testenv.StartContainerdIn(t, "", ns), ExtraArgs: []string{"--join", out[0].GossipAddr}, Binary: bin, Key: key})
	return up, link, out, in
}

// checkNoPartialContent asserts that n's containerd holds blob either not
// at all or whole and verified: a failed pull leaves nothing wrong behind.
func checkNoPartialContent(t *testing.T, n *testenv.Node, blob testenv.Blob) {
	t.Helper()
	if !contentDigests(t, n)[blob.Digest] {
		return
	}
	path := filepath.Join(n.Containerd.Root, "io.containerd.content.v1.content", "blobs", blob.Digest.Algorithm().String(), blob.Digest.Encoded())
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	defer f.Close()
	v := blob.Digest.Verifier()
	if got, err := io.Copy(v, f); err != nil || got != blob.Size || !v.Verified() {
		t.Errorf("%s: containerd holds %s after the failed pull, but %d of %d bytes, verified %v (err %v)", n.Name, blob.Digest, got, blob.Size, v.Verified(), err)
	}
}
