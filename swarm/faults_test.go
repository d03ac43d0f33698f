package swarm

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // BitTorrent v1 piece hashes.
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// seedRaw makes n seed b over content without checking it, as a broken or
// malicious peer would.
func seedRaw(t *testing.T, n *node, tr *tracker, b *blobInfo, content io.ReaderAt) {
	t.Helper()
	n.mu.Lock()
	_, err := n.addSeedLocked(b, content, false)
	n.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	tr.announce(b.digest, n)
}

func mustHash(t *testing.T, content []byte, dgst digest.Digest) *blobInfo {
	t.Helper()
	b, err := hashBlob(context.Background(), dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// seedCorrupt makes n seed dgst with the right metainfo but wrong bytes.
func seedCorrupt(t *testing.T, n *node, tr *tracker, content []byte, dgst digest.Digest) {
	t.Helper()
	bad := bytes.Clone(content)
	for i := range bad {
		bad[i] ^= 0x5a
	}
	seedRaw(t, n, tr, mustHash(t, content, dgst), bytes.NewReader(bad))
}

func banned(n *node, ip string) bool {
	for _, b := range n.client.BadPeerIPs() {
		if a, err := netip.ParseAddr(b); err == nil && a.Unmap().String() == ip {
			return true
		}
	}
	return false
}

// waitFor polls cond for at most a minute (an event, not a timing claim).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("gave up waiting for %s", what)
}

func TestBadPiecePeerIsBannedAndItsDataDropped(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 16<<20)
	liar := startNode(t, tr, "127.0.0.6", "", nil)
	seedCorrupt(t, liar, tr, content, dgst)
	d := startNode(t, tr, "127.0.0.7", "", func(c *Config) { c.StallTimeout = time.Minute })

	rc, err := openBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		all, err := io.ReadAll(rc)
		if err != nil {
			t.Error(err)
		}
		got <- all
	}()
	waitFor(t, "the liar to be banned", func() bool { return banned(d, "127.0.0.6") })
	if c := d.Stats().Torrents[0].PiecesComplete; c != 0 {
		t.Fatalf("%d pieces of the liar's data kept", c)
	}
	good := startNode(t, tr, "127.0.0.8", "", nil)
	seed(t, good, tr, content, dgst)
	mustEqual(t, <-got, content)
	if from := d.Stats().Torrents[0].ReceivedFrom; from["127.0.0.8"] < int64(len(content)) {
		t.Fatalf("received %v", from)
	}
}

func TestDownloadResumesAfterRestart(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 24<<20)
	// Chunks of 2 MiB: the download wants the chunk it reads and the next
	// one, so most of the blob is still missing when it stops.
	small := func(c *Config) { c.Readahead, c.chunkBytes = 1<<20, 2<<20 }
	a := startNode(t, tr, "127.0.0.2", "", small)
	seed(t, a, tr, content, dgst)
	dir := t.TempDir()

	d := startNode(t, tr, "127.0.0.3", dir, small)
	rc, err := openBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 8<<20)
	if _, err := io.ReadFull(rc, first); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	d.stop()

	d = startNode(t, tr, "127.0.0.3", dir, small)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := d.Blob(ctx, refForTests(), dgst)
	if err != nil {
		t.Fatal(err)
	}
	// The download starts on Open (a Blob alone is a HEAD's: nothing
	// reserved or started), resuming the earlier run's chunks at once.
	rc, err = b.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if done := d.Stats().Torrents[0].BytesCompleted; done < int64(len(first)) {
		t.Fatalf("after restart %d bytes complete, had %d", done, len(first))
	}
	all, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, all, content)
	if again := d.Stats().Torrents[0].ReceivedFrom["127.0.0.2"]; again > int64(len(content)-len(first)) {
		t.Fatalf("fetched %d bytes again after restart; %d were on disk", again, len(first))
	}

	// Once containerd holds the blob, seeding containerd's copy replaces the
	// download: its files go, and it needs no rehash (the metainfo is cached).
	if _, err := d.meta.load(dgst); err != nil {
		t.Fatalf("verified download left no metainfo: %v", err)
	}
	if err := d.Seed(ctx, dgst, int64(len(content)), failingReaderAt{}); err != nil {
		t.Fatalf("seed from cached metainfo read the content: %v", err)
	}
	data, pieces := d.downloads.paths(dgst, 0)
	for _, p := range []string{data, pieces} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s still there: %v", p, err)
		}
	}
	if st := d.Stats().Torrents[0]; !st.Seeding || st.ReceivedFrom["127.0.0.2"] == 0 {
		t.Fatalf("seed after download lost where the blob came from: %+v", st)
	}
}

