package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/testenv"
)

// watchRound is the pause between two rounds of a seeder watch; watchMax
// bounds a watch a test forgot to stop.
const (
	watchRound = 100 * time.Millisecond
	watchMax   = 10 * time.Minute
)

// seederWatch checks, throughout a test, that no node is ever listed as a
// complete seeder of a blob unless it serves the whole verified blob. Every
// round it asks every node's /admin/v1/seeders/<digest> and
// /admin/v1/torrents, and checks every complete listing (a node's own
// torrent that seeds counts as it listing itself; a seeding or verified one
// must hold every byte):
//   - the first listing of a seeder (first sight, or listed again after a
//     round in which nobody listed it, as after a restart) by reading the
//     whole blob from its peer endpoint and checking the digest;
//   - every other listing by a ranged GET of the blob's last byte, which
//     the peer endpoint answers only for a complete seed;
//   - a seeder the test took down (killed, stopped, frozen) by the digest
//     of the copy it left on disk: its verified egress spool or its
//     containerd content.
//
// A listing that cannot be read from a node that is up is a violation too.
type seederWatch struct {
	blob   testenv.Blob
	nodes  []*testenv.Node
	byAddr map[string]*testenv.Node

	mu      sync.Mutex
	unasked map[string]bool // the test cannot speak from this node's address
	down    map[string]bool // killed, stopped, frozen or cut off by the test
	// downs counts each node's excludes: a request that a take-down
	// overlapped (sent before exclude, failed after include) is not judged.
	downs    map[string]int
	faulty   map[string]bool // corrupted by the test on purpose: not judged
	current  map[string]bool // seeders read whole since they were last unlisted
	verified map[string]bool // seeder HTTP addresses ever read whole
	rounds   int
	bad      []string
	quit     chan struct{}
	finished chan struct{}
}

func watchSeeders(nodes []*testenv.Node, blob testenv.Blob) *seederWatch {
	w := &seederWatch{blob: blob, nodes: nodes, byAddr: map[string]*testenv.Node{},
		unasked: map[string]bool{}, down: map[string]bool{}, downs: map[string]int{}, faulty: map[string]bool{}, current: map[string]bool{}, verified: map[string]bool{},
		quit: make(chan struct{}), finished: make(chan struct{})}
	for _, n := range nodes {
		w.byAddr[n.HTTPAddr] = n
	}
	go func() {
		defer close(w.finished)
		for deadline := time.Now().Add(watchMax); time.Now().Before(deadline); {
			w.round()
			select {
			case <-w.quit:
				return
			case <-time.After(watchRound):
			}
		}
		w.record(fmt.Sprintf("the seeder watch of %s ran %s without being stopped", blob.Digest, watchMax))
	}()
	return w
}

// round asks every node once and checks every complete listing.
func (w *seederWatch) round() {
	now := map[string]bool{}
	for _, asked := range w.nodes {
		if w.is(w.down, asked) {
			continue
		}
		downs := w.downsOf(asked)
		var complete []*testenv.Node
		list, err := seedersVia(asked, w.blob.Digest)
		if err == nil {
			for _, s := range list {
				if !s.Complete {
					continue
				}
				n := w.byAddr[s.HTTPAddr]
				if n == nil {
					w.record(fmt.Sprintf("%s lists an unknown member %s as a complete seeder of %s", asked.Name, s.HTTPAddr, w.blob.Digest))
					continue
				}
				complete = append(complete, n)
			}
		}
		torrents, terr := torrentsOf(asked)
		if terr == nil {
			for _, tr := range torrents {
				if tr.Digest != w.blob.Digest.String() || !(tr.Seeding || tr.Verified) {
					continue
				}
				if tr.BytesCompleted != w.blob.Size {
					w.record(fmt.Sprintf("%s's torrent of %s is seeding or verified with %d of %d bytes: %+v", asked.Name, w.blob.Digest, tr.BytesCompleted, w.blob.Size, tr))
				}
				if tr.Seeding {
					complete = append(complete, asked)
				}
			}
		}
		if err = errors.Join(err, terr); err != nil {
			// The test may have taken the node down while it was asked
			// (a frozen daemon resets, once it resumes, the connections
			// whose header read its freeze outlasted).
			if !w.is(w.down, asked) && w.downsOf(asked) == downs {
				w.record(fmt.Sprintf("the seeder watch could not read %s's listing: %v", asked.Name, err))
			}
			continue
		}
		for _, n := range complete {
			now[n.Name] = true
			w.check(asked, n, !w.is(w.current, n))
		}
	}
	w.mu.Lock()
	for name, ok := range w.current {
		if ok && !now[name] {
			delete(w.current, name) // unlisted: read it whole when listed again
		}
	}
	w.rounds++
	w.mu.Unlock()
}

