package egress

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// A HEAD's size comes from the owner (its upstream's answer to a HEAD, or
// a download's size) without any download starting: no upstream GET, no
// spool, on the owner or anywhere.
func TestStatBlobStartsNoDownload(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(3<<20, 41)
	members := &cluster{}
	a := newNode(t, "a", true, up.source(), members, nil)
	b := newNode(t, "b", false, &forbiddenUpstream{}, members, nil)
	members.set(a.member(true), b.member(false))

	for _, n := range []*node{a, b} {
		size, err := n.source.StatBlob(ctx, c.Ref, c.BlobDigest())
		if err != nil || size != int64(len(c.Blob)) {
			t.Fatalf("%s: size %d, %v; want %d", n.name, size, err, len(c.Blob))
		}
	}
	if got := up.gets(c.BlobDigest()); got != 0 {
		t.Fatalf("the upstream saw %d blob GETs for HEADs, want 0", got)
	}
	if files := a.spoolFiles(t); len(files) != 0 {
		t.Fatalf("the owner spooled %v for HEADs", files)
	}
	unknown := digest.FromString("not in the registry")
	if _, err := b.source.StatBlob(ctx, c.Ref, unknown); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("size of an unknown blob: %v, want not found", err)
	}
	// A GET then fetches it once, as before.
	blob, err := b.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	if _, err := readAllAt(ctx, blob, 0); err != nil {
		t.Fatal(err)
	}
	if got := up.gets(c.BlobDigest()); got != 1 {
		t.Fatalf("the upstream saw %d blob GETs, want 1", got)
	}
}
