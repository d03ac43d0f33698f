package swarm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// The pipeline tests cut blobs into 1 MiB chunks (4 pieces of 256 KiB), so
// a few MiB make a row of chunks; every node of a test uses the same.
const testChunk = 1 << 20

func chunked(more ...func(*Config)) func(*Config) {
	return func(c *Config) {
		c.chunkBytes = testChunk
		for _, f := range more {
			f(c)
		}
	}
}

// announcePartial lists n as a partial seeder of d (a node downloading it).
func (tr *tracker) announcePartial(d digest.Digest, n *node) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	p := n.peer()
	p.Partial = true
	tr.seeders[d] = append(tr.seeders[d], p)
}

// follower is one node following a growing blob, reading it on its own
// goroutine.
type follower struct {
	n    *node
	got  []byte
	err  error
	done chan struct{}
}

func follow(t *testing.T, ctx context.Context, n *node, owner *node, dgst digest.Digest, size int64) *follower {
	t.Helper()
	b, err := n.Follow(ctx, dgst, size, owner.http.Listener.Addr().String())
	if err != nil {
		t.Fatalf("follow on %s: %v", n.ip, err)
	}
	f := &follower{n: n, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		rc, err := b.Open(ctx, 0)
		if err != nil {
			f.err = err
			return
		}
		defer rc.Close()
		f.got, f.err = io.ReadAll(rc)
	}()
	return f
}

func (f *follower) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(time.Minute):
		t.Fatalf("follower %s did not finish", f.n.ip)
	}
}

func lookupStats(n *node, dgst digest.Digest) (TorrentStats, bool) {
	for _, st := range n.Stats().Torrents {
		if st.Digest == dgst {
			return st, true
		}
	}
	return TorrentStats{}, false
}

