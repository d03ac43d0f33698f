package egress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// Many callers, one upstream GET: readers at different offsets get their
// bytes while the upstream is still held mid-blob, then the rest.
func TestFetchOneDownloadStreamsToEveryCaller(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(3<<20+17, 1)
	size := int64(len(c.Blob))
	gateAt := size / 2
	release := up.hold(gateAt)
	defer release()
	n := newNode(t, "a", true, up.source(), &cluster{}, nil)

	offsets := []int64{0, 1, 4096, gateAt - 1, gateAt, gateAt + 1, size - 1, size}
	type result struct {
		offset int64
		got    []byte
		err    error
	}
	early := make(chan int64, len(offsets)) // offsets whose bytes before the gate arrived
	results := make(chan result, len(offsets))
	var wg sync.WaitGroup
	for _, off := range offsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
			if err != nil {
				results <- result{off, nil, err}
				return
			}
			defer b.Close()
			if b.Size() != size {
				results <- result{off, nil, errors.New("wrong size")}
				return
			}
			rc, err := b.Open(ctx, off)
			if err != nil {
				results <- result{off, nil, err}
				return
			}
			defer rc.Close()
			var got []byte
			if off < gateAt {
				got = make([]byte, gateAt-off)
				if _, err := io.ReadFull(rc, got); err != nil {
					results <- result{off, nil, err}
					return
				}
				early <- off
			}
			rest, err := io.ReadAll(rc)
			results <- result{off, append(got, rest...), err}
		}()
	}
	// Every reader starting before the gate has its bytes up to the gate
	// while the upstream still holds the rest back.
	for range 4 {
		select {
		case <-early:
		case r := <-results:
			t.Fatalf("offset %d finished before the upstream sent the rest: %v", r.offset, r.err)
		case <-ctx.Done():
			t.Fatal("readers did not get the bytes already downloaded")
		}
	}
	if len(n.done.list()) != 0 {
		t.Fatal("OnComplete called before the download finished")
	}
	release()
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil || !bytes.Equal(r.got, c.Blob[r.offset:]) {
			t.Errorf("offset %d: %d bytes, %v; want blob[%d:]", r.offset, len(r.got), r.err, r.offset)
		}
	}
	if got := up.gets(c.BlobDigest()); got != 1 {
		t.Errorf("upstream saw %d blob GETs, want 1", got)
	}

	// Later callers get the kept, verified copy: random access, no GET.
	b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.(oci.SeekableBlob); !ok {
		t.Errorf("kept blob is %T, want a SeekableBlob", b)
	}
	if got, err := readAllAt(ctx, b, 5); err != nil || !bytes.Equal(got, c.Blob[5:]) {
		t.Errorf("kept blob: %d bytes, %v", len(got), err)
	}
	b.Close()
	if got := up.gets(c.BlobDigest()); got != 1 {
		t.Errorf("upstream saw %d blob GETs after the download, want 1", got)
	}

	calls := n.done.list()
	if len(calls) != 1 {
		t.Fatalf("OnComplete called %d times, want 1", len(calls))
	}
	done := calls[0]
	if done.dgst != c.BlobDigest() || done.size != size || !bytes.Equal(done.data, c.Blob) {
		t.Errorf("OnComplete(%s, %s, %d) with %d bytes, want the verified blob", done.dgst, done.path, done.size, len(done.data))
	}
	if err := n.fetcher.Release(c.BlobDigest()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(done.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spool after Release: %v, want it gone", err)
	}
}

// An upstream that lies or breaks mid-blob fails every reader, never
// completes a read, leaves no spool and announces nothing; the next
// caller starts afresh.
func TestFetchUpstreamFailureFailsEveryReader(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault upstreamFault
	}{
		{"corrupt byte", faultCorrupt},
		{"cut connection", faultCut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := newTestUpstream(t)
			c := up.content(2<<20+5, 2)
			size := int64(len(c.Blob))
			up.setFault(tc.fault, size/2)
			release := up.hold(size / 2)
			n := newNode(t, "a", true, up.source(), &cluster{}, nil)

			var wg sync.WaitGroup
			errs := make(chan error, 4)
			started := make(chan struct{}, 4)
			for _, off := range []int64{0, 10, size / 2, size - 1} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
					started <- struct{}{}
					if err != nil {
						errs <- err
						return
					}
					defer b.Close()
					got, err := readAllAt(ctx, b, off)
					if err == nil {
						t.Errorf("offset %d: read %d bytes without error", off, len(got))
					}
					if int64(len(got)) >= size-off {
						t.Errorf("offset %d: got %d bytes, the whole rest of a bad blob", off, len(got))
					}
					errs <- err
				}()
			}
			for range 4 {
				<-started
			}
			release()
			wg.Wait()
			close(errs)
			for err := range errs {
				if err == nil {
					t.Error("a reader succeeded")
				}
			}
			if files := n.spoolFiles(t); len(files) != 0 {
				t.Errorf("spool dir holds %v after a failed download", files)
			}
			if calls := n.done.list(); len(calls) != 0 {
				t.Errorf("OnComplete called for a failed download: %v", calls)
			}

			up.setFault(faultNone, 0)
			b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, c.Blob) {
				t.Errorf("retry: %d bytes, %v", len(got), err)
			}
			if got := up.gets(c.BlobDigest()); got != 2 {
				t.Errorf("upstream saw %d GETs, want 2 (the failed one and the retry)", got)
			}
		})
	}
}

