package swarm

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The owner dies after three chunks reached its followers: the candidate
// that takes over gets exactly those chunks from the followers (checked
// piece by piece), and its own growth can then publish them.
func TestPrefixFromFollowersAfterTheOwnerDied(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 6*testChunk)
	size := int64(len(content))
	owner := startNode(t, tr, "127.0.0.2", "", chunked())
	g, err := owner.Grow(dgst, size, bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var fs []*follower
	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
		n := startNode(t, tr, ip, "", chunked(func(c *Config) { c.StallTimeout = time.Minute }))
		tr.announcePartial(dgst, n)
		fs = append(fs, follow(t, ctx, n, owner, dgst, size))
	}
	const held = 3 * testChunk
	g.Advance(held + testChunk/2) // chunk 3 is half in: not published
	waitFor(t, "followers hold the published chunks", func() bool {
		for _, f := range fs {
			if st, ok := lookupStats(f.n, dgst); !ok || st.BytesCompleted < held {
				return false
			}
		}
		return true
	})
	owner.stop()

	// A follower names a chunk it holds only to those asking for held
	// chunks: nobody follows a follower.
	base := metainfoPathPrefix + dgst.String() + "?chunk="
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"0&wait=0&held=1", http.StatusOK},
		{"2&wait=0&held=1", http.StatusOK},
		{"3&wait=0&held=1", http.StatusNotFound},
		{"0&wait=0", http.StatusNotFound},
	} {
		if got := peerStatus(fs[0].n, base+tc.query); got != tc.want {
			t.Errorf("chunk %s from a follower: %d, want %d", tc.query, got, tc.want)
		}
	}

	// A follower that becomes the candidate reads its own download.
	var own bytes.Buffer
	if n, err := fs[1].n.Prefix(ctx, dgst, size, &own); err != nil || n != held || !bytes.Equal(own.Bytes(), content[:held]) {
		t.Fatalf("Prefix on a follower = %d, %v; want its own %d bytes", n, err, held)
	}

	taker := startNode(t, tr, "127.0.0.5", "", chunked())
	spool, err := os.Create(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	g2, err := taker.Grow(dgst, size, spool)
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Fail(nil)
	n, err := taker.Prefix(ctx, dgst, size, spool)
	if err != nil || n != held {
		t.Fatalf("Prefix = %d, %v; want the %d bytes of three chunks", n, err, held)
	}
	got := make([]byte, n)
	if _, err := spool.ReadAt(got, 0); err != nil || !bytes.Equal(got, content[:n]) {
		t.Fatalf("the prefix written is not the blob's first %d bytes (%v)", n, err)
	}
	if files, _ := filepath.Glob(filepath.Join(taker.cfg.DataDir, "downloads", "*", "*")); len(files) != 0 {
		t.Errorf("the prefix's download files stayed: %v", files)
	}
	// The taker's growth publishes the chunks it now has: no torrent of
	// the prefix is left in the way.
	g2.Advance(n)
	takerBase := metainfoPathPrefix + dgst.String() + "?chunk="
	for k := range 3 {
		waitFor(t, "the taker publishes chunk "+strconv.Itoa(k), func() bool {
			return peerStatus(taker, takerBase+strconv.Itoa(k)+"&wait=0") == http.StatusOK
		})
	}
}

// Nothing held anywhere: no byte, no error, at once.
func TestPrefixWithNoHolderIsEmpty(t *testing.T) {
	tr := newTracker()
	_, dgst := randomBlob(t, 4*testChunk)
	n := startNode(t, tr, "127.0.0.6", "", chunked())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var buf bytes.Buffer
	if got, err := n.Prefix(ctx, dgst, 4*testChunk, &buf); got != 0 || err != nil || buf.Len() != 0 {
		t.Fatalf("Prefix = %d, %v (%d bytes written); want nothing", got, err, buf.Len())
	}
}

// halfStallingReaderAt serves the bytes before upto and blocks on any read
// past them until release closes: a seeder whose later pieces never come.
type halfStallingReaderAt struct {
	data    []byte
	upto    int64
	release chan struct{}
}

func (s halfStallingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.upto {
		<-s.release
		return 0, io.ErrUnexpectedEOF
	}
	return copy(p, s.data[off:]), nil
}

// A download of this node that holds chunk 0 and waits on chunk 1 gives
// the prefix chunk 0 at once: Prefix never waits for the download (its
// caller's followers wait for the first byte within their lookup budget).
func TestPrefixFromAStuckDownloadTakesItsWholeChunksAtOnce(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 4*testChunk)
	size := int64(len(content))
	seeder := startNode(t, tr, "127.0.0.7", "", chunked())
	stall := halfStallingReaderAt{data: content, upto: testChunk, release: make(chan struct{})}
	defer close(stall.release)
	seedRaw(t, seeder, tr, mustHash(t, content, dgst), stall)
	d := startNode(t, tr, "127.0.0.8", "", chunked(func(c *Config) { c.StallTimeout = time.Minute }))
	rc, err := openBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, testChunk)); err != nil {
		t.Fatalf("chunk 0 from the seeder: %v", err)
	}
	// The stream now waits on chunk 1, which never comes. Prefix must not:
	// its context would end it only after the test's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var buf bytes.Buffer
	n, err := d.Prefix(ctx, dgst, size, &buf)
	if err != nil || n != testChunk || !bytes.Equal(buf.Bytes(), content[:testChunk]) {
		t.Fatalf("Prefix = %d, %v; want chunk 0's %d bytes", n, err, testChunk)
	}
	if ctx.Err() != nil {
		t.Fatal("Prefix waited for the stuck download until its context ended")
	}
}
