package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dregistry/dregistry/registry/oci"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// rangeMode is how the fake upstream answers a ranged GET.
type rangeMode int

const (
	rangeHonoured rangeMode = iota // 206 with the right Content-Range
	rangeIgnored                   // 200: the whole blob
	rangeWrong                     // 206 naming another range
)

// rangeUpstream is an in-process upstream of one blob that records what it
// was asked: the upstream client (and its Content-Range check) is tested
// in package registry; here the Fetcher's handling of each answer is.
type rangeUpstream struct {
	data []byte
	dgst digest.Digest
	mode rangeMode

	mu    sync.Mutex
	froms []int64 // offsets asked with Range
	opens int     // whole-blob GETs
	sent  int64   // body bytes handed out
}

func (u *rangeUpstream) Name() string { return "range-upstream" }
func (u *rangeUpstream) Resolve(context.Context, oci.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, oci.ErrNotFound
}

func (u *rangeUpstream) Manifest(context.Context, oci.Ref, digest.Digest) (*oci.Manifest, error) {
	return nil, oci.ErrNotFound
}

func (u *rangeUpstream) Blob(_ context.Context, _ oci.Ref, d digest.Digest) (oci.Blob, error) {
	if d != u.dgst {
		return nil, oci.ErrNotFound
	}
	return rangeBlob{u}, nil
}

func (u *rangeUpstream) body(from int64) io.ReadCloser {
	return io.NopCloser(&countingReader{r: bytes.NewReader(u.data[from:]), u: u})
}

func (u *rangeUpstream) asked() (froms []int64, opens int, sent int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]int64(nil), u.froms...), u.opens, u.sent
}

type countingReader struct {
	r io.Reader
	u *rangeUpstream
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.u.mu.Lock()
	c.u.sent += int64(n)
	c.u.mu.Unlock()
	return n, err
}

type rangeBlob struct{ u *rangeUpstream }

func (b rangeBlob) Size() int64  { return int64(len(b.u.data)) }
func (b rangeBlob) Close() error { return nil }

func (b rangeBlob) Open(_ context.Context, offset int64) (io.ReadCloser, error) {
	if offset != 0 {
		return nil, fmt.Errorf("the fetcher opens the whole blob, not from %d", offset)
	}
	b.u.mu.Lock()
	b.u.opens++
	b.u.mu.Unlock()
	return b.u.body(0), nil
}

func (b rangeBlob) OpenFrom(_ context.Context, offset int64) (io.ReadCloser, int64, error) {
	b.u.mu.Lock()
	b.u.froms = append(b.u.froms, offset)
	b.u.mu.Unlock()
	switch b.u.mode {
	case rangeIgnored:
		return b.u.body(0), 0, nil
	case rangeWrong:
		return nil, 0, fmt.Errorf("Content-Range %q: %w", "bytes 0-99/100", oci.ErrBadContentRange)
	}
	return b.u.body(offset), offset, nil
}

// fakePrefix hands out the blob's first n bytes (what followers hold),
// corrupt ones if asked; err, when set, is returned after the n bytes (a
// swarm that failed).
type fakePrefix struct {
	data    []byte
	n       int64
	corrupt bool
	err     error

	mu    sync.Mutex
	calls int
}

func (p *fakePrefix) Prefix(ctx context.Context, _ digest.Digest, size int64, w io.Writer) (int64, error) {
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	if size != int64(len(p.data)) {
		return 0, fmt.Errorf("size %d, want %d", size, len(p.data))
	}
	b := bytes.Clone(p.data[:p.n])
	if p.corrupt && len(b) > 0 {
		b[len(b)/2] ^= 0xff
	}
	var n int64
	for len(b) > 0 { // in pieces, as the swarm writes them
		m, err := w.Write(b[:min(len(b), 256<<10)])
		n += int64(m)
		if err != nil {
			return n, err
		}
		b = b[m:]
	}
	return n, p.err
}