// A growing seed feeds three followers; they trade pieces among themselves
// while the owner still lacks the blob's last chunk, and all end with the
// whole blob, verified.
func TestGrowingSeedFeedsFollowersThatTrade(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 6*testChunk)
	size := int64(len(content))
	// The owner's uplink is slow next to loopback, so what the followers
	// lack is faster to get from each other: the point of the swarm.
	owner := startNode(t, tr, "127.0.0.2", "", chunked(func(c *Config) { c.UploadLimit = 2 << 20 }))
	ips := []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"}
	var nodes []*node
	for _, ip := range ips {
		nodes = append(nodes, startNode(t, tr, ip, "", chunked()))
	}
	g, err := owner.Grow(dgst, size, bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	tr.announcePartial(dgst, owner)
	for _, n := range nodes {
		tr.announcePartial(dgst, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var fs []*follower
	for _, n := range nodes {
		fs = append(fs, follow(t, ctx, n, owner, dgst, size))
	}
	// All but the last chunk arrive from the "upstream", in steps.
	held := size - testChunk
	for w := int64(0); w < held; w += testChunk / 2 {
		g.Advance(w + testChunk/2)
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "followers hold every published chunk", func() bool {
		for _, n := range nodes {
			if st, ok := lookupStats(n, dgst); !ok || st.BytesCompleted < held {
				return false
			}
		}
		return true
	})
	if st, _ := lookupStats(owner, dgst); st.Seeding || st.Verified {
		t.Fatalf("growing blob shown as a seed before Complete: %+v", st)
	}
	var traded int64
	for i, n := range nodes {
		st, _ := lookupStats(n, dgst)
		for j, ip := range ips {
			if j != i {
				traded += st.ReceivedFrom[ip]
			}
		}
		t.Logf("%s received %v before the owner had the blob", n.ip, st.ReceivedFrom)
	}
	if traded == 0 {
		t.Fatal("the followers received nothing from each other before the owner had the whole blob")
	}

	g.Advance(size)
	g.Complete()
	for _, f := range fs {
		f.wait(t)
		if f.err != nil {
			t.Fatalf("follower %s: %v", f.n.ip, f.err)
		}
		mustEqual(t, f.got, content)
		if st, _ := lookupStats(f.n, dgst); !st.Verified {
			t.Fatalf("follower %s not verified: %+v", f.n.ip, st)
		}
	}
	if st, _ := lookupStats(owner, dgst); !st.Seeding || !st.Verified {
		t.Fatalf("owner after Complete: %+v", st)
	}
	// A follower that comes after Complete gets the blob from the seed.
	late := follow(t, ctx, startNode(t, tr, "127.0.0.6", "", chunked()), owner, dgst, size)
	late.wait(t)
	if late.err != nil {
		t.Fatalf("late follower: %v", late.err)
	}
	mustEqual(t, late.got, content)
	// A later Seed of the same content keeps the grown seed.
	if err := owner.Seed(ctx, dgst, size, failingReaderAt{}); err != nil {
		t.Fatalf("seed after Complete: %v", err)
	}
}

// Fail on the owner mid-way ends every follower's stream in an error, at
// once (not after the stall timeout), and leaves nothing behind.
func TestGrowthFailedMidwayFailsEveryFollower(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 5*testChunk)
	size := int64(len(content))
	owner := startNode(t, tr, "127.0.0.2", "", chunked())
	g, err := owner.Grow(dgst, size, bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var fs []*follower
	for _, ip := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		n := startNode(t, tr, ip, "", chunked(func(c *Config) { c.StallTimeout = time.Minute }))
		fs = append(fs, follow(t, ctx, n, owner, dgst, size))
	}
	g.Advance(2 * testChunk)
	waitFor(t, "followers hold the published chunks", func() bool {
		for _, f := range fs {
			if st, ok := lookupStats(f.n, dgst); !ok || st.BytesCompleted < 2*testChunk {
				return false
			}
		}
		return true
	})
	start := time.Now()
	g.Fail(errors.New("upstream connection reset"))
	g.Fail(errors.New("again")) // idempotent
	for _, f := range fs {
		f.wait(t)
		if f.err == nil || !errors.Is(f.err, errOwnerForgot) {
			t.Fatalf("follower %s: err = %v, want the owner's failure", f.n.ip, f.err)
		}
		if int64(len(f.got)) >= size {
			t.Fatalf("follower %s served %d bytes of a failed blob", f.n.ip, len(f.got))
		}
		if _, ok := lookupStats(f.n, dgst); ok {
			t.Fatalf("follower %s still holds the failed blob", f.n.ip)
		}
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("followers took %v to fail (the stall timeout, not the owner's word)", d)
	}
	if _, ok := lookupStats(owner, dgst); ok {
		t.Fatal("owner still holds the failed blob")
	}
	// The owner forgot it: a new follower is told at once.
	late := startNode(t, tr, "127.0.0.6", "", chunked())
	if _, err := late.Follow(ctx, dgst, size, owner.http.Listener.Addr().String()); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("follow of a failed blob: err = %v, want not found", err)
	}
}

// An upstream that sends a wrong byte: every piece matches the hashes the
// owner computed from those bytes, so only the whole digest can tell. No
// follower may serve the blob complete.
func TestCorruptByteInGrowingFileIsCaught(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 4*testChunk)
	size := int64(len(content))
	bad := bytes.Clone(content)
	bad[testChunk+12345] ^= 1
	owner := startNode(t, tr, "127.0.0.2", "", chunked())
	g, err := owner.Grow(dgst, size, bytes.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var fs []*follower
	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
		fs = append(fs, follow(t, ctx, startNode(t, tr, ip, "", chunked()), owner, dgst, size))
	}
	g.Advance(size)
	for _, f := range fs {
		f.wait(t)
		if !errors.Is(f.err, errDigestMismatch) {
			t.Fatalf("follower %s: err = %v, want a digest mismatch", f.n.ip, f.err)
		}
		if int64(len(f.got)) >= size {
			t.Fatalf("follower %s served all %d bytes of a bad blob", f.n.ip, len(f.got))
		}
		if st, ok := lookupStats(f.n, dgst); ok && st.Verified {
			t.Fatalf("follower %s verified a bad blob", f.n.ip)
		}
	}
	g.Fail(errDigestMismatch) // what the egress does when its own check fails
}

func TestFollowOfAnUnknownBlobIsNotFound(t *testing.T) {
	tr := newTracker()
	owner := startNode(t, tr, "127.0.0.2", "", chunked())
	d := startNode(t, tr, "127.0.0.3", "", chunked())
	_, dgst := randomBlob(t, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.Follow(ctx, dgst, 3*testChunk, owner.http.Listener.Addr().String()); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("err = %v, want not found", err)
	}
	if st := d.Stats().Torrents; len(st) != 0 {
		t.Fatalf("a failed follow left %+v", st)
	}
}