func TestFetchUnknownBlobIsNotFound(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1000, 3)
	n := newNode(t, "a", true, up.source(), &cluster{}, nil)
	missing := oci.Ref{Registry: c.Ref.Registry, Repository: c.Ref.Repository}
	_, err := n.fetcher.Fetch(ctx, missing, digest.FromString("not pushed"))
	if !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("unknown blob: %v, want ErrNotFound", err)
	}
	if _, err := n.fetcher.Fetch(ctx, c.Ref, "sha256:nothex"); err == nil {
		t.Error("malformed digest accepted")
	}
	if files := n.spoolFiles(t); len(files) != 0 {
		t.Errorf("spool dir holds %v", files)
	}
}

func TestFetcherClearsOldSpoolsAndRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	old := dir + "/sha256-" + string(bytes.Repeat([]byte("cd"), 32)) + ".partial"
	keep := dir + "/not-ours"
	for _, p := range []string{old, keep} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f, err := NewFetcher(FetcherConfig{Upstream: &forbiddenUpstream{}, SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old spool still there: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a file that is not a spool was touched: %v", err)
	}
	if _, err := NewFetcher(FetcherConfig{SpoolDir: dir}); err == nil {
		t.Error("no Upstream accepted")
	}
	if _, err := NewFetcher(FetcherConfig{Upstream: &forbiddenUpstream{}}); err == nil {
		t.Error("no SpoolDir accepted")
	}
}

// An upstream that stops sending ends the download after the stall
// timeout: readers fail instead of hanging, and the spool is deleted.
func TestFetchStalledUpstreamFails(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1<<20, 18)
	release := up.hold(1000)
	defer release()
	n := newNode(t, "a", true, up.source(), &cluster{}, func(cfg *FetcherConfig) {
		cfg.StallTimeout = 200 * time.Millisecond
	})
	b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := readAllAt(ctx, b, 0)
	if err == nil || len(got) >= len(c.Blob) {
		t.Fatalf("read %d bytes, %v; want a failure", len(got), err)
	}
	if ctx.Err() != nil {
		t.Fatal("the read ended only with the test's deadline")
	}
	if files := n.spoolFiles(t); len(files) != 0 {
		t.Errorf("spool dir holds %v", files)
	}
}

// heldContent is a Local source: the blobs this node's containerd holds.
type heldContent struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
}

func (h *heldContent) hold(b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.blobs == nil {
		h.blobs = map[digest.Digest][]byte{}
	}
	h.blobs[digest.FromBytes(b)] = b
}

func (h *heldContent) Name() string { return "containerd" }
func (h *heldContent) Resolve(context.Context, oci.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, oci.ErrNotFound
}
func (h *heldContent) Manifest(context.Context, oci.Ref, digest.Digest) (*oci.Manifest, error) {
	return nil, oci.ErrNotFound
}
func (h *heldContent) Blob(_ context.Context, _ oci.Ref, d digest.Digest) (oci.Blob, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, ok := h.blobs[d]
	if !ok {
		return nil, oci.ErrNotFound
	}
	return heldBlob{bytes.NewReader(b)}, nil
}

type heldBlob struct{ r *bytes.Reader }

func (b heldBlob) Size() int64               { return b.r.Size() }
func (b heldBlob) ReadSeeker() io.ReadSeeker { return b.r }
func (b heldBlob) Close() error              { return nil }
func (b heldBlob) Open(_ context.Context, off int64) (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(b.r, off, b.r.Size()-off)), nil
}

// Once the owner's containerd stores a blob its spool is released; a
// member asking for it afterwards (it did not yet see the owner seed it)
// is served the owner's own copy, not a second upstream download (the CRI
// cold-pull e2e test saw a config blob fetched twice this way).
func TestFetchAfterReleaseServesTheLocalCopy(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(560, 9)
	held := &heldContent{}
	tn := &twoNodes{up: up, bUpstream: &forbiddenUpstream{}, members: &cluster{}}
	tn.a = newNode(t, "a", true, up.source(), tn.members, func(cfg *FetcherConfig) { cfg.Local = held })
	tn.b = newNode(t, "b", false, tn.bUpstream, tn.members, nil)
	tn.members.set(tn.a.member(true), tn.b.member(false))

	get := func(who *node) []byte {
		t.Helper()
		b, err := who.source.Blob(ctx, c.Ref, c.BlobDigest())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		got, err := readAllAt(ctx, b, 0)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := get(tn.a); !bytes.Equal(got, c.Blob) {
		t.Fatalf("first fetch: %d bytes, want the blob", len(got))
	}
	held.hold(c.Blob) // containerd committed it; the seeding loop releases the spool
	if err := tn.a.fetcher.Release(c.BlobDigest()); err != nil {
		t.Fatal(err)
	}
	if got := get(tn.b); !bytes.Equal(got, c.Blob) {
		t.Errorf("member's fetch after the release: %d bytes, want the blob", len(got))
	}
	if got := get(tn.a); !bytes.Equal(got, c.Blob) {
		t.Errorf("owner's fetch after the release: %d bytes, want the blob", len(got))
	}
	if n := up.gets(c.BlobDigest()); n != 1 {
		t.Errorf("upstream saw %d blob GETs, want 1", n)
	}
	if files := tn.a.spoolFiles(t); len(files) != 0 {
		t.Errorf("owner spooled %v after the release, want nothing", files)
	}
	if n := tn.bUpstream.called(); n != 0 {
		t.Errorf("the member called its upstream %d times", n)
	}

	// Without the local copy (containerd dropped it), the owner fetches
	// again: Local is a shortcut, never the only answer.
	held.mu.Lock()
	held.blobs = nil
	held.mu.Unlock()
	if got := get(tn.b); !bytes.Equal(got, c.Blob) {
		t.Errorf("fetch with no local copy: %d bytes, want the blob", len(got))
	}
	if n := up.gets(c.BlobDigest()); n != 2 {
		t.Errorf("upstream saw %d blob GETs, want 2 once the local copy is gone", n)
	}
}
