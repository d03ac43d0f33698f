package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// configureEnv is one node's worth of temp paths for `containerd configure`.
type configureEnv struct {
	hostsDir, config, probeRoot string
}

func newConfigureEnv(t *testing.T, containerdConfig string) configureEnv {
	t.Helper()
	dir := t.TempDir()
	env := configureEnv{
		hostsDir:  filepath.Join(dir, "certs.d"),
		config:    filepath.Join(dir, "config.toml"),
		probeRoot: filepath.Join(dir, "root"),
	}
	if err := os.MkdirAll(env.probeRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	body := strings.ReplaceAll(containerdConfig, "HOSTS_DIR", env.hostsDir)
	if err := os.WriteFile(env.config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return env
}

// run executes `dregistry containerd configure` with the env's paths and
// a fixed containerd version, so no socket or binary is consulted.
func (e configureEnv) run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name: "dregistry", Commands: []*cli.Command{containerdCommand()},
		Writer: &out, ErrWriter: &errOut,
		ExitErrHandler: func(*cli.Context, error) {}, // return errors instead of exiting
	}
	full := append([]string{"dregistry", "containerd", "configure",
		"--hosts-dir", e.hostsDir, "--containerd-config", e.config,
		"--containerd-version", "1.6.20", "--probe-root", e.probeRoot}, args...)
	err = app.RunContext(context.Background(), full)
	return out.String(), errOut.String(), err
}

const configuredV2 = `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "HOSTS_DIR"
`

func TestConfigureWritesChecksAndRestores(t *testing.T) {
	env := newConfigureEnv(t, configuredV2)
	stdout, stderr, err := env.run(t, "--mirror", "http://127.0.0.1:5000", "--registry", "docker.io,ghcr.io", "--plain-http", "127.0.0.1:5001")
	if err != nil {
		t.Fatalf("configure: %v\n%s", err, stderr)
	}
	for _, reg := range []string{"docker.io", "ghcr.io", "127.0.0.1:5001"} {
		path := filepath.Join(env.hostsDir, reg, "hosts.toml")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s not written: %v", reg, err)
		}
		if !strings.Contains(string(b), `[host."http://127.0.0.1:5000"]`) {
			t.Errorf("%s lacks the mirror:\n%s", path, b)
		}
		if !strings.Contains(stdout, "create "+path) {
			t.Errorf("stdout does not report creating %s:\n%s", path, stdout)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(env.hostsDir, "127.0.0.1:5001", "hosts.toml")); !strings.Contains(string(b), `server = "http://127.0.0.1:5001"`) {
		t.Errorf("plain-http registry upstream is not http://:\n%s", b)
	}
	// A correctly configured containerd leaves only the ctr note.
	if strings.Contains(stderr, "warning") || !strings.Contains(stderr, "note [ctr-hosts-dir]") {
		t.Errorf("stderr = %q, want only the ctr note", stderr)
	}

	stdout, _, err = env.run(t, "--mirror", "http://127.0.0.1:5000", "--registry", "docker.io", "--registry", "ghcr.io", "--plain-http", "127.0.0.1:5001")
	if err != nil || strings.Count(stdout, "unchanged ") != 3 {
		t.Fatalf("second run: %v, stdout %q; want 3 unchanged", err, stdout)
	}

	stdout, _, err = env.run(t, "--restore")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(stdout, "remove ") != 3 {
		t.Errorf("restore stdout = %q, want 3 removals", stdout)
	}
	if entries, _ := os.ReadDir(env.hostsDir); len(entries) != 0 {
		t.Errorf("hosts dir not empty after restore: %v", entries)
	}
	stdout, _, err = env.run(t, "--restore")
	if err != nil || !strings.Contains(stdout, "nothing to restore") {
		t.Errorf("second restore: %v, %q", err, stdout)
	}
}