func (p *fakePrefix) called() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// A download that takes over from a dead owner starts with the chunks the
// cluster holds and asks the upstream for the rest: whatever the upstream
// answers to the Range, the blob served is exactly the blob, the whole of
// it hashed, and the upstream sends at most the blob once.
func TestFetchResumesFromTheClustersPrefix(t *testing.T) {
	data := make([]byte, 8<<20+1234)
	rng := rand.New(rand.NewPCG(13, 1))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	dgst := digest.FromBytes(data)
	size := int64(len(data))
	const prefix = 3 << 20
	for _, tc := range []struct {
		name      string
		mode      rangeMode
		prefix    int64
		wantFroms []int64
		wantOpens int
		wantSent  int64
	}{
		{"206 with the right Content-Range: only the rest is sent", rangeHonoured, prefix, []int64{prefix}, 0, size - prefix},
		{"200 ignoring the Range: the prefix is dropped from the whole", rangeIgnored, prefix, []int64{prefix}, 0, size},
		{"a wrong Content-Range: the whole blob again, prefix dropped", rangeWrong, prefix, []int64{prefix}, 1, size},
		{"nothing held: a fetch from byte 0", rangeHonoured, 0, nil, 1, size},
		{"everything held: no body from the upstream", rangeHonoured, size, nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := &rangeUpstream{data: data, dgst: dgst, mode: tc.mode}
			pre := &fakePrefix{data: data, n: tc.prefix}
			n := newNode(t, "a", true, up, &cluster{}, func(c *FetcherConfig) { c.Prefix = pre })
			b, err := n.fetcher.Fetch(ctx, oci.Ref{Registry: "r.test", Repository: "x"}, dgst)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			got, err := readAllAt(ctx, b, 0)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, not the blob", len(got))
			}
			froms, opens, sent := up.asked()
			if fmt.Sprint(froms) != fmt.Sprint(tc.wantFroms) || opens != tc.wantOpens || sent != tc.wantSent {
				t.Errorf("upstream asked from %v, %d whole GETs, %d bytes sent; want from %v, %d whole, %d bytes",
					froms, opens, sent, tc.wantFroms, tc.wantOpens, tc.wantSent)
			}
			// OnComplete runs on the download's goroutine after the last
			// byte is released: wait for it, bounded.
			deadline := time.Now().Add(10 * time.Second)
			for len(n.done.list()) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if done := n.done.list(); len(done) != 1 || done[0].size != size {
				t.Errorf("completions %+v, want the blob once", done)
			}
		})
	}
}

