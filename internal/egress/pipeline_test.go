package egress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/sourcetest"
)

// followMode is what the fake swarm does with a Follow.
type followMode int

const (
	followServe        followMode = iota // the blob, from the owner's spool
	followRefuse                         // Follow fails (the owner does not know the blob)
	followFailFirst                      // every read fails before its first byte
	followFailMidway                     // a read fails after some bytes
	followSilent                         // reads wait, for ever, for a byte
	followStallMidway                    // reads wait, for ever, after some bytes
	followLieMidway                      // some bytes, one of them wrong, then a failure
	followSlowMidway                     // as followStallMidway, while Progress grows a while
	followMovingSilent                   // as followSilent, while Progress grows for ever
)

// fakePipeline stands for swarm.Follow: it reads the owner's spool through
// the owner's Fetcher (as the swarm would get its bytes from the owner's
// growing seed), so a Follow of a download the owner has not started
// finds nothing.
type fakePipeline struct {
	owner *node
	ref   oci.Ref
	mode  followMode

	mu    sync.Mutex
	calls []followCall
	blobs []*fakeFollowed
}

type followCall struct {
	dgst      digest.Digest
	size      int64
	ownerHTTP string
	started   bool // the owner's download existed when Follow was called
}

func (p *fakePipeline) followed() []followCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]followCall(nil), p.calls...)
}

func (p *fakePipeline) Follow(ctx context.Context, dgst digest.Digest, size int64, ownerHTTP string) (oci.Blob, error) {
	p.owner.fetcher.mu.Lock()
	started := p.owner.fetcher.spools[dgst] != nil
	p.owner.fetcher.mu.Unlock()
	p.mu.Lock()
	p.calls = append(p.calls, followCall{dgst, size, ownerHTTP, started})
	p.mu.Unlock()
	if !started || p.mode == followRefuse {
		return nil, errors.Join(errors.New("fake swarm: owner does not know the blob"), oci.ErrNotFound)
	}
	b, err := p.owner.fetcher.Fetch(ctx, p.ref, dgst)
	if err != nil {
		return nil, err
	}
	f := &fakeFollowed{Blob: b, mode: p.mode}
	p.mu.Lock()
	p.blobs = append(p.blobs, f)
	p.mu.Unlock()
	return f, nil
}

type fakeFollowed struct {
	oci.Blob
	mode       followMode
	progresses atomic.Int64 // calls of Progress
}

// Progress says the blob still moves for its first four calls with
// followSlowMidway, at every call with followMovingSilent; it never grows
// otherwise.
func (b *fakeFollowed) Progress() int64 {
	n := b.progresses.Add(1)
	switch b.mode {
	case followSlowMidway:
		return 1000 * min(n, 4)
	case followMovingSilent:
		return 1000 * n
	}
	return 0
}

func (b *fakeFollowed) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	rc, err := b.Blob.Open(ctx, offset)
	if err != nil {
		return nil, err
	}
	switch b.mode {
	case followFailFirst:
		rc.Close()
		return io.NopCloser(failedReader{errors.New("fake swarm: no peer answered")}), nil
	case followFailMidway:
		return &midwayReader{rc: rc, left: 100 << 10}, nil
	case followStallMidway, followSlowMidway:
		return &midwayReader{rc: rc, left: 100 << 10, ctx: ctx}, nil
	case followLieMidway:
		return &midwayReader{rc: rc, left: 100 << 10, lie: true}, nil
	case followSilent, followMovingSilent:
		rc.Close()
		return io.NopCloser(silentReader{ctx}), nil
	}
	return rc, nil
}

// midwayReader fails once left bytes were read, or with ctx set waits for
// it to end; lie flips the first byte.
type midwayReader struct {
	rc   io.ReadCloser
	left int
	ctx  context.Context
	lie  bool
}

func (r *midwayReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		if r.ctx != nil {
			<-r.ctx.Done()
			return 0, context.Cause(r.ctx)
		}
		return 0, errors.New("fake swarm: every peer left")
	}
	n, err := r.rc.Read(p[:min(len(p), r.left)])
	if r.lie && n > 0 {
		p[0] ^= 0xff
		r.lie = false
	}
	r.left -= n
	return n, err
}

