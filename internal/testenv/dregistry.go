package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Ports every node uses on its own loopback address.
const (
	NodeHTTPPort    = "5000"
	NodeGossipPort  = "7946"
	NodeTorrentPort = "6881"
)

// cliTimeout bounds one run of a dregistry subcommand.
const cliTimeout = time.Minute

// NodeConfig describes one node: a containerd and a dregistry daemon on one
// loopback address.
type NodeConfig struct {
	// Name labels the node in messages; default "node-<IP>".
	Name string
	// IP is the node's loopback address; default LoopbackIP(11). Give each
	// node its own (LoopbackIP(11), LoopbackIP(12), ...).
	IP string
	// Containerd is the node's containerd; nil starts a new one for the
	// node, of Runtime.
	Containerd *Containerd
	// Runtime is the containerd the node starts when Containerd is nil:
	// RuntimeCtr (Debian's 1.6, the default) or RuntimeCRI (2.x with CRI).
	Runtime Runtime
	// Upstream is the registry the node mirrors: containerd's hosts.toml for
	// it points at the node, the daemon reaches it over plain HTTP, and it is
	// the daemon's --default-registry.
	Upstream *Registry
	// ExtraArgs are more `dregistry daemon` flags (e.g. --join, --egress).
	ExtraArgs []string
	// Env is extra environment for the daemon (DREGISTRY_*).
	Env []string
	// Binary is the dregistry to run; default BuildDregistry(t).
	Binary string
	// Key is the cluster key the daemon is started with
	// (--cluster-key-file); nil gives the node a key of its own. Nodes that
	// join each other need the same one.
	Key *ClusterKey
	// NoClusterKey starts the daemon without any key (a keyless node; with
	// --join it also needs --insecure-gossip).
	NoClusterKey bool
	// HTTPListen, when set, is the daemon's --http-addr instead of IP:5000,
	// e.g. ":40123" to listen on every address as the chart does (see
	// FreePort); HTTPAddr is then IP with its port.
	HTTPListen string
	// Netns, when set, is the namespace the daemon runs in; IP must then be
	// an address of it that containerd and the test reach (over a Link).
	// A containerd the node starts stays in the test's namespace; give one
	// of StartContainerdIn(t, "", Netns) to put the whole node there.
	// Such a node admits mirror clients from 198.18.0.0/15 (--mirror-allow),
	// the other end of its link, where containerd and the test are.
	Netns *Netns
}

// Node is one running node of a test cluster.
type Node struct {
	Name        string
	IP          string
	HTTPAddr    string // IP:5000, the mirror and peer endpoint
	GossipAddr  string // IP:7946
	TorrentAddr string // IP:6881
	Dir         string // everything of the node
	DataDir     string // --data-dir
	HostsDir    string // containerd's hosts directory for this node
	LogPath     string // the daemon's log
	Binary      string
	Containerd  *Containerd
	Upstream    *Registry
	// Key is the node's cluster key; nil when started with NoClusterKey.
	Key *ClusterKey

	proc *Process
}

// Client is an HTTP client bounded by timeout that signs its requests with
// the node's cluster key, as a member does (unsigned for a keyless node).
func (n *Node) Client(timeout time.Duration) *http.Client { return n.Key.Client(timeout) }