// A prefix that does not belong to the blob (a lying member, or an old
// owner whose upstream sent wrong bytes) ends in a digest mismatch: every
// reader fails, nothing is kept, and the next download fetches the whole
// blob from the upstream without asking the cluster.
func TestFetchResumedDigestMismatchFailsAndTheNextStartsFromZero(t *testing.T) {
	ctx := testCtx(t)
	data := bytes.Repeat([]byte("resume!"), 1<<20)
	dgst := digest.FromBytes(data)
	up := &rangeUpstream{data: data, dgst: dgst}
	pre := &fakePrefix{data: data, n: 2 << 20, corrupt: true}
	n := newNode(t, "a", true, up, &cluster{}, func(c *FetcherConfig) { c.Prefix = pre })
	ref := oci.Ref{Registry: "r.test", Repository: "x"}

	b, err := n.fetcher.Fetch(ctx, ref, dgst)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAllAt(ctx, b, 0)
	b.Close()
	if !errors.Is(err, errDigestMismatch) {
		t.Fatalf("read %d bytes, err %v; want a digest mismatch", len(got), err)
	}
	if int64(len(got)) >= int64(len(data)) {
		t.Fatalf("a wrong blob was served whole (%d bytes)", len(got))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(n.spoolFiles(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("spool files left after the mismatch: %v", n.spoolFiles(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if done := n.done.list(); len(done) != 0 {
		t.Fatalf("a mismatching blob completed: %+v", done)
	}

	b, err = n.fetcher.Fetch(ctx, ref, dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("second fetch: %d bytes, %v", len(got), err)
	}
	if c := pre.called(); c != 1 {
		t.Errorf("the cluster was asked for a prefix %d times, want once (not after the mismatch)", c)
	}
	if froms, opens, _ := up.asked(); len(froms) != 1 || opens != 1 {
		t.Errorf("upstream asked from %v and %d whole GETs; want one ranged GET, then one whole", froms, opens)
	}
}

// slowPrefix is a swarm whose followers trickle: it writes step bytes of
// the blob at a time, the next after every, until the test releases it or
// its context ends; with step 0 it writes nothing, blocked as on followers
// that vanished. It never writes the whole blob.
type slowPrefix struct {
	data    []byte
	step    int
	every   time.Duration
	release chan struct{} // closed by the test

	wrote atomic.Int64
}

func (p *slowPrefix) Prefix(ctx context.Context, _ digest.Digest, _ int64, w io.Writer) (int64, error) {
	var n int64
	for {
		if p.step > 0 && n+int64(p.step) < int64(len(p.data)) {
			m, err := w.Write(p.data[n : n+int64(p.step)])
			n += int64(m)
			p.wrote.Store(n)
			if err != nil {
				return n, err
			}
		}
		select {
		case <-ctx.Done():
			return n, context.Cause(ctx)
		case <-p.release:
			return n, nil
		case <-time.After(p.every):
		}
	}
}

// A requester waits for a blob's size no longer than the handler's lookup
// budget, and a takeover's prefix may be long (a big blob's chunks) or
// stalled (its followers vanished): the fill is cut by its share of the
// egress's lookup budget, while the Prefix is still at it, so the size is
// published in time. The whole bytes written by then are kept and the
// upstream sends the rest from there in one GET (from 0 without a byte);
// the blob read is whole.
func TestFetchPrefixCutByTheLookupBudget(t *testing.T) {
	data := bytes.Repeat([]byte("a prefix that takes its time"), 1<<19)
	dgst := digest.FromBytes(data)
	size := int64(len(data))
	for _, tc := range []struct {
		name string
		step int
	}{
		{"writing slowly past the budget: the rest from where it stopped", 4 << 10},
		{"blocked, writing nothing: the whole blob", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := &rangeUpstream{data: data, dgst: dgst}
			// 4 KiB each 5 ms at most: the whole blob would take some
			// 18 s, well past the requester's budget.
			pre := &slowPrefix{data: data, step: tc.step, every: 5 * time.Millisecond, release: make(chan struct{})}
			var releaseOnce sync.Once
			release := func() { releaseOnce.Do(func() { close(pre.release) }) }
			defer release() // before the Fetcher's Close waits for the download
			started := make(chan int64, 1)
			n := newNode(t, "a", true, up, &cluster{}, func(c *FetcherConfig) {
				c.Prefix = pre
				c.LookupTimeout = DefaultFetcherConfig().LookupTimeout
				c.OnStart = func(_ digest.Digest, size int64, _ string) Progress { started <- size; return nil }
			})

			// The requester's whole wait for the size: the handler's
			// lookup budget. The Prefix is not released before.
			budget := oci.DefaultLookupTimeout
			wctx, cancel := context.WithTimeout(ctx, budget)
			defer cancel()
			b, err := n.fetcher.Fetch(wctx, oci.Ref{Registry: "r.test", Repository: "x"}, dgst)
			if err != nil {
				t.Fatalf("the size was not published within the requester's lookup budget (%v) while the Prefix was still writing: %v", budget, err)
			}
			defer b.Close()
			select {
			case got := <-started:
				if got != size {
					t.Errorf("OnStart with size %d, want %d", got, size)
				}
			default:
				t.Error("the size was published before OnStart")
			}
			release()

			if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, %v; want the blob", len(got), err)
			}
			kept := pre.wrote.Load()
			if tc.step > 0 && (kept == 0 || kept >= size) {
				t.Fatalf("the Prefix wrote %d of %d bytes before its cut; the test wants some, not all", kept, size)
			}
			froms, opens, sent := up.asked()
			switch {
			case kept > 0 && (fmt.Sprint(froms) != fmt.Sprint([]int64{kept}) || opens != 0 || sent != size-kept):
				t.Errorf("upstream asked from %v, %d whole GETs, %d bytes sent; want one GET from %d, %d bytes", froms, opens, sent, kept, size-kept)
			case kept == 0 && (len(froms) != 0 || opens != 1 || sent != size):
				t.Errorf("upstream asked from %v, %d whole GETs, %d bytes sent; want one whole GET", froms, opens, sent)
			}
			if files := n.spoolFiles(t); len(files) != 1 || strings.HasSuffix(files[0], ".partial") {
				t.Errorf("spool files %v, want the verified blob", files)
			}
		})
	}
}

// An upstream that answers the blob's size but fails its GET fails the
// owner before it answers anyone (no size published, no OnStart), so the
// member asks the next candidate: with a Prefix as without, whether the
// cluster holds the blob's first bytes or nothing.
func TestUpstreamFailingTheGETSendsTheMemberToTheNextCandidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefix int64 // bytes the cluster holds; -1: no Prefix
	}{
		{"without a Prefix", -1},
		{"with a Prefix holding nothing", 0},
		{"with a Prefix holding the first bytes", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := newTestUpstream(t)
			c := up.content(3<<20+7, 61)
			dgst := c.BlobDigest()
			starts := map[string]*atomic.Int32{"a": {}, "b": {}}
			egressNode := func(name string, members *cluster) *node {
				return newNode(t, name, true, up.source(), members, func(fc *FetcherConfig) {
					if tc.prefix >= 0 {
						fc.Prefix = &fakePrefix{data: c.Blob, n: tc.prefix}
					}
					fc.OnStart = func(digest.Digest, int64, string) Progress { starts[name].Add(1); return nil }
				})
			}
			members := &cluster{}
			a, b := egressNode("a", members), egressNode("b", members)
			asker := newNode(t, "c", false, &forbiddenUpstream{}, members, nil)
			members.set(a.member(true), b.member(true), asker.member(false))
			first, second := a, b
			if candidates(members.Members(), asker.member(false), blobKey(dgst))[0].Name == "b" {
				first, second = b, a
			}

			up.failNextGets(1) // the first candidate's GET
			blob, err := asker.source.Blob(ctx, c.Ref, dgst)
			if err != nil {
				t.Fatal(err)
			}
			defer blob.Close()
			if got, err := readAllAt(ctx, blob, 0); err != nil || !bytes.Equal(got, c.Blob) {
				t.Fatalf("read %d bytes, %v; want the blob from the next candidate", len(got), err)
			}
			if got := up.gets(dgst); got != 2 {
				t.Errorf("upstream saw %d GETs of the blob, want 2 (the failed one, then the next candidate's)", got)
			}
			if got := first.requests("GET", blobsPath); got != 1 {
				t.Errorf("the first candidate was asked %d times, want 1", got)
			}
			if got := second.requests("GET", blobsPath); got != 1 {
				t.Errorf("the next candidate was asked %d times, want 1", got)
			}
			if got := starts[first.name].Load(); got != 0 {
				t.Errorf("the failed download called OnStart %d times: its size was published", got)
			}
			if files := first.spoolFiles(t); len(files) != 0 {
				t.Errorf("the failed download left %v", files)
			}
		})
	}
}

