// Package testenv starts the real components tests run against: containerd
// daemons private to one test, each with its own config, root, state and socket.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// startTimeout bounds how long a containerd may take to answer after exec.
	startTimeout = 30 * time.Second
	// stopTimeout bounds the wait after SIGTERM before SIGKILL.
	stopTimeout = 10 * time.Second
	// ctrTimeout bounds one ctr invocation; pulls through a test mirror are small.
	ctrTimeout = 2 * time.Minute
	// maxSocketPath keeps the socket below the 108-byte sun_path limit.
	maxSocketPath = 100
	// logTailLines is how much of containerd's log a failure prints.
	logTailLines = 40
)

// Containerd is a real containerd daemon private to one test: own config,
// root, state and socket.
type Containerd struct {
	Dir        string // everything of this daemon lives here
	Address    string // gRPC socket
	Root       string // persistent root (content store under io.containerd.content.v1.content)
	State      string // state directory
	ConfigPath string // the config.toml it runs with
	LogPath    string // its stderr
	// Snapshotter is what ctr should unpack with: "overlayfs", or "native"
	// where this sandbox cannot mount overlay.
	Snapshotter string
	// HostsDir is the CRI plugin's registry config_path, where a
	// dregistry's configure writes hosts.toml (StartContainerd2 only; ""
	// for a daemon without CRI).
	HostsDir string

	binary string
	ctr    string // the ctr matching binary
	cri    bool   // runs the CRI plugin (containerd2.go's config)
	crictl string // cri-tools' crictl, when cri
	netns  *Netns // where the daemon and every ctr run; nil: the test's
	home   string // Address to return to at Stop, after StartElsewhere
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for

	// registryConfigPath is CRI's config_path: HostsDir unless a test set
	// another (SetRegistryConfigPath).
	registryConfigPath string
}

// StartContainerd starts containerd (Debian's /usr/bin/containerd) under dir
// (t.TempDir() when ""), waits until it answers, and stops it in t.Cleanup.
// It skips, or fails when DREGISTRY_E2E=required, when not root or when
// containerd or ctr is missing.
func StartContainerd(t testing.TB, dir string) *Containerd {
	t.Helper()
	return StartContainerdIn(t, dir, nil)
}

// StartContainerdIn is StartContainerd with the daemon and every ctr the
// test runs inside ns (nil: the test's own namespace), as on a host whose
// network ns stands for: ctr's pulls then use ns's network, like the
// daemon's own fetches would.
func StartContainerdIn(t testing.TB, dir string, ns *Netns) *Containerd {
	t.Helper()
	RequireRoot(t)
	c := newContainerd(t, dir, ns)
	c.binary = RequireBinary(t, "containerd")
	c.ctr = RequireBinary(t, "ctr")
	c.launch(t)
	return c
}

// newContainerd lays out a daemon's paths under dir (t.TempDir() when "").
func newContainerd(t testing.TB, dir string, ns *Netns) *Containerd {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("testenv: containerd directory: %v", err)
	}
	return &Containerd{
		Dir:        dir,
		Root:       filepath.Join(dir, "root"),
		State:      filepath.Join(dir, "state"),
		ConfigPath: filepath.Join(dir, "config.toml"),
		LogPath:    filepath.Join(dir, "containerd.log"),
		Address:    filepath.Join(dir, "containerd.sock"),
		netns:      ns,
	}
}

// launch picks the socket and snapshotter, writes the config, starts the
// daemon and stops it in t.Cleanup.
func (c *Containerd) launch(t testing.TB) {
	t.Helper()
	if len(c.Address) > maxSocketPath {
		// t.TempDir() of a long test name overflows sun_path: use a short directory.
		short, err := os.MkdirTemp("", "ctd")
		if err != nil {
			t.Fatalf("testenv: socket directory: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(short) })
		c.Address = filepath.Join(short, "c.sock")
	}
	c.Snapshotter = "overlayfs"
	if err := probeOverlay(c.Dir); err != nil {
		t.Logf("testenv: overlay mount unavailable (%v); containerd snapshotter is native", err)
		c.Snapshotter = "native"
	}
	c.writeConfig(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log %s (tail):\n%s", c.LogPath, c.LogTail())
		}
		c.Stop(t)
	})
	c.Start(t)
}

func (c *Containerd) writeConfig(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(c.ConfigPath, []byte(c.config()), 0o600); err != nil {
		t.Fatalf("testenv: write containerd config: %v", err)
	}
}

// StartElsewhere starts the stopped daemon, same root and state, on a
// socket of its own: a client of the usual Address (a dregistry) still
// finds containerd down while the test uses it through Ctr. Stop brings
// Address back, and a Start after it serves the usual socket again.
func (c *Containerd) StartElsewhere(t testing.TB) {
	t.Helper()
	if c.cmd != nil {
		t.Fatalf("testenv: containerd %s already running", c.Address)
	}
	home := c.Address
	c.Address = filepath.Join(filepath.Dir(home), "elsewhere.sock")
	c.home = home
	c.writeConfig(t)
	c.Start(t)
}

// config renders the daemon's configuration: no CRI (several daemons run at
// once and CRI wants host-wide resources), no debug or metrics listener.
func (c *Containerd) config() string {
	if c.cri {
		return c.criConfig()
	}
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	return strings.Join(slices.Concat([]string{
		"version = 2",
		"root = " + q(c.Root),
		"state = " + q(c.State),
		`disabled_plugins = ["io.containerd.grpc.v1.cri"]`,
		"",
	}, c.socketsAndOpt(), []string{""}), "\n")
}