// Warm: one seeder, several downloaders at once, the blob in several
// chunks; every downloader ends with the verified blob. How much of it the
// seeder carried is BenchmarkWarmSpread's figure, not an assertion.
func TestWarmPathFromOneSeederToSeveralDownloaders(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 6*testChunk+777)
	seed(t, startNode(t, tr, "127.0.0.2", "", chunked()), tr, content, dgst)
	var wg sync.WaitGroup
	ips := []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"}
	errs := make([]error, len(ips))
	nodes := make([]*node, len(ips))
	for i, ip := range ips {
		nodes[i] = startNode(t, tr, ip, "", chunked())
		tr.announcePartial(dgst, nodes[i])
	}
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := readBlob(t, n, dgst, 0)
			if err == nil && !bytes.Equal(got, content) {
				err = errors.New("content differs")
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("downloader %s: %v", ips[i], err)
		}
		if st, _ := lookupStats(nodes[i], dgst); !st.Verified || st.PiecesComplete != 25 {
			t.Fatalf("downloader %s: %+v", ips[i], st)
		}
	}
}

// The chunk metainfo endpoint: a chunk not published yet is held at most
// MetainfoPoll (not at all with wait=0) and answered 204; a published one
// is its canonical info; bad requests change nothing.
func TestChunkMetainfoEndpoint(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 3*testChunk)
	owner := startNode(t, tr, "127.0.0.2", "", chunked(func(c *Config) { c.MetainfoPoll = 300 * time.Millisecond }))
	g, err := owner.Grow(dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Grow(dgst, int64(len(content)), bytes.NewReader(content)); err == nil {
		t.Fatal("a second Grow of the same digest was accepted")
	}
	base := metainfoPathPrefix + dgst.String()
	for _, c := range []struct {
		path string
		want int
	}{
		{base + "?chunk=0&wait=0", http.StatusNoContent},
		{base + "?chunk=0", http.StatusNoContent}, // after MetainfoPoll
		{base + "?chunk=3", http.StatusBadRequest},
		{base + "?chunk=-1", http.StatusBadRequest},
		{base + "?chunk=01", http.StatusBadRequest},
		{base + "?chunk=x", http.StatusBadRequest},
		{metainfoPathPrefix + digest.FromString("other").String() + "?chunk=0", http.StatusNotFound},
		{blobPathPrefix + dgst.String(), http.StatusNotFound}, // growing is not complete
	} {
		start := time.Now()
		if got := peerStatus(owner, c.path); got != c.want {
			t.Errorf("%s: %d, want %d", c.path, got, c.want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s held for %v", c.path, d)
		}
	}
	g.Advance(testChunk)
	waitFor(t, "chunk 0 published", func() bool { return peerStatus(owner, base+"?chunk=0&wait=0") == http.StatusOK })
	req := httptest.NewRequest(http.MethodGet, base+"?chunk=0", nil)
	req.RemoteAddr = "127.0.0.9:4000"
	rec := httptest.NewRecorder()
	owner.PeerHandler().ServeHTTP(rec, req)
	lay := owner.layout(int64(len(content)))
	if _, err := parseChunkInfo(dgst, lay, 0, rec.Body.Bytes()); err != nil {
		t.Fatalf("published chunk 0: %v", err)
	}
	if rec.Header().Get(TorrentPortHeader) != strconv.Itoa(int(owner.TorrentAddr().Port())) {
		t.Fatalf("torrent port header %q", rec.Header().Get(TorrentPortHeader))
	}
	g.Fail(errors.New("test over"))
	if got := peerStatus(owner, base+"?chunk=0&wait=0"); got != http.StatusNotFound {
		t.Fatalf("after Fail: %d, want 404", got)
	}
}

// A grown seed is checked like any seed once complete: a spool changed on
// disk after Complete, even in pieces that followers already took from it,
// is caught at its next read and no longer seeded.
func TestGrownSeedCorruptedAfterCompleteIsDropped(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 3*testChunk)
	size := int64(len(content))
	path, f := spoolFile(t, content)
	owner := startNode(t, tr, "127.0.0.2", "", chunked())
	g, err := owner.Grow(dgst, size, f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fn := startNode(t, tr, "127.0.0.3", "", chunked())
	g.Advance(2 * testChunk)
	first := follow(t, ctx, fn, owner, dgst, size)
	g.Advance(size)
	g.Complete()
	// Most pieces, the last chunk's all, were uploaded after Complete, so
	// a check on the first read only would pass them from now on.
	first.wait(t)
	if first.err != nil {
		t.Fatal(first.err)
	}
	fn.stop() // the owner's spool is the only copy left
	tr.announce(dgst, owner)
	corruptEveryPiece(t, path, size)

	corruptSeedIsDropped(t, tr, owner, dgst, "127.0.0.4")
}

// growAt starts a node at ip whose chunk metainfo long poll answers every
// 100 ms, and grows there a random blob of the given number of chunks,
// listed as a partial seed; the growth fails when the test ends.
func growAt(t *testing.T, tr *tracker, ip string, chunks int) (*node, *Growth, []byte, digest.Digest) {
	t.Helper()
	content, dgst := randomBlob(t, chunks*testChunk)
	owner := startNode(t, tr, ip, "", chunked(func(c *Config) { c.MetainfoPoll = 100 * time.Millisecond }))
	g, err := owner.Grow(dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Fail(nil) })
	tr.announcePartial(dgst, owner)
	return owner, g, content, dgst
}