// A Prefix that fails (the swarm's error) costs the download nothing but
// what it did not write: failing at once, the upstream sends the whole
// blob; failing after some bytes, the upstream sends the rest from there.
func TestFetchFailingPrefixFallsBackToTheUpstream(t *testing.T) {
	data := bytes.Repeat([]byte("prefix fails"), 1<<20)
	dgst := digest.FromBytes(data)
	size := int64(len(data))
	for _, tc := range []struct {
		name      string
		written   int64
		wantFroms []int64
		wantOpens int
		wantSent  int64
	}{
		{"before any byte: the whole blob from the upstream", 0, nil, 1, size},
		{"after some bytes: the rest from the upstream", 2 << 20, []int64{2 << 20}, 0, size - 2<<20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := &rangeUpstream{data: data, dgst: dgst}
			pre := &fakePrefix{data: data, n: tc.written, err: errors.New("swarm: the members holding the chunks went away")}
			n := newNode(t, "a", true, up, &cluster{}, func(c *FetcherConfig) { c.Prefix = pre })
			b, err := n.fetcher.Fetch(ctx, oci.Ref{Registry: "r.test", Repository: "x"}, dgst)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%d bytes, %v", len(got), err)
			}
			froms, opens, sent := up.asked()
			if fmt.Sprint(froms) != fmt.Sprint(tc.wantFroms) || opens != tc.wantOpens || sent != tc.wantSent {
				t.Errorf("upstream asked from %v, %d whole GETs, %d bytes sent; want from %v, %d whole, %d bytes",
					froms, opens, sent, tc.wantFroms, tc.wantOpens, tc.wantSent)
			}
		})
	}
}