// failingReaderAt proves a code path does not read the content.
type failingReaderAt struct{}

func (failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestDownloadStorageKeepsCompletionAcrossOpens(t *testing.T) {
	content, dgst := randomBlob(t, 1<<20)
	b, err := hashBlob(context.Background(), dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	st := downloadStorage{dir: t.TempDir()}
	ti, err := st.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	p1 := ti.Piece(b.info.Piece(1))
	if _, err := p1.WriteAt(content[256<<10:512<<10], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := p1.WriteAt(make([]byte, 10), 256<<10-5); err == nil {
		t.Fatal("write past the piece accepted")
	}
	if err := p1.MarkComplete(); err != nil {
		t.Fatal(err)
	}
	ti.Close()

	ti, err = st.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true, false, false} {
		if c := ti.Piece(b.info.Piece(i)).Completion(); !c.Ok || c.Complete != want {
			t.Errorf("piece %d after reopen: %+v", i, c)
		}
	}
	buf := make([]byte, 256<<10)
	if _, err := ti.Piece(b.info.Piece(1)).ReadAt(buf, 0); err != nil || !bytes.Equal(buf, content[256<<10:512<<10]) {
		t.Fatalf("piece 1 read back: %v", err)
	}
	ti.Close()

	// Marks of another torrent for the same digest are not trusted.
	other := b.infoHash
	other[0] ^= 1
	ti, err = st.OpenTorrent(context.Background(), &b.info, other)
	if err != nil {
		t.Fatal(err)
	}
	defer ti.Close()
	if c := ti.Piece(b.info.Piece(1)).Completion(); c.Complete {
		t.Fatal("completion of another infohash trusted")
	}
}

func TestSeedStorageServesTheReaderAtReadOnly(t *testing.T) {
	content, dgst := randomBlob(t, 600<<10)
	b, err := hashBlob(context.Background(), dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	ti, err := seedStorage{content: bytes.NewReader(content)}.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	last := ti.Piece(b.info.Piece(2)) // 600 KiB = 256 + 256 + 88 KiB
	if c := last.Completion(); !c.Ok || !c.Complete {
		t.Fatalf("seeded piece not complete: %+v", c)
	}
	buf := make([]byte, 100<<10)
	n, _ := last.ReadAt(buf, 0)
	if n != 88<<10 || !bytes.Equal(buf[:n], content[512<<10:]) {
		t.Fatalf("last piece read %d bytes", n)
	}
	if _, err := last.WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("write to seeded content accepted")
	}
}

// stallingReaderAt serves nothing until released, like a seeder whose disk
// or process hangs while its connection stays open.
type stallingReaderAt struct{ release chan struct{} }

func (s stallingReaderAt) ReadAt([]byte, int64) (int, error) {
	<-s.release
	return 0, io.ErrUnexpectedEOF
}

// startHungSeeder seeds a new 4 MiB blob on a node at ip whose reads wait
// until the test ends: its metainfo endpoint answers; the pieces never
// come.
func startHungSeeder(t *testing.T, tr *tracker, ip string) digest.Digest {
	t.Helper()
	content, dgst := randomBlob(t, 4<<20)
	hung := startNode(t, tr, ip, "", nil)
	stall := stallingReaderAt{release: make(chan struct{})}
	t.Cleanup(func() { close(stall.release) })
	seedRaw(t, hung, tr, mustHash(t, content, dgst), stall)
	return dgst
}

func TestStalledSwarmFailsTheReadInsteadOfHanging(t *testing.T) {
	tr := newTracker()
	dgst := startHungSeeder(t, tr, "127.0.0.9")
	var logs syncBuffer
	d := startNode(t, tr, "127.0.0.10", "", func(c *Config) {
		c.StallTimeout = 300 * time.Millisecond
		logTo(&logs)(c)
	})
	_, err := readBlob(t, d, dgst, 0)
	if !errors.Is(err, oci.ErrStalled) {
		t.Fatalf("err = %v, want the no-progress error", err)
	}
	// The stall names the chunk torrent's connections: the hung seeder's
	// address is in the logged status.
	if got := logs.String(); !strings.Contains(got, "stream stalled") || !strings.Contains(got, "127.0.0.9") {
		t.Fatalf("the stall's log does not show the torrent's peers:\n%s", got)
	}
}

// A read that the caller's own stall bound ends (the egress pipeline's
// cancels the context with a cause of its own) logs the chunk torrent's
// status too, so the stall it gave up on can be explained.
func TestReadEndedByTheCallersBoundLogsTheStall(t *testing.T) {
	tr := newTracker()
	dgst := startHungSeeder(t, tr, "127.0.0.37")
	var logs syncBuffer
	d := startNode(t, tr, "127.0.0.38", "", logTo(&logs)) // StallTimeout 8 s
	bound := errors.New("the caller's stall bound")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	rc, err := openBlobIn(ctx, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	time.AfterFunc(500*time.Millisecond, func() { cancel(bound) })
	if _, err := io.ReadAll(rc); !errors.Is(err, bound) {
		t.Fatalf("err = %v, want the caller's cause", err)
	}
	if got := logs.String(); !strings.Contains(got, "stream stalled") || !strings.Contains(got, "127.0.0.37") {
		t.Fatalf("the read the caller ended logged no torrent status:\n%s", got)
	}
}

func TestSeedRefusesWrongContentAndChangesNothing(t *testing.T) {
	tr := newTracker()
	n := startNode(t, tr, "127.0.0.2", "", nil)
	content, _ := randomBlob(t, 2<<20)
	wrong := digest.FromString("not this content")
	if err := n.Seed(context.Background(), wrong, int64(len(content)), bytes.NewReader(content)); !errors.Is(err, errDigestMismatch) {
		t.Fatalf("err = %v, want digest mismatch", err)
	}
	if st := n.Stats().Torrents; len(st) != 0 {
		t.Fatalf("torrents after a refused seed: %+v", st)
	}
	if _, err := n.meta.load(wrong); err == nil {
		t.Fatal("metainfo cached for refused content")
	}
	for _, bad := range []struct {
		dgst digest.Digest
		size int64
	}{{"sha256:short", 10}, {digest.FromBytes(content), 0}} {
		if err := n.Seed(context.Background(), bad.dgst, bad.size, bytes.NewReader(content)); err == nil {
			t.Errorf("Seed(%q, %d) accepted", bad.dgst, bad.size)
		}
	}
}

func TestSeederRefusesSwarmConnectionsFromNonMembers(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 4<<20)
	a := startNode(t, tr, "127.0.0.2", "", nil)
	seed(t, a, tr, content, dgst)
	d := startNode(t, tr, "127.0.0.12", "", func(c *Config) { c.StallTimeout = time.Second })
	// d knows the metainfo already, so only the BitTorrent connection is tried.
	if err := d.meta.store(a.seeded(dgst).info); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	tr.outside[netip.MustParseAddr("127.0.0.12")] = true
	// Dials to 127/8 leave from 127.0.0.1, whatever address d listens on.
	tr.outside[netip.MustParseAddr("127.0.0.1")] = true
	tr.mu.Unlock()
	if _, err := readBlob(t, d, dgst, 0); !errors.Is(err, oci.ErrStalled) {
		t.Fatalf("non-member read: %v, want a stall (no connection accepted)", err)
	}
	if got := d.Stats().Torrents[0].ReceivedFrom["127.0.0.2"]; got != 0 {
		t.Fatalf("non-member received %d bytes", got)
	}
}

func TestAbandonedDownloadsArePrunedAtStart(t *testing.T) {
	dir := t.TempDir()
	st := downloadStorage{dir: filepath.Join(dir, "downloads")}
	oldDgst, newDgst := digest.FromString("old"), digest.FromString("new")
	var paths []string
	for _, d := range []digest.Digest{oldDgst, newDgst} {
		data, pieces := st.paths(d, 0)
		paths = append(paths, data, pieces)
	}
	if err := os.MkdirAll(filepath.Dir(paths[0]), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-48 * time.Hour)
	for _, p := range paths[:2] {
		if err := os.Chtimes(p, long, long); err != nil {
			t.Fatal(err)
		}
	}
	startNode(t, newTracker(), "127.0.0.2", dir, nil)
	for i, p := range paths {
		_, err := os.Stat(p)
		if gone := os.IsNotExist(err); gone != (i < 2) {
			t.Errorf("%s: gone=%v", p, gone)
		}
	}
}

// A download the disk cannot hold leaves no file behind: a full data dir
// must not stay full of the download that did not fit (reliability case 5).
func TestDownloadThatDoesNotFitLeavesNoFiles(t *testing.T) {
	content, dgst := randomBlob(t, 1<<20)
	b, err := hashBlob(context.Background(), dgst, int64(len(content)), bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	// The same torrent claiming an exabyte: no filesystem reserves that.
	info := b.info
	info.Length = 1 << 60
	info.PieceLength = 1 << 44
	info.Pieces = make([]byte, 20*(info.Length/info.PieceLength))
	st := downloadStorage{dir: t.TempDir(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if _, err := st.OpenTorrent(context.Background(), &info, b.infoHash); err == nil {
		t.Fatal("an exabyte download was stored")
	}
	data, pieces := st.paths(dgst, -1)
	for _, p := range []string{data, pieces} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (stat: %v)", p, err)
		}
	}
}

// A blob the data dir cannot hold fails Open (warm) and Follow (cold)
// before either returns a stream, so the registry or the egress's pipeline takes the
// next source before answering: chunk torrents open their files only when a
// stream reaches them, after the registry chose the swarm and sent 200. The
// error says the disk is full, it is logged as an error, and nothing is left
// in the data dir. The blob is larger than what the test's filesystem has
// free; its metainfo is made up, as nothing of it is ever fetched.
func TestDownloadThatDoesNotFitFailsBeforeItIsServed(t *testing.T) {
	dir := t.TempDir()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	size := 2*int64(fs.Bavail)*fs.Bsize + 1<<30
	pieces := numPieces(size, PieceLength(size))
	if pieces*sha1.Size > maxMetainfoBytes/2 {
		t.Skipf("%d bytes free: a blob that does not fit needs more metainfo than a peer may send", fs.Bavail*uint64(fs.Bsize))
	}
	_, dgst := randomBlob(t, 1000)
	tr := newTracker()
	var logged syncBuffer
	d := startNode(t, tr, "127.0.0.3", dir, logTo(&logged))
	leftovers := func() []string {
		t.Helper()
		files, err := filepath.Glob(filepath.Join(dir, "downloads", "sha256", dgst.Encoded()+".*"))
		if err != nil {
			t.Fatal(err)
		}
		return files
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("%s of a blob larger than the disk: err = %v, want no space left", what, err)
		}
		if st := d.Stats().Torrents; len(st) != 0 {
			t.Fatalf("%s left %+v", what, st)
		}
		if left := leftovers(); len(left) > 0 {
			t.Fatalf("%s left files %v", what, left)
		}
	}

	// Warm: a complete seeder is listed and the metainfo is cached here.
	b, err := newBlobInfo(dgst, size, make([]byte, pieces*sha1.Size))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.meta.store(b); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	tr.seeders[dgst] = []Peer{{TorrentAddr: netip.MustParseAddrPort("127.0.0.2:9"), HTTPAddr: "127.0.0.2:9"}}
	tr.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Blob is all a HEAD asks: the size, nothing reserved. The first Open
	// (a GET, before the registry answers) fails.
	blob, err := d.Blob(ctx, refForTests(), dgst)
	if err != nil {
		t.Fatalf("Blob of a seeded blob (a HEAD): %v", err)
	}
	if blob.Size() != size {
		t.Fatalf("size %d, want %d", blob.Size(), size)
	}
	if left := leftovers(); len(left) > 0 || len(d.Stats().Torrents) > 0 {
		t.Fatalf("Blob alone reserved %v", left)
	}
	if rc, err := blob.Open(ctx, 0); err == nil {
		rc.Close()
		t.Fatal("Open returned a stream the data dir cannot hold")
	} else {
		check("Open", err)
	}
	blob.Close()
	if got := linesWith(logged.String(), "level=ERROR", "cannot store a download", "no space left on device"); len(got) == 0 {
		t.Fatalf("the full disk is not logged as an error:\n%s", logged.String())
	}

	// Cold: the owner grows the blob (nothing of it written yet).
	d.meta.remove(dgst)
	owner := startNode(t, tr, "127.0.0.2", "", nil)
	g, err := owner.Grow(dgst, size, zeroReaderAt{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Fail(errors.New("test over"))
	if blob, err := d.Follow(ctx, dgst, size, owner.http.Listener.Addr().String()); err == nil {
		blob.Close()
		t.Fatal("Follow returned a blob the data dir cannot hold")
	} else {
		check("Follow", err)
	}
}

// zeroReaderAt is a file of zeros of any length.
type zeroReaderAt struct{}

func (zeroReaderAt) ReadAt(p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}
