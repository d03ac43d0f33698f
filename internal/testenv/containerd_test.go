package testenv

import (
	"crypto/sha256"
	"fmt"
	"os/exec"
	"strings"
	"testing"
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
	data := []byte("testenv restart survives this blob")
	dgst := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	ingest := exec.Command("ctr", "-a", c.Address, "content", "ingest", "--expected-digest", dgst, "--expected-size", fmt.Sprint(len(data)), "testenv-ref")
	ingest.Stdin = strings.NewReader(string(data))
	if b, err := ingest.CombinedOutput(); err != nil {
		t.Fatalf("ctr content ingest: %v: %s", err, b)
	}
	// Unreferenced content is garbage: without a gc.root label the
	// collector may remove it at any time, restart or not.
	if out, err := c.Ctr(t, "content", "label", dgst, "containerd.io/gc.root=testenv"); err != nil {
		t.Fatalf("ctr content label: %v: %s", err, out)
	}

	c.Stop(t)
	if c.Running() {
		t.Fatal("Running after Stop")
	}
	if _, err := c.Ctr(t, "version"); err == nil {
		t.Fatal("ctr version answered after Stop")
	}
	c.Start(t)

	got, err := c.Ctr(t, "content", "get", dgst)
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