// check judges one complete listing of n by asked: whole tells to read the
// whole blob rather than its last byte.
func (w *seederWatch) check(asked, n *testenv.Node, whole bool) {
	if w.is(w.faulty, n) {
		return
	}
	if w.is(w.down, n) {
		if whole {
			if err := w.onDisk(n); err != nil {
				w.record(fmt.Sprintf("%s lists %s (down) as a complete seeder of %s, but it left no verified copy: %v", asked.Name, n.Name, w.blob.Digest, err))
			}
			w.set(w.current, n, true)
		}
		return
	}
	// The peer endpoint is asked as a member: the asker, or for a node's
	// own torrent any other member the test can speak as.
	as := asked
	if as == n || w.is(w.unasked, as) {
		as = w.speaker(n)
		if as == nil {
			return
		}
	}
	var err error
	if whole {
		err = peerBlobVerified(as, n, w.blob)
	} else {
		err = peerServesLastByte(as, n, w.blob)
	}
	switch {
	case err == nil:
		if whole {
			w.mu.Lock()
			w.verified[n.HTTPAddr] = true
			w.current[n.Name] = true
			w.mu.Unlock()
		}
		return
	case errors.Is(err, errNotMemberYet):
		// Right after a partition heals one side may list the other
		// before the other takes it back as a member: asked again next
		// round.
		return
	case w.is(w.down, n) || w.is(w.faulty, n):
		return // taken down or corrupted while asked
	case errors.Is(err, errNotFound):
		why, ok := w.withdrawing(asked, n, as)
		if ok {
			return
		}
		err = fmt.Errorf("%w; %s", err, why)
	}
	w.record(fmt.Sprintf("%s lists %s as a complete seeder of %s, but it does not serve the blob: %v", asked.Name, n.Name, w.blob.Digest, err))
}

// speaker returns a node, other than n, the test can send peer requests as.
func (w *seederWatch) speaker(n *testenv.Node) *testenv.Node {
	for _, m := range w.nodes {
		if m != n && !w.is(w.unasked, m) && !w.is(w.down, m) {
			return m
		}
	}
	return nil
}

// onDisk checks the digest of the copy a down node left: its egress spool or
// its containerd content.
func (w *seederWatch) onDisk(n *testenv.Node) error {
	var errs []error
	for _, path := range []string{spoolPath(n, w.blob.Digest), contentPath(n, w.blob.Digest)} {
		err := fileHasDigest(path, w.blob)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// withdrawing tells a withdrawal from an announcement ahead of the bytes,
// after n answered 404: n has no torrent of the blob left (neither a seed
// nor a verified download), and within withdrawalLag asked stops listing
// it complete (gossip spreads the withdrawal) or n serves the blob again
// (a new copy). A verified download announced but not served, or a listing
// that outlives the lag, is a violation.
func (w *seederWatch) withdrawing(asked, n, as *testenv.Node) (string, bool) {
	for deadline := time.Now().Add(withdrawalLag); time.Now().Before(deadline); time.Sleep(watchRound) {
		torrents, err := torrentsOf(n)
		if err != nil {
			return err.Error(), w.is(w.down, n)
		}
		for _, tr := range torrents {
			if tr.Digest == w.blob.Digest.String() && (tr.Seeding || tr.Verified) {
				if err := peerServesLastByte(as, n, w.blob); err != nil {
					return fmt.Sprintf("%s's own torrent of it: %+v, and its peer endpoint: %v", n.Name, tr, err), false
				}
				return "", true // seeded again since the 404
			}
		}
		if asked == n {
			return "", true // its own torrent is gone: that was the withdrawal
		}
		list, err := seedersVia(asked, w.blob.Digest)
		if err != nil {
			return err.Error(), w.is(w.down, asked)
		}
		listed := false
		for _, s := range list {
			listed = listed || (s.Complete && s.HTTPAddr == n.HTTPAddr)
		}
		if !listed || peerServesLastByte(as, n, w.blob) == nil {
			return "", true
		}
	}
	return fmt.Sprintf("%s has no torrent of it, and %s still lists it complete after %s", n.Name, asked.Name, withdrawalLag), false
}

// withdrawalLag bounds how long gossip may take to spread a withdrawal.
const withdrawalLag = 5 * time.Second

func fileHasDigest(path string, blob testenv.Blob) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	v := blob.Digest.Verifier()
	got, err := io.Copy(v, f)
	if err != nil || got != blob.Size || !v.Verified() {
		return fmt.Errorf("%s: %d of %d bytes, digest verified %v, err %v", path, got, blob.Size, v.Verified(), err)
	}
	return nil
}

// contentPath is where n's containerd keeps a committed blob.
func contentPath(n *testenv.Node, d digest.Digest) string {
	return filepath.Join(n.Containerd.Root, "io.containerd.content.v1.content", "blobs", d.Algorithm().String(), d.Encoded())
}

// errNotMemberYet is a peer endpoint's 403: it does not count the asking
// node as a member (yet). errNotFound is its 404: it seeds no such blob.
var (
	errNotMemberYet = errors.New("the peer does not count the asker as a member")
	errNotFound     = errors.New("the peer seeds no such blob")
)

// peerStatus turns a peer endpoint's unexpected status into an error.
func peerStatus(resp *http.Response, want int) error {
	switch resp.StatusCode {
	case want:
		return nil
	case http.StatusForbidden:
		return fmt.Errorf("peer GET: %s: %w", resp.Status, errNotMemberYet)
	case http.StatusNotFound:
		return fmt.Errorf("peer GET: %s: %w", resp.Status, errNotFound)
	}
	return fmt.Errorf("peer GET: %s", resp.Status)
}

// peerBlobVerified GETs blob from n's peer endpoint as member `as` would
// and checks every byte.
func peerBlobVerified(as, n *testenv.Node, blob testenv.Blob) error {
	resp, cancel, err := peerGet(as, n, "/peer/v1/blobs/"+blob.Digest.String())
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	if err := peerStatus(resp, http.StatusOK); err != nil {
		return err
	}
	v := blob.Digest.Verifier()
	got, err := io.Copy(v, resp.Body)
	if err != nil || got != blob.Size || !v.Verified() {
		return fmt.Errorf("peer GET: %d of %d bytes, digest verified %v, err %v", got, blob.Size, v.Verified(), err)
	}
	return nil
}

// peerServesLastByte GETs the blob's last byte from n's peer endpoint: only
// a complete seed answers it, with the blob's whole size.
func peerServesLastByte(as, n *testenv.Node, blob testenv.Blob) error {
	last := strconv.FormatInt(blob.Size-1, 10)
	resp, cancel, err := peerGet(as, n, "/peer/v1/blobs/"+blob.Digest.String(), "Range: bytes="+last+"-"+last)
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	if err := peerStatus(resp, http.StatusPartialContent); err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body)
	if want := "bytes " + last + "-" + last + "/" + strconv.FormatInt(blob.Size, 10); err != nil || len(b) != 1 || resp.Header.Get("Content-Range") != want {
		return fmt.Errorf("peer GET of the last byte: %d bytes, Content-Range %q (want %q), err %v", len(b), resp.Header.Get("Content-Range"), want, err)
	}
	return nil
}

