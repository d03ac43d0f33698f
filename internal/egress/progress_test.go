package egress

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// fakeProgress records what the fetcher tells a Progress, and checks at
// each call what must hold then: the bytes advanced over are in the file.
type fakeProgress struct {
	t    testing.TB
	dgst digest.Digest
	size int64
	path string
	file *os.File // opened at OnStart, as the swarm's Grow would read it
	blob []byte   // what the upstream holds; nil when it lies
	done *completion

	mu     sync.Mutex
	events []string // "advance", "complete", "fail"
	last   int64    // the last Advance
	err    error    // Fail's
	bad    []string // broken rules, reported by check
	ended  chan struct{}
}

// progressRecorder is an OnStart that keeps every Progress it returned.
type progressRecorder struct {
	t    testing.TB
	blob []byte
	done *completion

	mu   sync.Mutex
	list []*fakeProgress
}

func (r *progressRecorder) onStart(d digest.Digest, size int64, path string) Progress {
	f, err := os.Open(path)
	if err != nil {
		r.t.Errorf("OnStart: open %s: %v", path, err)
	}
	p := &fakeProgress{t: r.t, dgst: d, size: size, path: path, file: f, blob: r.blob, done: r.done,
		ended: make(chan struct{})}
	r.t.Cleanup(func() { _ = f.Close() })
	r.mu.Lock()
	r.list = append(r.list, p)
	r.mu.Unlock()
	return p
}

func (r *progressRecorder) all() []*fakeProgress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*fakeProgress(nil), r.list...)
}

func (p *fakeProgress) breaks(format string, args ...any) {
	p.bad = append(p.bad, fmt.Sprintf(format, args...))
}

func (p *fakeProgress) endedLocked() bool {
	select {
	case <-p.ended:
		return true
	default:
		return false
	}
}

func (p *fakeProgress) Advance(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, "advance")
	switch {
	case p.endedLocked():
		p.breaks("Advance(%d) after the end", n)
	case n <= p.last || n > p.size:
		p.breaks("Advance(%d) after Advance(%d), size %d", n, p.last, p.size)
	case p.file != nil && p.blob != nil:
		// The bytes Advance names are readable through the descriptor
		// opened at OnStart.
		got := make([]byte, n-p.last)
		if _, err := p.file.ReadAt(got, p.last); err != nil || !bytes.Equal(got, p.blob[p.last:n]) {
			p.breaks("Advance(%d): bytes [%d,%d) not in the file: %v", n, p.last, n, err)
		}
	}
	p.last = max(p.last, n)
}

func (p *fakeProgress) Complete() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, "complete")
	if p.endedLocked() {
		p.breaks("Complete after the end")
		return
	}
	if p.last != p.size {
		p.breaks("Complete at %d of %d bytes", p.last, p.size)
	}
	if n := len(p.done.list()); n != 0 {
		p.breaks("Complete after OnComplete (%d calls)", n)
	}
	close(p.ended)
}

func (p *fakeProgress) Fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, "fail")
	if p.endedLocked() {
		p.breaks("Fail(%v) after the end", err)
		return
	}
	if err == nil {
		p.breaks("Fail(nil)")
	}
	p.err = err
	close(p.ended)
}

// wait waits (bounded) for Complete or Fail.
func (p *fakeProgress) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.ended:
	case <-time.After(time.Minute):
		t.Fatal("the download neither completed nor failed its Progress within a minute")
	}
}

// result is the end of the calls: "complete" or "fail", and Fail's error.
func (p *fakeProgress) result() (last string, err error, advances int, bad []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.events {
		if e == "advance" {
			advances++
		}
	}
	if len(p.events) > 0 {
		last = p.events[len(p.events)-1]
	}
	return last, p.err, advances, append([]string(nil), p.bad...)
}

// A verified download: OnStart once with the size and the growing file,
// Advance as bytes land (each readable then), Complete once everything
// matched, before OnComplete; nothing after.
func TestProgressFollowsADownload(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(5<<20+123, 41)
	rec := &progressRecorder{t: t, blob: c.Blob}
	n := newNode(t, "a", true, up.source(), &cluster{}, func(fc *FetcherConfig) { fc.OnStart = rec.onStart })
	rec.done = n.done

	b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The size a caller learns comes after OnStart.
	if got := rec.all(); len(got) != 1 || got[0].size != int64(len(c.Blob)) || got[0].dgst != c.BlobDigest() {
		t.Fatalf("when Fetch returned, OnStart calls: %+v, want one with size %d", got, len(c.Blob))
	}
	if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, c.Blob) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	p := rec.all()[0]
	p.wait(t)
	last, _, advances, bad := p.result()
	for _, b := range bad {
		t.Error(b)
	}
	if last != "complete" || advances < 2 {
		t.Errorf("calls end with %q after %d Advance, want several Advance then complete", last, advances)
	}
	waitFor(t, func() bool { return len(n.done.list()) == 1 }, "OnComplete")
	// The kept copy and a second caller start nothing new.
	b2, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	b2.Close()
	if got := len(rec.all()); got != 1 {
		t.Errorf("OnStart called %d times, want 1", got)
	}
	if _, _, _, bad := p.result(); len(bad) != 0 {
		t.Errorf("calls after Complete: %v", bad)
	}
}

