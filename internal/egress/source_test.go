package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/sourcetest"
)

// twoNodes is an egress node a (with the upstream) and a plain node b
// whose own upstream must never be called.
type twoNodes struct {
	up        *testUpstream
	a, b      *node
	bUpstream *forbiddenUpstream
	members   *cluster
}

func newTwoNodes(t *testing.T, up *testUpstream) *twoNodes {
	tn := &twoNodes{up: up, bUpstream: &forbiddenUpstream{}, members: &cluster{}}
	tn.a = newNode(t, "a", true, up.source(), tn.members, nil)
	tn.b = newNode(t, "b", false, tn.bUpstream, tn.members, nil)
	tn.members.set(tn.a.member(true), tn.b.member(false))
	t.Cleanup(func() {
		if n := tn.bUpstream.called(); n != 0 {
			t.Errorf("the non-egress node called its upstream %d times", n)
		}
	})
	return tn
}

func TestSourceConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		pick func(*twoNodes) *node
	}{
		{"through the owner's peer endpoint", func(tn *twoNodes) *node { return tn.b }},
		{"on the owner", func(tn *twoNodes) *node { return tn.a }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newTestUpstream(t)
			sourcetest.Run(t, sourcetest.Harness{
				New: func(t *testing.T, c sourcetest.Content) oci.Source {
					up.push(c)
					return tc.pick(newTwoNodes(t, up)).source
				},
				ResolvesTags:    true,
				ServesManifests: true,
				Registry:        up.host(),
			})
		})
	}
}

// Several nodes asking the owner at once cause one upstream GET, and each
// streams the blob while the owner downloads it.
func TestSourceManyNodesOneUpstreamFetch(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(2<<20+3, 4)
	release := up.hold(int64(len(c.Blob)) / 3)
	defer release()
	members := &cluster{}
	owner := newNode(t, "owner", true, up.source(), members, nil)
	list := []Member{owner.member(true)}
	var nodes []*node
	for i := range 4 {
		n := newNode(t, fmt.Sprintf("n%d", i), false, &forbiddenUpstream{}, members, nil)
		nodes = append(nodes, n)
		list = append(list, n.member(false))
	}
	members.set(list...)

	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() {
			b, err := n.source.Blob(ctx, c.Ref, c.BlobDigest())
			if err != nil {
				errs <- err
				return
			}
			defer b.Close()
			got, err := readAllAt(ctx, b, 0)
			if err == nil && !bytes.Equal(got, c.Blob) {
				err = fmt.Errorf("%s: wrong bytes", n.name)
			}
			errs <- err
		}()
	}
	release()
	for range nodes {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := up.gets(c.BlobDigest()); got != 1 {
		t.Errorf("upstream saw %d blob GETs, want 1", got)
	}
	for _, n := range nodes {
		if n.source.cfg.Fetcher.cfg.Upstream.(*forbiddenUpstream).called() != 0 {
			t.Errorf("%s called its upstream", n.name)
		}
	}
}

// deadAddr is a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// nameRankedFirst returns a member name that ranks before every name in
// others for key.
func nameRankedFirst(t *testing.T, key string, others ...Member) string {
	for i := range 1000 {
		name := fmt.Sprintf("first-%d", i)
		all := append([]Member{{Name: name, Egress: true}}, others...)
		if candidates(all, Member{Name: "self"}, key)[0].Name == name {
			return name
		}
	}
	t.Fatal("no name ranks first")
	return ""
}

// An owner that is gone, or that refuses because it may not fetch, is
// skipped: the next candidate answers.
func TestSourceFailsOverToNextCandidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first func(t *testing.T, members *cluster) string // the HTTP address of the failing first owner
	}{
		{"owner unreachable", func(t *testing.T, _ *cluster) string { return deadAddr(t) }},
		{"owner no longer an egress node", func(t *testing.T, members *cluster) string {
			return newNode(t, "stale", false, &forbiddenUpstream{}, members, nil).member(false).HTTPAddr
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			up := newTestUpstream(t)
			c := up.content(300<<10, 5)
			tn := newTwoNodes(t, up)
			others := []Member{tn.a.member(true), tn.b.member(false)}
			first := Member{Name: nameRankedFirst(t, blobKey(c.BlobDigest()), others...), HTTPAddr: tc.first(t, tn.members), Egress: true}
			tn.members.set(append(others, first)...)
			if got := tn.b.source.owners(blobKey(c.BlobDigest()))[0].Name; got != first.Name {
				t.Fatalf("owner is %s, want the failing %s", got, first.Name)
			}
			b, err := tn.b.source.Blob(ctx, c.Ref, c.BlobDigest())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, c.Blob) {
				t.Errorf("blob: %d bytes, %v", len(got), err)
			}
			if got := up.gets(c.BlobDigest()); got != 1 {
				t.Errorf("upstream saw %d GETs, want 1", got)
			}
		})
	}
}

