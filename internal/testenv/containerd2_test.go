package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Two containerd 2.x daemons with CRI run side by side, each pulls with
// crictl through the hosts.toml in its own config_path directory, and the
// image lands in k8s.io as kubelet's would.
func TestContainerd2PullsThroughCRIFromItsHostsDir(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containerd 2.x and docker-registry")
	}
	reg := StartRegistry(t, LoopbackIP(80)+":5500")
	img := PushImage(t, reg, "testenv/cri", "v1", 64<<10)
	a, b := StartContainerd2(t, "", nil), StartContainerd2(t, "", nil)
	if a.Address == b.Address || a.Root == b.Root || a.HostsDir == b.HostsDir {
		t.Fatalf("daemons share paths: %+v %+v", a, b)
	}
	for _, c := range []*Containerd{a, b} {
		out, err := c.Ctr(t, "version")
		if err != nil {
			t.Fatal(err)
		}
		if server := out[strings.Index(out, "Server:"):]; !strings.Contains(server, "v2.") {
			t.Fatalf("ctr version: the server is not containerd 2.x:\n%s", out)
		}
		// The hosts.toml dregistry's configure would write, pointing at
		// the registry itself: CRI finds it only through config_path.
		dir := filepath.Join(c.HostsDir, reg.Addr)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		hosts := "server = \"" + reg.URL() + "\"\n[host.\"" + reg.URL() + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
		if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := c.Crictl(t, "pull", img.Ref); err != nil {
			t.Fatalf("crictl pull: %v\n%s\ncontainerd log:\n%s", err, out, c.LogTail())
		}
		got, err := c.InspectImage(t, img.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != img.Config.Digest.String() {
			t.Errorf("crictl inspecti: id %s, want the config %s", got.ID, img.Config.Digest)
		}
		if want := reg.Addr + "/" + img.Repo + "@" + img.Manifest.Digest.String(); len(got.RepoDigests) != 1 || got.RepoDigests[0] != want {
			t.Errorf("crictl inspecti: repo digests %v, want [%s]", got.RepoDigests, want)
		}
		if c.Namespace() != "k8s.io" {
			t.Fatalf("namespace %q", c.Namespace())
		}
		out, err = c.Ctr(t, "-n", "k8s.io", "content", "ls", "-q")
		if err != nil {
			t.Fatal(err)
		}
		for _, blob := range append(img.Blobs(), img.Manifest) {
			if !strings.Contains(out, blob.Digest.String()) {
				t.Errorf("k8s.io content lacks %s:\n%s", blob.Digest, out)
			}
		}
	}
	reqs := reg.Requests(t)
	for _, l := range img.Layers {
		if n := BlobSends(reqs, l.Digest, l.Size); n != 2 {
			t.Errorf("registry sent layer %s %d times, want once per daemon", l.Digest, n)
		}
	}
	if len(FromContainerd(reqs)) == 0 {
		t.Errorf("no request carries containerd's User-Agent: %+v", reqs)
	}
}