func (r *midwayReader) Close() error { return r.rc.Close() }

// silentReader delivers nothing until its context ends, as oci.Blob
// readers must.
type silentReader struct{ ctx context.Context }

func (r silentReader) Read([]byte) (int, error) {
	<-r.ctx.Done()
	return 0, context.Cause(r.ctx)
}

// pipelineNodes is an egress owner and a node that follows through p.
type pipelineNodes struct {
	owner, follower *node
	pipe            *fakePipeline
	starts          *progressRecorder
}

func newPipelineNodes(t *testing.T, up *testUpstream, ref oci.Ref, mode followMode, min int64) *pipelineNodes {
	members := &cluster{}
	pn := &pipelineNodes{starts: &progressRecorder{t: t}}
	pn.owner = newNode(t, "owner", true, up.source(), members, func(fc *FetcherConfig) { fc.OnStart = pn.starts.onStart })
	pn.starts.done = pn.owner.done
	pn.pipe = &fakePipeline{owner: pn.owner, ref: ref, mode: mode}
	bUp := &forbiddenUpstream{}
	pn.follower = newNodeWith(t, "follower", false, bUp, members, nil, func(sc *SourceConfig) {
		sc.Pipeline, sc.PipelineMin = pn.pipe, min
	})
	members.set(pn.owner.member(true), pn.follower.member(false))
	t.Cleanup(func() {
		if n := bUp.called(); n != 0 {
			t.Errorf("the follower called its upstream %d times", n)
		}
	})
	return pn
}

// The egress Source still keeps the Source contract when it follows.
func TestSourceConformancePipelined(t *testing.T) {
	up := newTestUpstream(t)
	sourcetest.Run(t, sourcetest.Harness{
		New: func(t *testing.T, c sourcetest.Content) oci.Source {
			up.push(c)
			return newPipelineNodes(t, up, c.Ref, followServe, 1).follower.source
		},
		ResolvesTags:    true,
		ServesManifests: true,
		Registry:        up.host(),
	})
}