// StartNode starts the node's containerd (unless given), configures its hosts
// dir with `dregistry containerd configure`, starts `dregistry daemon` and
// waits for GET /v2/. Both daemons stop in t.Cleanup; on failure the tail of
// each log is printed.
func StartNode(t testing.TB, cfg NodeConfig) *Node {
	t.Helper()
	if cfg.IP == "" {
		cfg.IP = LoopbackIP(11)
	}
	if cfg.Name == "" {
		cfg.Name = "node-" + cfg.IP
	}
	if cfg.Binary == "" {
		cfg.Binary = BuildDregistry(t)
	}
	if cfg.Containerd == nil {
		switch cfg.Runtime {
		case RuntimeCtr:
			cfg.Containerd = StartContainerd(t, "")
		case RuntimeCRI:
			cfg.Containerd = StartContainerd2(t, "", nil)
		default:
			t.Fatalf("testenv: unknown runtime %v", cfg.Runtime)
		}
	}
	if cfg.Key == nil && !cfg.NoClusterKey {
		cfg.Key = NewClusterKey(t)
	}
	dir := t.TempDir()
	n := &Node{
		Name:        cfg.Name,
		IP:          cfg.IP,
		HTTPAddr:    cfg.IP + ":" + NodeHTTPPort,
		GossipAddr:  cfg.IP + ":" + NodeGossipPort,
		TorrentAddr: cfg.IP + ":" + NodeTorrentPort,
		Dir:         dir,
		DataDir:     filepath.Join(dir, "data"),
		HostsDir:    filepath.Join(dir, "hosts"),
		LogPath:     filepath.Join(dir, "dregistry.log"),
		Binary:      cfg.Binary,
		Containerd:  cfg.Containerd,
		Upstream:    cfg.Upstream,
	}
	if cfg.Containerd.HostsDir != "" {
		// CRI reads the directory its config_path names.
		n.HostsDir = cfg.Containerd.HostsDir
	}
	if !cfg.NoClusterKey {
		n.Key = cfg.Key
	}
	listen := n.HTTPAddr
	if cfg.HTTPListen != "" {
		_, port, err := net.SplitHostPort(cfg.HTTPListen)
		if err != nil {
			t.Fatalf("testenv: HTTPListen: %v", err)
		}
		listen, n.HTTPAddr = cfg.HTTPListen, net.JoinHostPort(cfg.IP, port)
	}
	args := []string{
		"daemon",
		"--http-addr", listen,
		"--advertise-addr", n.IP,
		"--gossip-addr", n.GossipAddr,
		"--torrent-addr", n.TorrentAddr,
		"--data-dir", n.DataDir,
		"--containerd-address", n.Containerd.Address,
		"--log-level", "debug",
	}
	if n.Key != nil {
		args = append(args, "--cluster-key-file", n.Key.Path)
	}
	if cfg.Netns != nil {
		args = append(args, "--mirror-allow", "198.18.0.0/15")
	}
	configureOut := ""
	if n.Upstream != nil {
		args = append(args, "--default-registry", n.Upstream.Addr, "--upstream-plain-http", n.Upstream.Addr)
		out, err := n.Run(t, "containerd", "configure",
			"--hosts-dir", n.HostsDir,
			"--mirror", n.URL(),
			"--registry", n.Upstream.Addr,
			"--plain-http", n.Upstream.Addr,
			"--containerd-config", n.Containerd.ConfigPath,
			"--containerd-address", n.Containerd.Address)
		if err != nil {
			t.Fatalf("testenv: %s: %v", n.Name, err)
		}
		configureOut = strings.TrimSpace(out)
	}
	n.proc = &Process{
		Name:    "dregistry " + n.Name,
		Path:    n.Binary,
		Args:    append(args, cfg.ExtraArgs...),
		Env:     cfg.Env,
		LogPath: n.LogPath,
		Netns:   cfg.Netns,
	}
	t.Cleanup(func() {
		if t.Failed() {
			// Whatever failed (a bounded wait, an assertion), the daemons'
			// state at that moment is printed here, once for every node.
			t.Logf("%s: dregistry containerd configure said:\n%s", n.Name, configureOut)
			t.Logf("%s: %s", n.Name, n.State())
			t.Logf("%s: dregistry log %s (tail):\n%s", n.Name, n.LogPath, n.proc.Tail(tailLines))
		}
		if err := n.proc.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	n.Start(t)
	return n
}

// URL is the node's mirror endpoint, http://IP:5000.
func (n *Node) URL() string { return "http://" + n.HTTPAddr }

// Start starts the stopped daemon and waits until GET /v2/ answers 200.
func (n *Node) Start(t testing.TB) {
	t.Helper()
	if err := n.proc.Start(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := n.proc.WaitHTTP(n.URL()+"/v2/", readyTimeout); err != nil {
		t.Logf("%s: dregistry log (tail):\n%s", n.Name, n.proc.Tail(tailLines))
		_ = n.proc.Stop()
		t.Fatalf("testenv: %v", err)
	}
}

// Stop stops the daemon with SIGTERM (a clean shutdown).
func (n *Node) Stop(t testing.TB) {
	t.Helper()
	if err := n.proc.Stop(); err != nil {
		t.Errorf("testenv: %v", err)
	}
}

// Kill stops the daemon with SIGKILL (a crash).
func (n *Node) Kill(t testing.TB) {
	t.Helper()
	if err := n.proc.Kill(); err != nil {
		t.Errorf("testenv: %v", err)
	}
}

// Restart stops and starts the daemon, keeping its data dir.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.Stop(t)
	n.Start(t)
}

// Running reports whether the daemon is started.
func (n *Node) Running() bool { return n.proc.Running() }

// Pid is the daemon's process id (0 when stopped).
func (n *Node) Pid() int { return n.proc.Pid() }

// RestartContainerd stops and starts the node's containerd under the running
// daemon, keeping its content store.
func (n *Node) RestartContainerd(t testing.TB) {
	t.Helper()
	n.Containerd.Stop(t)
	n.Containerd.Start(t)
}

// State describes the running daemon for a failing test: its /readyz answer
// and its /admin/v1/stats (members as it sees them, torrents), each asked
// within stateTimeout so a hung daemon shows as such instead of hanging.
func (n *Node) State() string {
	if !n.proc.Running() {
		return "daemon stopped"
	}
	var b strings.Builder
	for _, path := range []string{"/readyz", "/admin/v1/stats"} {
		status, body, err := n.AdminGet(path)
		if err != nil {
			fmt.Fprintf(&b, "\nGET %s: %v", path, err)
			continue
		}
		if len(body) > stateBytes {
			body = append(body[:stateBytes], "…"...)
		}
		fmt.Fprintf(&b, "\nGET %s: %d %s", path, status, bytes.TrimSpace(body))
	}
	return b.String()
}

// AdminGet GETs path from the daemon's HTTP endpoint (/readyz, /admin/v1/...)
// as a member (signed with the node's key) within stateTimeout and returns
// the status and body.
func (n *Node) AdminGet(path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := n.Client(stateTimeout).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, body, err
}

// stateTimeout bounds each request of State; stateBytes is how much of each
// answer it prints.
const (
	stateTimeout = 5 * time.Second
	stateBytes   = 4 << 10
)

// LogTail returns the last lines of the daemon's log.
func (n *Node) LogTail() string { return n.proc.Tail(tailLines) }

// Pull pulls ref into the node's containerd through the node's hosts dir
// and fails the test on error: with ctr into namespace default, as a user
// would, or (RuntimeCRI) with crictl into k8s.io, as kubelet would. args
// go before ref (e.g. "--all-platforms"); crictl takes none.
func (n *Node) Pull(t testing.TB, ref string, args ...string) string {
	t.Helper()
	out, err := n.TryPull(t, ref, args...)
	if err != nil {
		t.Fatalf("testenv: %s: %v", n.Name, err)
	}
	return out
}

// TryPull is Pull that returns the error instead of failing.
func (n *Node) TryPull(t testing.TB, ref string, args ...string) (string, error) {
	t.Helper()
	return n.TryPullIn(t, n.Containerd.Namespace(), ref, args...)
}

// PullIn is Pull into containerd namespace ns: "k8s.io" is where kubelet's
// images live, "moby" Docker's.
func (n *Node) PullIn(t testing.TB, ns, ref string, args ...string) string {
	t.Helper()
	out, err := n.TryPullIn(t, ns, ref, args...)
	if err != nil {
		t.Fatalf("testenv: %s: %v", n.Name, err)
	}
	return out
}

// TryPullIn is PullIn that returns the error instead of failing.
func (n *Node) TryPullIn(t testing.TB, ns, ref string, args ...string) (string, error) {
	t.Helper()
	if n.Containerd.CRI() {
		// CRI reads hosts.toml through config_path and pulls into k8s.io.
		if ns != "k8s.io" || len(args) > 0 {
			t.Fatalf("testenv: %s: a CRI pull lands in k8s.io and takes no ctr flags (asked ns %q, args %q)", n.Name, ns, args)
		}
		return n.Containerd.Crictl(t, "pull", ref)
	}
	cmd := []string{"-n", ns, "images", "pull", "--plain-http", "--hosts-dir", n.HostsDir}
	cmd = append(cmd, args...)
	return n.Containerd.Ctr(t, append(cmd, ref)...)
}

// Run runs `dregistry args...` (a CLI subcommand, not the daemon) and returns
// its combined output; the error carries the output too.
func (n *Node) Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.Binary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("dregistry %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// HostsFile returns the hosts.toml containerd reads for the upstream.
func (n *Node) HostsFile(t testing.TB) string {
	t.Helper()
	if n.Upstream == nil {
		t.Fatalf("testenv: %s has no upstream", n.Name)
	}
	b, err := os.ReadFile(filepath.Join(n.HostsDir, n.Upstream.Addr, "hosts.toml"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return string(b)
}

// FreePort returns a TCP port free on every address right now, for a
// daemon that listens on all of them (HTTPListen ":"+port).
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