func TestConfigureFindingsAreWarningsNotErrors(t *testing.T) {
	env := newConfigureEnv(t, `version = 3
[plugins."io.containerd.cri.v1.images"]
  discard_unpacked_layers = true
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`)
	// 2.1: on 2.2+ discard_unpacked_layers makes CRI pull locally, which
	// reads every directory of the list, so the list is only a note there.
	_, stderr, err := env.run(t, "--mirror", "http://127.0.0.1:5000", "--containerd-version", "2.1.0")
	if err != nil {
		t.Fatalf("findings must not fail the command: %v", err)
	}
	for _, want := range []string{"warning [config-path-list]", "warning [config-path-elsewhere]", "warning [discard-unpacked-layers]"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(env.hostsDir, "_default", "hosts.toml")); err != nil {
		t.Errorf("_default/hosts.toml not written despite only warnings: %v", err)
	}
}

func TestConfigureDryRunWritesNothing(t *testing.T) {
	env := newConfigureEnv(t, configuredV2)
	stdout, _, err := env.run(t, "--mirror", "http://127.0.0.1:5000", "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(env.hostsDir); !os.IsNotExist(err) {
		t.Fatalf("dry run created %s (%v)", env.hostsDir, err)
	}
	if !strings.Contains(stdout, "would create "+filepath.Join(env.hostsDir, "_default", "hosts.toml")) ||
		!strings.Contains(stdout, `capabilities = ["pull", "resolve"]`) {
		t.Errorf("dry run output lacks the action or the file:\n%s", stdout)
	}
}

func TestConfigureRefusesK3sUnlessForced(t *testing.T) {
	env := newConfigureEnv(t, configuredV2)
	if err := os.MkdirAll(filepath.Join(env.probeRoot, "etc", "rancher", "k3s"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := env.run(t, "--mirror", "http://127.0.0.1:5000", "--registry", "docker.io")
	if err == nil || !strings.Contains(err.Error(), "k3s/RKE2") {
		t.Fatalf("err = %v, want a k3s refusal", err)
	}
	if !strings.Contains(stderr, "/etc/rancher/k3s/registries.yaml") || !strings.Contains(stderr, `"docker.io":`) {
		t.Errorf("stderr lacks the registries.yaml snippet:\n%s", stderr)
	}
	if _, err := os.Stat(env.hostsDir); !os.IsNotExist(err) {
		t.Fatalf("refused configure created %s", env.hostsDir)
	}
	if _, _, err := env.run(t, "--mirror", "http://127.0.0.1:5000", "--registry", "docker.io", "--force"); err != nil {
		t.Fatalf("--force: %v", err)
	}
	if _, err := os.Stat(filepath.Join(env.hostsDir, "docker.io", "hosts.toml")); err != nil {
		t.Fatalf("--force did not write: %v", err)
	}
}

func TestConfigureRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no mirror", []string{"--registry", "docker.io"}, "--mirror is required"},
		{"mirror without scheme", []string{"--mirror", "127.0.0.1:5000"}, "mirror URL"},
		{"registry with scheme", []string{"--mirror", "http://127.0.0.1:5000", "--registry", "docker.io,https://ghcr.io"}, "without scheme"},
		{"positional argument", []string{"--mirror", "http://127.0.0.1:5000", "docker.io"}, "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newConfigureEnv(t, configuredV2)
			_, stderr, err := env.run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if stderr != "" {
				t.Errorf("bad input ran the setup checks: %q", stderr)
			}
			if _, err := os.Stat(env.hostsDir); !os.IsNotExist(err) {
				t.Fatalf("bad input created %s", env.hostsDir)
			}
		})
	}
}

func TestDetectContainerdVersionFromBinary(t *testing.T) {
	if _, err := exec.LookPath("containerd"); err != nil {
		if os.Getenv("DREGISTRY_E2E") == "required" {
			t.Fatal("containerd is not installed (apt-get install containerd) and DREGISTRY_E2E=required")
		}
		t.Skip("containerd is not installed (apt-get install containerd); skipping the version probe test")
	}
	// No socket here, so the answer must come from `containerd --version`.
	got := detectContainerdVersion(context.Background(), filepath.Join(t.TempDir(), "absent.sock"))
	if !strings.HasPrefix(got, "containerd ") || !strings.ContainsAny(got, "0123456789") {
		t.Fatalf("detected version %q, want the `containerd --version` line", got)
	}
}