// socketsAndOpt is the part every version's config shares: the node's own
// sockets, no debug or metrics listener, and /opt/containerd under Dir.
func (c *Containerd) socketsAndOpt() []string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	return []string{
		"[grpc]",
		"  address = " + q(c.Address),
		"[ttrpc]",
		"  address = " + q(c.Address+".ttrpc"),
		"[debug]",
		`  address = ""`,
		`  level = "info"`,
		"[metrics]",
		`  address = ""`,
		"",
		`[plugins."io.containerd.internal.v1.opt"]`,
		"  path = " + q(filepath.Join(c.Dir, "opt")),
	}
}

// probeOverlay mounts and unmounts a tiny overlay under dir: the overlayfs
// snapshotter loads even where mounting later fails.
func probeOverlay(dir string) error {
	base := filepath.Join(dir, "overlay-probe")
	defer os.RemoveAll(base)
	parts := map[string]string{}
	for _, p := range []string{"lower", "upper", "work", "merged"} {
		parts[p] = filepath.Join(base, p)
		if err := os.MkdirAll(parts[p], 0o700); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", parts["lower"], parts["upper"], parts["work"])
	if err := syscall.Mount("overlay", parts["merged"], "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return syscall.Unmount(parts["merged"], 0)
}

// Start starts the daemon with the same root and state and waits until it
// answers; a restart is Stop then Start.
func (c *Containerd) Start(t testing.TB) {
	t.Helper()
	if c.cmd != nil {
		t.Fatalf("testenv: containerd %s already running", c.Address)
	}
	logFile, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("testenv: containerd log: %v", err)
	}
	path, args := c.binary, []string{"--config", c.ConfigPath}
	if c.netns != nil {
		// ip netns exec execs in place: the pid and signals stay containerd's.
		path, args = c.netns.Command(path, args)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// The daemon must not outlive a test binary that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("testenv: start containerd: %v", err)
	}
	c.cmd = cmd
	c.exited = make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait()
		logFile.Close()
		close(done)
	}(c.exited)

	if err := c.waitReady(); err != nil {
		t.Logf("containerd log %s (tail):\n%s", c.LogPath, c.LogTail())
		c.Stop(t)
		t.Fatalf("testenv: containerd %s: %v", c.Address, err)
	}
}

// waitReady polls `ctr version` until the daemon answers, exits or the
// deadline passes.
func (c *Containerd) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		select {
		case <-c.exited:
			return fmt.Errorf("exited during start: %s", c.cmd.ProcessState)
		default:
		}
		if _, err := os.Stat(c.Address); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, last = c.run(ctx, "version")
			cancel()
			if last == nil {
				return nil
			}
		} else {
			last = err
		}
		time.Sleep(min(time.Duration(attempt+1)*20*time.Millisecond, 250*time.Millisecond))
	}
	return fmt.Errorf("not answering after %s: %w", startTimeout, last)
}

// Stop sends SIGTERM, waits (bounded) and then SIGKILLs. Stopping a stopped
// daemon does nothing.
func (c *Containerd) Stop(t testing.TB) {
	t.Helper()
	if c.cmd == nil {
		return
	}
	if c.home != "" {
		defer func() {
			c.Address, c.home = c.home, ""
			c.writeConfig(t)
		}()
	}
	cmd, exited := c.cmd, c.exited
	c.cmd, c.exited = nil, nil
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Logf("testenv: SIGTERM containerd: %v", err)
	}
	select {
	case <-exited:
		return
	case <-time.After(stopTimeout):
	}
	t.Logf("testenv: containerd %s ignored SIGTERM for %s; killing it", c.Address, stopTimeout)
	cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		t.Errorf("testenv: containerd pid %d did not exit after SIGKILL", cmd.Process.Pid)
	}
}

// Running reports whether this Containerd started the daemon and has not stopped it.
func (c *Containerd) Running() bool { return c.cmd != nil }

// Ctr runs `ctr -a Address args...` with the daemon's snapshotter and returns
// its combined output; the error carries that output too.
func (c *Containerd) Ctr(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	defer cancel()
	return c.run(ctx, args...)
}

func (c *Containerd) run(ctx context.Context, args ...string) (string, error) {
	path, argv := c.ctr, append([]string{"-a", c.Address}, args...)
	if c.netns != nil {
		path, argv = c.netns.Command(path, argv)
	}
	cmd := exec.CommandContext(ctx, path, argv...)
	cmd.Env = append(os.Environ(), "CONTAINERD_SNAPSHOTTER="+c.Snapshotter)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// LogTail returns the last lines of the daemon's log.
func (c *Containerd) LogTail() string { return tailFile(c.LogPath, logTailLines) }

// RequireRoot skips a test that needs root, or fails it when
// DREGISTRY_E2E=required.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (containerd mounts and owns its root)")
	}
}

// RequireBinary returns the path of a tool the test needs, skipping (or
// failing when DREGISTRY_E2E=required) when it is not installed.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, fmt.Sprintf("needs %s installed: %v", name, err))
	}
	return p
}

// Unavailable skips with why, unless DREGISTRY_E2E=required, where a missing
// tool must not let the suite pass silently.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("DREGISTRY_E2E") == "required" {
		t.Fatalf("DREGISTRY_E2E=required but %s", why)
	}
	t.Skipf("skipping: %s (set DREGISTRY_E2E=required to make this a failure)", why)
}
