package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Containerd2BinEnv names a directory holding containerd 2.x's containerd
// and ctr and cri-tools' crictl, instead of the module's BuildBinDir.
const Containerd2BinEnv = "DREGISTRY_CONTAINERD2_BIN"

// BuildBinDir is where `make deps` installs containerd 2.x, its ctr and
// crictl (Debian ships containerd 1.6 only), relative to the module root.
const BuildBinDir = ".build/bin"

// sandboxImage is the CRI pause image setting: a loopback name nobody
// serves, so nothing in a test daemon can reach outside the machine for it
// (CRI pulls it only to run a pod, which these tests never do).
const sandboxImage = "127.0.0.1:1/dregistry-testenv/pause:none"

// Runtime is which containerd a node runs and how a test pulls on it.
type Runtime int

const (
	// RuntimeCtr is Debian's containerd 1.6 without CRI; pulls are
	// `ctr images pull --hosts-dir` into the default namespace.
	RuntimeCtr Runtime = iota
	// RuntimeCRI is containerd 2.x built by `make deps`, with the CRI
	// plugin reading the node's hosts dir as its registry config_path;
	// pulls are `crictl pull` into the k8s.io namespace, as kubelet's.
	RuntimeCRI
)

func (r Runtime) String() string {
	switch r {
	case RuntimeCtr:
		return "containerd1.6-ctr"
	case RuntimeCRI:
		return "containerd2-crictl"
	}
	return fmt.Sprintf("runtime(%d)", int(r))
}

// Runtimes is every runtime, for tests that run the same case on each.
func Runtimes() []Runtime { return []Runtime{RuntimeCtr, RuntimeCRI} }

// Containerd2Binaries is where the built containerd 2.x, its ctr and crictl are.
type Containerd2Binaries struct {
	Containerd, Ctr, Crictl string
}

// RequireContainerd2 returns the containerd 2.x binaries `make deps` built,
// skipping (or failing when DREGISTRY_E2E=required) when they are missing.
func RequireContainerd2(t testing.TB) Containerd2Binaries {
	t.Helper()
	dir := os.Getenv(Containerd2BinEnv)
	if dir == "" {
		root, err := moduleRoot(RequireBinary(t, "go"))
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		dir = filepath.Join(root, BuildBinDir)
	}
	b := Containerd2Binaries{
		Containerd: filepath.Join(dir, "containerd"),
		Ctr:        filepath.Join(dir, "ctr"),
		Crictl:     filepath.Join(dir, "crictl"),
	}
	for _, p := range []string{b.Containerd, b.Ctr, b.Crictl} {
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			Unavailable(t, fmt.Sprintf("needs containerd 2.x, ctr and crictl in %s (run `make deps`): %s missing", dir, filepath.Base(p)))
		}
	}
	return b
}

// StartContainerd2 starts containerd 2.x (see RequireContainerd2) with the
// CRI plugin under dir (t.TempDir() when ""), in ns when not nil. Its CRI
// registry config_path is HostsDir, the single directory (dir/certs.d)
// where a node's `dregistry containerd configure` writes hosts.toml. It
// waits until the daemon answers and stops it in t.Cleanup.
func StartContainerd2(t testing.TB, dir string, ns *Netns) *Containerd {
	t.Helper()
	RequireRoot(t)
	bins := RequireContainerd2(t)
	c := newContainerd(t, dir, ns)
	c.binary, c.ctr, c.crictl, c.cri = bins.Containerd, bins.Ctr, bins.Crictl, true
	c.HostsDir = filepath.Join(c.Dir, "certs.d")
	c.registryConfigPath = c.HostsDir
	if err := os.MkdirAll(c.HostsDir, 0o755); err != nil {
		t.Fatalf("testenv: hosts dir: %v", err)
	}
	c.launch(t)
	return c
}

// SetRegistryConfigPath sets the CRI config_path of a stopped daemon (a
// list, say, as containerd 2.2 defaults to) for its next Start; HostsDir
// stays where configure writes.
func (c *Containerd) SetRegistryConfigPath(t testing.TB, p string) {
	t.Helper()
	if !c.cri || c.Running() {
		t.Fatalf("testenv: containerd %s: config_path is set on a stopped CRI daemon", c.Address)
	}
	c.registryConfigPath = p
	c.writeConfig(t)
}

// CRI reports whether the daemon runs the CRI plugin (StartContainerd2).
func (c *Containerd) CRI() bool { return c.cri }

// Namespace is the containerd namespace the test's pulls land in: k8s.io
// for CRI, default for ctr.
func (c *Containerd) Namespace() string {
	if c.cri {
		return "k8s.io"
	}
	return "default"
}

// criConfig renders a containerd 2.x config (version 3) whose CRI plugin
// pulls images and nothing more: no kubelet, CNI or pods. Everything a
// default config points at on the host (NRI socket, CNI and CDI dirs,
// /opt/containerd) is disabled or moved under Dir, so several daemons run
// at once and none reads or writes the host's files.
func (c *Containerd) criConfig() string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	images := `plugins."io.containerd.cri.v1.images"`
	runtime := `plugins."io.containerd.cri.v1.runtime"`
	return strings.Join(slices.Concat([]string{
		"version = 3",
		"root = " + q(c.Root),
		"state = " + q(c.State),
		"temp = " + q(filepath.Join(c.Dir, "tmp")),
		// NRI listens on a host-wide socket.
		`disabled_plugins = ["io.containerd.nri.v1.nri"]`,
		"",
	}, c.socketsAndOpt(), []string{
		// The transfer service (CRI pulls) requires a verifier plugin.
		`[plugins."io.containerd.image-verifier.v1.bindir"]`,
		"  bin_dir = " + q(filepath.Join(c.Dir, "image-verifier")),
		"",
		"[" + images + "]",
		"  snapshotter = " + q(c.Snapshotter),
		// As on a default 2.2 node: CRI pulls through the transfer
		// service, which takes config_path as one directory.
		"  use_local_image_pull = false",
		"  disable_snapshot_annotations = true",
		"[" + images + ".pinned_images]",
		"  sandbox = " + q(sandboxImage),
		"[" + images + ".registry]",
		"  config_path = " + q(c.registryConfigPath),
		"",
		"[" + runtime + "]",
		"  enable_cdi = false",
		"  cdi_spec_dirs = []",
		"[" + runtime + ".cni]",
		"  bin_dirs = [" + q(filepath.Join(c.Dir, "cni", "bin")) + "]",
		"  conf_dir = " + q(filepath.Join(c.Dir, "cni", "net.d")),
		"",
		// The streaming server (exec/attach) listens on loopback only.
		`[plugins."io.containerd.grpc.v1.cri"]`,
		`  stream_server_address = "127.0.0.1"`,
		`  stream_server_port = "0"`,
		"",
	}), "\n")
}