// A non-owner asks the owner to start the download, then follows it in
// the swarm; the owner's blob stream is asked only when following fails
// or stalls, and then must match what the swarm delivered.
func TestSourcePipeline(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mode       followMode
		min        int64 // PipelineMin
		wantFollow bool
		wantStream bool   // a GET of the owner's blob stream
		wantRange  string // its Range: the swarm's bytes are not sent again
		wantErr    bool
	}{
		{name: "followed", mode: followServe, min: 1 << 20, wantFollow: true},
		{name: "smaller than PipelineMin: streamed", mode: followServe, min: 64 << 20, wantStream: true},
		{name: "Follow fails: streamed", mode: followRefuse, min: 1 << 20, wantFollow: true, wantStream: true},
		{name: "first read fails: streamed", mode: followFailFirst, min: 1 << 20, wantFollow: true, wantStream: true},
		{name: "fails after bytes: streamed from there", mode: followFailMidway, min: 1 << 20, wantFollow: true, wantStream: true, wantRange: "bytes=102400-"},
		{name: "stalls after bytes: streamed from there", mode: followStallMidway, min: 1 << 20, wantFollow: true, wantStream: true, wantRange: "bytes=102400-"},
		{name: "swarm's bytes differ from the owner's: the read fails", mode: followLieMidway, min: 1 << 20, wantFollow: true, wantStream: true, wantRange: "bytes=102400-", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := newTestUpstream(t)
			c := up.content(4<<20+9, 51)
			pn := newPipelineNodes(t, up, c.Ref, tc.mode, tc.min)
			pn.follower.source.cfg.PipelineStall = 300 * time.Millisecond

			b, err := pn.follower.source.Blob(ctx, c.Ref, c.BlobDigest())
			if err != nil {
				t.Fatal(err)
			}
			if b.Size() != int64(len(c.Blob)) {
				t.Errorf("size %d, want %d", b.Size(), len(c.Blob))
			}
			got, err := readAllAt(ctx, b, 0)
			b.Close()
			switch {
			case tc.wantErr && err == nil:
				t.Errorf("read the whole blob (%d bytes) through a stream that failed midway", len(got))
			case tc.mode == followLieMidway && !errors.Is(err, oci.ErrDigestMismatch):
				t.Errorf("read failed with %v, want the blob's digest found wrong", err)
			case !tc.wantErr && (err != nil || !bytes.Equal(got, c.Blob)):
				t.Errorf("read %d bytes, %v; want the blob", len(got), err)
			}

			calls := pn.pipe.followed()
			if tc.wantFollow {
				if len(calls) != 1 {
					t.Fatalf("Follow called %d times, want 1", len(calls))
				}
				want := followCall{c.BlobDigest(), int64(len(c.Blob)), pn.owner.member(true).HTTPAddr, true}
				if calls[0] != want {
					t.Errorf("Follow%+v, want %+v (after the owner started)", calls[0], want)
				}
			} else if len(calls) != 0 {
				t.Errorf("Follow called %d times, want none", len(calls))
			}
			if got := pn.owner.requests("POST", fetchPath); got != 1 {
				t.Errorf("owner got %d start requests, want 1", got)
			}
			if got, want := pn.owner.requests("GET", blobsPath) > 0, tc.wantStream; got != want {
				t.Errorf("owner's blob stream asked: %v, want %v", got, want)
			}
			if got := pn.owner.blobRanges(); tc.wantRange != "" && (len(got) != 1 || got[0] != tc.wantRange) {
				t.Errorf("owner's blob stream asked with ranges %q, want one from where the swarm stopped (%s)", got, tc.wantRange)
			}
			// The owner fetches once, to the end, whatever the follower did.
			waitFor(t, func() bool { return len(pn.owner.done.list()) == 1 }, "the owner's download to complete")
			if n := up.gets(c.BlobDigest()); n != 1 {
				t.Errorf("upstream saw %d blob GETs, want 1", n)
			}
		})
	}
}

// A later Open after the swarm failed before its first byte goes to the
// owner's stream at once, from any offset, with the digest checked.
func TestSourcePipelineFallbackSticks(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(2<<20+1, 52)
	pn := newPipelineNodes(t, up, c.Ref, followFailFirst, 1)
	b, err := pn.follower.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, off := range []int64{0, 12345, int64(len(c.Blob))} {
		got, err := readAllAt(ctx, b, off)
		if err != nil || !bytes.Equal(got, c.Blob[off:]) {
			t.Errorf("offset %d: %d bytes, %v", off, len(got), err)
		}
	}
	if got := pn.owner.requests("GET", blobsPath); got != 3 {
		t.Errorf("owner's blob stream asked %d times, want 3 (one per Open)", got)
	}
}

// An owner that predates the start path (405) is streamed from as before.
func TestSourcePipelineOldOwner(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(2<<20+2, 53)
	pn := newPipelineNodes(t, up, c.Ref, followServe, 1)
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		pn.owner.srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer old.Close()
	m := pn.owner.member(true)
	m.HTTPAddr = strings.TrimPrefix(old.URL, "http://")
	pn.follower.source.cfg.Cluster.(*cluster).set(m, pn.follower.member(false))

	b, err := pn.follower.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, c.Blob) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if n := len(pn.pipe.followed()); n != 0 {
		t.Errorf("Follow called %d times for an owner that cannot start", n)
	}
}

// A blob the upstream lacks is not found, without a Follow.
func TestSourcePipelineNotFound(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1<<10, 54)
	pn := newPipelineNodes(t, up, c.Ref, followServe, 1)
	_, err := pn.follower.source.Blob(ctx, c.Ref, digest.FromString("absent"))
	if !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("err %v, want not found", err)
	}
	if n := len(pn.pipe.followed()); n != 0 {
		t.Errorf("Follow called %d times", n)
	}
}