// Every failure after the size is known fails the Progress once, with
// the cause, and calls nothing after; a failure before (no size) never
// calls OnStart.
func TestProgressFailsWithTheDownload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fault   upstreamFault
		stall   bool
		close   bool
		wantErr string
	}{
		{name: "digest mismatch", fault: faultCorrupt, wantErr: "content hashes to"},
		{name: "upstream cut", fault: faultCut, wantErr: "bytes"},
		{name: "stall", stall: true, wantErr: oci.ErrStalled.Error()},
		{name: "fetcher closed", close: true, wantErr: "canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := newTestUpstream(t)
			c := up.content(3<<20+5, 42)
			at := int64(len(c.Blob)) / 2
			if tc.fault != faultNone {
				up.setFault(tc.fault, at)
			}
			// Every case holds the body at the fault until Fetch returned:
			// a download that failed before the caller opened it answers
			// Fetch itself with the error, and this test is about a
			// failure that reaches the Progress and a reader.
			release := up.hold(at)
			defer release()
			rec := &progressRecorder{t: t}
			n := newNode(t, "a", true, up.source(), &cluster{}, func(fc *FetcherConfig) {
				fc.OnStart = rec.onStart
				if tc.stall {
					fc.StallTimeout = 300 * time.Millisecond
				}
			})
			rec.done = n.done
			b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if tc.fault != faultNone {
				release()
			}
			if tc.close {
				waitFor(t, func() bool { return len(rec.all()) == 1 && rec.all()[0].advanced() >= at }, "the bytes before the hold")
				if err := n.fetcher.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := readAllAt(ctx, b, 0); err == nil {
				t.Fatal("a reader completed the failed blob")
			}
			ps := rec.all()
			if len(ps) != 1 {
				t.Fatalf("OnStart called %d times, want 1", len(ps))
			}
			p := ps[0]
			p.wait(t)
			last, perr, _, bad := p.result()
			for _, b := range bad {
				t.Error(b)
			}
			if last != "fail" || perr == nil || !bytes.Contains([]byte(perr.Error()), []byte(tc.wantErr)) {
				t.Errorf("calls end with %q (%v), want fail with %q", last, perr, tc.wantErr)
			}
			if len(n.done.list()) != 0 {
				t.Error("OnComplete called for a failed download")
			}
			// Whatever the failure, nothing reaches the Progress later.
			time.Sleep(50 * time.Millisecond)
			if _, _, _, bad := p.result(); len(bad) != 0 {
				t.Errorf("calls after Fail: %v", bad)
			}
		})
	}

	t.Run("upstream lacks the blob", func(t *testing.T) {
		ctx := testCtx(t)
		up := newTestUpstream(t)
		c := up.content(1<<10, 43)
		rec := &progressRecorder{t: t}
		n := newNode(t, "a", true, up.source(), &cluster{}, func(fc *FetcherConfig) { fc.OnStart = rec.onStart })
		if _, err := n.fetcher.Fetch(ctx, c.Ref, digest.FromString("absent")); err == nil {
			t.Fatal("fetched a blob the upstream lacks")
		}
		if got := len(rec.all()); got != 0 {
			t.Errorf("OnStart called %d times for a blob with no size", got)
		}
	})
}

// An OnStart returning nil (the swarm would not grow the blob) leaves the
// download as it was.
func TestProgressNil(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1<<20+3, 44)
	calls := 0
	n := newNode(t, "a", true, up.source(), &cluster{}, func(fc *FetcherConfig) {
		fc.OnStart = func(digest.Digest, int64, string) Progress { calls++; return nil }
	})
	b, err := n.fetcher.Fetch(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, c.Blob) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	waitFor(t, func() bool { return len(n.done.list()) == 1 }, "OnComplete")
	if calls != 1 {
		t.Errorf("OnStart called %d times, want 1", calls)
	}
}

func (p *fakeProgress) advanced() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// waitFor polls cond for up to 30 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