// With egress nodes in the cluster but none answering, a plain node fails
// the lookup (the handler then answers 404) and never calls an upstream.
func TestSourceNeverFetchesWhenEgressNodesExist(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1000, 6)
	tn := newTwoNodes(t, up)
	tn.members.set(Member{Name: "gone", HTTPAddr: deadAddr(t), Egress: true}, tn.b.member(false))
	if _, err := tn.b.source.Blob(ctx, c.Ref, c.BlobDigest()); err == nil {
		t.Error("blob served with no egress node reachable")
	}
	if _, err := tn.b.source.Manifest(ctx, c.Ref, c.Manifest.Digest); err == nil {
		t.Error("manifest served with no egress node reachable")
	}
	if _, err := tn.b.source.Resolve(ctx, c.Ref, c.Tag); err == nil {
		t.Error("tag resolved with no egress node reachable")
	}
	// bUpstream's count is checked by newTwoNodes' cleanup.
}

// With no egress node every member is a candidate, this one included.
func TestSourceWithoutEgressNodesFetchesItself(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(1000, 7)
	members := &cluster{}
	n := newNode(t, "solo", false, up.source(), members, nil)
	members.set(n.member(false))
	b, err := n.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, c.Blob) {
		t.Errorf("blob: %d bytes, %v", len(got), err)
	}
}

// The owner failing mid-stream fails the read (never an early EOF); an
// Open at the offset reached, as containerd's Range retry causes, gets the
// right rest.
func TestSourceMidStreamFailureThenRangeRetry(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(2<<20+11, 8)
	size := int64(len(c.Blob))
	release := up.hold(size / 2)
	defer release()
	tn := newTwoNodes(t, up)

	b, err := tn.b.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rc, err := b.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, size/4)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	tn.a.srv.CloseClientConnections() // the owner's reply is cut
	rest, err := io.ReadAll(rc)
	rc.Close()
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read after the owner's reply was cut: %d bytes, %v; want an error", len(rest), err)
	}
	got := int64(len(head) + len(rest))
	if got >= size {
		t.Fatalf("got %d of %d bytes from a cut reply", got, size)
	}
	release()
	rc, err = b.Open(ctx, got)
	if err != nil {
		t.Fatal(err)
	}
	tail, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(tail, c.Blob[got:]) {
		t.Errorf("retry from %d: %d bytes, %v", got, len(tail), err)
	}
	if n := up.gets(c.BlobDigest()); n != 1 {
		t.Errorf("upstream saw %d GETs, want 1", n)
	}
}

// An owner that sends wrong bytes fails the read that would end the blob.
func TestSourceRejectsWrongBytesFromOwner(t *testing.T) {
	ctx := testCtx(t)
	c := sourcetest.NewContent(oci.Ref{Registry: "127.0.0.1:1", Repository: "x/y"}, "v1", 100<<10, 9)
	liar := http.NewServeMux()
	liar.HandleFunc(blobsPath, func(w http.ResponseWriter, r *http.Request) {
		bad := bytes.Clone(c.Blob)
		bad[len(bad)/2] ^= 1
		w.Header().Set("Docker-Content-Digest", c.BlobDigest().String())
		w.Header().Set("Content-Length", fmt.Sprint(len(bad)))
		_, _ = w.Write(bad)
	})
	srv := newLoopbackServer(t, liar)
	members := &cluster{}
	n := newNode(t, "b", false, &forbiddenUpstream{}, members, nil)
	members.set(Member{Name: "liar", HTTPAddr: srv, Egress: true}, n.member(false))
	b, err := n.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, off := range []int64{0, 1000, int64(len(c.Blob)) - 1} {
		got, err := readAllAt(ctx, b, off)
		if err == nil || len(got) == len(c.Blob[off:]) {
			t.Errorf("offset %d: %d bytes, %v; want a failed, short read", off, len(got), err)
		}
	}
}

func newLoopbackServer(t *testing.T, h http.Handler) string {
	srv := &http.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return ln.Addr().String()
}
