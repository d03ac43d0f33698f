package testenv

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestContainerdStartsAnswersAndRestartsWithItsContent(t *testing.T) {
	c := StartContainerd(t, "")

	out, err := c.Ctr(t, "version")
	if err != nil {
		t.Fatalf("ctr version: %v", err)
	}
	if !strings.Contains(out, "Server:") {
		t.Fatalf("ctr version shows no server section:\n%s", out)
	}

	// Content written before a restart must be there after it: same root.
	// It is committed with its gc.root label in the same transaction:
	// content without a lease or a root is garbage the moment it is
	// committed, and containerd collects 100 ms after it starts (the gc
	// scheduler's startup_delay) — a `ctr content ingest` then `ctr content
	// label` that straddled that collection found nothing to label.
	data := []byte("testenv restart survives this blob")
	dgst := digest.FromBytes(data)
	writeRootedBlob(t, c.Address, data)

	c.Stop(t)
	if c.Running() {
		t.Fatal("Running after Stop")
	}
	if _, err := c.Ctr(t, "version"); err == nil {
		t.Fatal("ctr version answered after Stop")
	}
	c.Start(t)

	got, err := c.Ctr(t, "content", "get", dgst.String())
	if err != nil {
		t.Fatalf("ctr content get after restart: %v", err)
	}
	if got != string(data) {
		t.Fatalf("content after restart = %q, want %q", got, data)
	}
}

func TestContainerdDaemonsRunSideBySide(t *testing.T) {
	a := StartContainerd(t, "")
	b := StartContainerd(t, "")
	if a.Address == b.Address || a.Root == b.Root {
		t.Fatalf("daemons share paths: %+v %+v", a, b)
	}
	for _, c := range []*Containerd{a, b} {
		if _, err := c.Ctr(t, "namespaces", "ls"); err != nil {
			t.Fatalf("%s: %v", c.Address, err)
		}
	}
}

func TestContainerdSocketStaysShortUnderLongDirectories(t *testing.T) {
	dir := t.TempDir() + "/" + strings.Repeat("d", 90)
	c := StartContainerd(t, dir)
	if len(c.Address) > maxSocketPath {
		t.Fatalf("socket path is %d bytes: %s", len(c.Address), c.Address)
	}
	if _, err := c.Ctr(t, "version"); err != nil {
		t.Fatal(err)
	}
}

// writeRootedBlob commits data to the default namespace (ctr's) with a
// gc.root label set at commit, so no garbage collection can take it.
func writeRootedBlob(t *testing.T, address string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	defer cancel()
	cl, err := client.New(address)
	if err != nil {
		t.Fatalf("containerd client: %v", err)
	}
	defer cl.Close()
	ctx = namespaces.WithNamespace(ctx, "default")
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	err = content.WriteBlob(ctx, cl.ContentStore(), "testenv-ref", bytes.NewReader(data), desc,
		content.WithLabels(map[string]string{"containerd.io/gc.root": "testenv"}))
	if err != nil {
		t.Fatalf("write content: %v", err)
	}
}