// The owner itself reads its spool: no start request, no Follow.
func TestSourcePipelineOwnerReadsItsSpool(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(2<<20+3, 55)
	members := &cluster{}
	pipe := &fakePipeline{}
	owner := newNodeWith(t, "owner", true, up.source(), members, nil, func(sc *SourceConfig) { sc.Pipeline, sc.PipelineMin = pipe, 1 })
	pipe.owner, pipe.ref = owner, c.Ref
	members.set(owner.member(true))
	b, err := owner.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, c.Blob) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if n := len(pipe.followed()); n != 0 {
		t.Errorf("the owner followed itself %d times", n)
	}
}

// startURL is the owner's start path for c.
func startURL(n *node, c sourcetest.Content) string {
	return n.srv.URL + fetchPath + c.BlobDigest().String() + "?" +
		url.Values{"ns": {c.Ref.Registry}, "repo": {c.Ref.Repository}}.Encode()
}

// POST fetch/<digest> answers the size as soon as the upstream gave it,
// the download then runs to its end with nobody reading it, and however
// many members start it (and stream it) the upstream is asked once.
func TestPeerStartFetch(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(3<<20+11, 56)
	release := up.hold(int64(len(c.Blob)) / 2)
	defer release()
	tn := newTwoNodes(t, up)

	var wg sync.WaitGroup
	sizes := make(chan int64, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, err := tn.b.source.remoteStart(ctx, tn.a.member(true), c.Ref, c.BlobDigest())
			if err != nil || reply.Unkept {
				t.Errorf("start: %+v, %v", reply, err)
			}
			sizes <- reply.Size
		}()
	}
	wg.Wait() // the upstream still holds the second half back
	close(sizes)
	for size := range sizes {
		if size != int64(len(c.Blob)) {
			t.Errorf("start answered size %d, want %d", size, len(c.Blob))
		}
	}
	if len(tn.a.done.list()) != 0 {
		t.Fatal("the download completed while the upstream held it")
	}
	// A member streaming it joins the same download.
	b, err := tn.b.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	b.Close() // leaves without reading
	release()
	waitFor(t, func() bool { return len(tn.a.done.list()) == 1 }, "the download with no reader to complete")
	if got := tn.a.done.list()[0]; !bytes.Equal(got.data, c.Blob) {
		t.Errorf("the owner kept %d bytes, want the blob", len(got.data))
	}
	if n := up.gets(c.BlobDigest()); n != 1 {
		t.Errorf("upstream saw %d blob GETs, want 1", n)
	}
	// Kept: a later start answers at once, without the upstream.
	if reply, err := tn.b.source.remoteStart(ctx, tn.a.member(true), c.Ref, c.BlobDigest()); err != nil || reply.Size != int64(len(c.Blob)) || reply.Unkept {
		t.Errorf("start of the kept blob: %+v, %v", reply, err)
	}
	if n := up.gets(c.BlobDigest()); n != 1 {
		t.Errorf("upstream saw %d blob GETs after a start of the kept blob, want 1", n)
	}
}

// The start path's answers to bad or misplaced requests.
func TestPeerStartFetchRequests(t *testing.T) {
	up := newTestUpstream(t)
	c := up.content(64<<10, 57)
	tn := newTwoNodes(t, up)
	noFwd := map[string]string{oci.NoForwardHeader: "1"}
	q := "?" + url.Values{"ns": {c.Ref.Registry}, "repo": {c.Ref.Repository}}.Encode()
	for _, tc := range []struct {
		name   string
		method string
		url    string
		header map[string]string
		want   int
	}{
		{"start", "POST", startURL(tn.a, c), noFwd, 200},
		{"GET", "GET", startURL(tn.a, c), noFwd, 405},
		{"POST of a blob", "POST", tn.a.srv.URL + blobsPath + c.BlobDigest().String() + q, noFwd, 405},
		{"no forwarding header", "POST", startURL(tn.a, c), nil, 400},
		{"bad digest", "POST", tn.a.srv.URL + fetchPath + "sha256:xyz" + q, noFwd, 400},
		{"no ns", "POST", tn.a.srv.URL + fetchPath + c.BlobDigest().String() + "?repo=test/app", noFwd, 400},
		{"unknown blob", "POST", tn.a.srv.URL + fetchPath + digest.FromString("absent").String() + q, noFwd, 404},
		{"not a candidate", "POST", startURL(tn.b, c), noFwd, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := peerRequest(t, tc.method, tc.url, tc.header)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, body)
			}
			if tc.want == 200 {
				var r startReply
				if err := json.Unmarshal(body, &r); err != nil || r.Digest != c.BlobDigest() || r.Size != int64(len(c.Blob)) {
					t.Errorf("reply %s (%v), want digest and size %d", body, err, len(c.Blob))
				}
			}
		})
	}
}

