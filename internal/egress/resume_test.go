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
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
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
// corrupt ones if asked, or nothing at all until its context ends.
type fakePrefix struct {
	data    []byte
	n       int64
	corrupt bool
	stall   bool

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
	if p.stall {
		<-ctx.Done()
		return 0, context.Cause(ctx)
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
	return n, nil
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

// A prefix that never comes (the followers vanished) holds the download
// up for PrefixStall only, then the upstream sends the whole blob. Its
// first byte is waited for a quarter of the lookup budget at most, however
// long PrefixStall is: followers wait for the download's first byte within
// their lookup budget.
func TestFetchPrefixStallFallsBackToTheWholeBlob(t *testing.T) {
	for _, tc := range []struct {
		name                string
		prefixStall, lookup time.Duration
	}{
		{"prefix stall", 200 * time.Millisecond, 0},
		{"lookup budget", 10 * time.Minute, 400 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			data := bytes.Repeat([]byte("stall"), 1<<20)
			dgst := digest.FromBytes(data)
			up := &rangeUpstream{data: data, dgst: dgst}
			pre := &fakePrefix{data: data, stall: true}
			n := newNode(t, "a", true, up, &cluster{}, func(c *FetcherConfig) {
				c.Prefix, c.PrefixStall, c.LookupTimeout = pre, tc.prefixStall, tc.lookup
			})
			b, err := n.fetcher.Fetch(ctx, oci.Ref{Registry: "r.test", Repository: "x"}, dgst)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%d bytes, %v: the prefix held the download", len(got), err)
			}
			if froms, opens, sent := up.asked(); len(froms) != 0 || opens != 1 || sent != int64(len(data)) {
				t.Errorf("upstream asked from %v, %d whole GETs, %d bytes; want one whole GET", froms, opens, sent)
			}
			if files := n.spoolFiles(t); len(files) != 1 || strings.HasSuffix(files[0], ".partial") {
				t.Errorf("spool files %v, want the verified blob", files)
			}
		})
	}
}