func (w *seederWatch) record(msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bad = append(w.bad, msg)
}

// hasChecked reports whether the watch has read the whole verified blob
// from the seeder at httpAddr (a test may then kill it without cutting a
// check short).
func (w *seederWatch) hasChecked(httpAddr string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.verified[httpAddr]
}

// verifiedSeeders returns the HTTP addresses the watch read the whole blob from.
func (w *seederWatch) verifiedSeeders() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for addr := range w.verified {
		out = append(out, addr)
	}
	return out
}

// exclude marks n down (killed, stopped, frozen, cut off): it is not
// asked, and a listing of it is judged by the copy it left on disk. Call
// it before taking the node down.
func (w *seederWatch) exclude(n *testenv.Node) {
	w.mu.Lock()
	w.downs[n.Name]++
	w.mu.Unlock()
	w.set(w.down, n, true)
	w.set(w.current, n, false)
}

// downsOf is how many times n was excluded.
func (w *seederWatch) downsOf(n *testenv.Node) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.downs[n.Name]
}

// corrupted stops judging listings of n: the test damages its copy on
// purpose (the fault under test). Call it before the damage.
func (w *seederWatch) corrupted(n *testenv.Node) { w.set(w.faulty, n, true) }

// include marks n up again.
func (w *seederWatch) include(n *testenv.Node) {
	w.set(w.down, n, false)
	w.set(w.current, n, false)
}

// notAsking stops the watch speaking as n: the test cannot send from its
// address (inside a namespace). n is still asked for its listing.
func (w *seederWatch) notAsking(n *testenv.Node) { w.set(w.unasked, n, true) }

func (w *seederWatch) set(m map[string]bool, n *testenv.Node, v bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m[n.Name] = v
}

func (w *seederWatch) is(m map[string]bool, n *testenv.Node) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return m[n.Name]
}

func (w *seederWatch) stop() {
	close(w.quit)
	<-w.finished
}

// violations returns what the watch found, and fails if it never finished
// a round (it watched nothing).
func (w *seederWatch) violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	bad := append([]string(nil), w.bad...)
	if w.rounds == 0 {
		bad = append(bad, "the seeder watch of "+w.blob.Digest.String()+" finished no round")
	}
	return bad
}

// seedersVia is seeders() for a goroutine: it returns the error instead of
// failing the test.
func seedersVia(n *testenv.Node, d digest.Digest) ([]seeder, error) {
	var out []seeder
	err := adminGet(n, "/admin/v1/seeders/"+d.String(), &out)
	return out, err
}