// Only members may start a download: without a token, with another
// cluster's token, or (keyless) from an address that is not a member's,
// the answer is 403 and nothing starts — no upstream request, no spool,
// no OnStart.
func TestPeerStartFetchRefusesOutsiders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		keyed  bool
		client func(t *testing.T) *http.Client
	}{
		{"keyed, no token", true, func(*testing.T) *http.Client { return &http.Client{Timeout: 10 * time.Second} }},
		{"keyed, another cluster's token", true, func(t *testing.T) *http.Client { return signingClient(egressKeys(t, 2)) }},
		{"keyless, not a member's address", false, func(*testing.T) *http.Client { return &http.Client{Timeout: 10 * time.Second} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := newTestUpstream(t)
			c := up.content(1<<20, 58)
			members := &cluster{outsider: !tc.keyed}
			starts := &progressRecorder{t: t}
			owner := newNodeWith(t, "a", true, up.source(), members,
				func(fc *FetcherConfig) { fc.OnStart = starts.onStart },
				func(sc *SourceConfig) {
					if tc.keyed {
						k := egressKeys(t, 1)
						sc.Gate, sc.Client = &peerauth.Gate{Keys: k, Member: members.IsMember}, signingClient(k)
					}
				})
			members.set(owner.member(true))
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, startURL(owner, c), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(oci.NoForwardHeader, "1")
			resp, err := tc.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("status %d (%s), want 403", resp.StatusCode, body)
			}
			if bytes.Contains(body, []byte(`"size"`)) {
				t.Errorf("an outsider learned the size: %s", body)
			}
			if n := up.gets(c.BlobDigest()); n != 0 {
				t.Errorf("an outsider's start reached the upstream: %d GETs", n)
			}
			if n := len(starts.all()); n != 0 {
				t.Errorf("an outsider's start began %d downloads", n)
			}
			if files := owner.spoolFiles(t); len(files) != 0 {
				t.Errorf("an outsider's start left spool files %v", files)
			}
		})
	}
}

// openFollowed opens, on a follower whose swarm acts as mode and whose
// pipeline bound is stall, a new blob of size bytes (seed picks its
// content), which it returns too. The blob closes with the test.
func openFollowed(t *testing.T, mode followMode, stall time.Duration, size int, seed uint64) (context.Context, *pipelineNodes, oci.Blob, []byte) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(size, seed)
	pn := newPipelineNodes(t, up, c.Ref, mode, 1)
	pn.follower.source.cfg.PipelineStall = stall
	b, err := pn.follower.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return ctx, pn, b, c.Blob
}

// A swarm that delivers nothing (a slow first chunk, an owner that died
// unnoticed) is given up after PipelineStall, long before the registry
// handler's stall timeout, for the owner's stream.
func TestSourcePipelineStallBound(t *testing.T) {
	ctx, pn, b, blob := openFollowed(t, followSilent, 200*time.Millisecond, 2<<20+4, 59)
	start := time.Now()
	if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("fell back after %s, before the first-byte bound", d)
	}
	if got := pn.owner.requests("GET", blobsPath); got != 1 {
		t.Errorf("owner's blob stream asked %d times, want 1", got)
	}
}