// Arrived counts what a followed download received, before any stream
// reads it, and Progress adds what the owner fetched from the upstream
// once the follower holds all the owner published: the egress pipeline's
// stall bound tells a slow swarm or a slow upstream from a dead one by it.
func TestArrivedCountsWhatAFollowedDownloadReceived(t *testing.T) {
	tr := newTracker()
	owner, g, content, dgst := growAt(t, tr, "127.0.5.21", 4)
	size := int64(len(content))
	n := startNode(t, tr, "127.0.5.22", "", chunked())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := n.Follow(ctx, dgst, size, owner.http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	arrived := b.(interface{ Arrived() int64 }).Arrived
	if got := arrived(); got != 0 {
		t.Fatalf("arrived %d bytes before the owner had any", got)
	}
	g.Advance(2 * testChunk)
	waitFor(t, "two chunks arrive", func() bool { return arrived() == 2*testChunk })

	progress := b.(interface{ Progress() int64 }).Progress
	before := progress()
	g.Advance(2*testChunk + testChunk/2)
	waitFor(t, "the owner's fetch counts", func() bool { return progress() > before })
	if got := arrived(); got != 2*testChunk {
		t.Fatalf("arrived %d bytes of an unpublished chunk", got)
	}
	// A fetch that stops moving stops counting: ten answers of the owner.
	stopped := progress()
	time.Sleep(time.Second)
	if got := progress(); got != stopped {
		t.Fatalf("progress went from %d to %d while the owner's fetch stood still", stopped, got)
	}
}

// A stream waiting for a chunk the owner has not published yet does not
// stall while the owner's upstream fetch moves, even when the chunk takes
// longer than StallTimeout to come; the chunk still arrives whole.
func TestFollowedStreamWaitsWhileTheOwnersFetchMoves(t *testing.T) {
	tr := newTracker()
	owner, g, content, dgst := growAt(t, tr, "127.0.5.23", 3)
	size := int64(len(content))
	n := startNode(t, tr, "127.0.5.24", "", chunked(func(c *Config) { c.StallTimeout = 2 * time.Second }))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g.Advance(2 * testChunk)
	f := follow(t, ctx, n, owner, dgst, size)
	// The last chunk takes 4 s, twice the follower's stall bound.
	const steps = 20
	for i := 1; i <= steps; i++ {
		select {
		case <-f.done:
			t.Fatalf("the stream ended while the owner fetched: %v", f.err)
		case <-time.After(200 * time.Millisecond):
		}
		g.Advance(2*testChunk + int64(i)*testChunk/steps)
	}
	g.Complete()
	f.wait(t)
	if f.err != nil || !bytes.Equal(f.got, content) {
		t.Fatalf("read %d bytes: %v", len(f.got), f.err)
	}
}