// A followed read that gets no byte while the blob still moves (Progress
// grows) keeps waiting on the swarm; once the blob does not move for the
// bound, it streams the rest from the owner, from where the swarm stopped.
func TestSourcePipelineWaitsWhileTheSwarmMoves(t *testing.T) {
	ctx, pn, b, blob := openFollowed(t, followSlowMidway, 100*time.Millisecond, 2<<20+6, 61)
	if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	pn.pipe.mu.Lock()
	f := pn.pipe.blobs[0]
	pn.pipe.mu.Unlock()
	// One call at the Open, three that found more, one that found none.
	if n := f.progresses.Load(); n != 5 {
		t.Errorf("the bound asked how the blob moved %d times before falling back, want 5", n)
	}
	if got := pn.owner.blobRanges(); len(got) != 1 || got[0] != "bytes=102400-" {
		t.Errorf("owner's blob stream asked with ranges %q, want one from where the swarm stopped", got)
	}
}

// A followed read is oci.Progressing, so the registry handler can tell a
// late first byte of a blob that moves (a first chunk slow from the
// upstream) from a stall: it says how the blob moves, and it waits while
// it does, however long, without leaving the swarm for the owner's
// stream; closing it (the handler's stall watch) ends the wait.
func TestSourcePipelineReadWaitsWhileItsBlobMoves(t *testing.T) {
	const stall = 100 * time.Millisecond
	ctx, pn, b, _ := openFollowed(t, followMovingSilent, stall, 2<<20+8, 67)
	rc, err := b.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	mv, ok := rc.(oci.Progressing)
	if !ok {
		rc.Close()
		t.Fatalf("a followed read (%T) is not oci.Progressing", rc)
	}
	if p1, p2 := mv.Progress(), mv.Progress(); p2 <= p1 {
		t.Errorf("Progress %d then %d: it does not say the blob moves", p1, p2)
	}
	read := make(chan error, 1)
	go func() {
		_, err := rc.Read(make([]byte, 1024))
		read <- err
	}()
	select {
	case err := <-read:
		t.Fatalf("the read ended (%v) while its blob moved", err)
	case <-time.After(10 * stall):
	}
	if got := pn.owner.requests("GET", blobsPath); got != 0 {
		t.Errorf("owner's blob stream asked %d times while the swarm's blob moved, want 0", got)
	}
	rc.Close()
	select {
	case err := <-read:
		if err == nil {
			t.Error("the read of a closed stream ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("closing the stream did not end its read")
	}
}

// When the followed owner dies, the read streams from the next candidate.
func TestSourcePipelineFallsBackToTheNextCandidate(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(2<<20+5, 60)
	members := &cluster{}
	a := newNode(t, "a", true, up.source(), members, nil)
	b := newNode(t, "b", true, up.source(), members, nil)
	pipe := &fakePipeline{ref: c.Ref, mode: followFailFirst}
	follower := newNodeWith(t, "c", false, &forbiddenUpstream{}, members, nil, func(sc *SourceConfig) { sc.Pipeline, sc.PipelineMin = pipe, 1 })
	members.set(a.member(true), b.member(true), follower.member(false))
	first, second := a, b
	if candidates(members.Members(), follower.member(false), blobKey(c.BlobDigest()))[0].Name == "b" {
		first, second = b, a
	}
	pipe.owner = first

	blob, err := follower.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	first.srv.CloseClientConnections()
	first.srv.Listener.Close() // the owner dies after the start
	if got, err := readAllAt(ctx, blob, 0); err != nil || !bytes.Equal(got, c.Blob) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if got := second.requests("GET", blobsPath); got != 1 {
		t.Errorf("the next candidate streamed %d times, want 1", got)
	}
}

// The handler's stall watch closes a reader from another goroutine while
// a Read waits: the Read ends, with an error, and nothing falls back.
func TestSourcePipelineCloseDuringRead(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(2<<20+6, 61)
	pn := newPipelineNodes(t, up, c.Ref, followSilent, 1)
	pn.follower.source.cfg.PipelineStall = time.Minute
	b, err := pn.follower.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rc, err := b.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := rc.Read(make([]byte, 4096))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := rc.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("a closed read returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Read waiting on the swarm did not end when its reader was closed")
	}
	if got := pn.owner.requests("GET", blobsPath); got != 0 {
		t.Errorf("a closed reader fell back to the owner's stream %d times", got)
	}
}
