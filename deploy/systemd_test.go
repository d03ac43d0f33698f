package deploy

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const (
	systemdUnit   = "systemd/dregistry.service"
	exampleConfig = "systemd/config.yaml"
	// installedBinary is where the unit expects the dregistry binary.
	installedBinary = "/usr/local/bin/dregistry"
)

// unitSettings returns the unit's Key=Value lines, by key, in order.
func unitSettings(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is no Key=Value", systemdUnit, line)
		}
		out[k] = append(out[k], v)
	}
	return out
}

// systemd-analyze checks every key and value of the unit as systemd would
// load it; any complaint (it only warns about unknown keys) fails.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("DREGISTRY_E2E") == "required" {
			t.Fatal("systemd-analyze not found (Debian package systemd) and DREGISTRY_E2E=required")
		}
		t.Skip("systemd-analyze not found (Debian package systemd); the unit is not verified")
	}
	raw, err := os.ReadFile(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	// verify also wants every Exec binary to exist; stand in for dregistry.
	stand := filepath.Join(t.TempDir(), "dregistry")
	if err := os.WriteFile(stand, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "dregistry.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(raw), installedBinary, stand)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, analyze, "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", systemdUnit, err, out)
	}
}

// The unit and the example config agree on the paths the sandbox opens.
func TestSystemdUnitMatchesConfig(t *testing.T) {
	unit := unitSettings(t)
	raw, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", exampleConfig, err)
	}
	if got := unit["ExecStart"]; len(got) != 1 || got[0] != installedBinary+" daemon --config /etc/dregistry/config.yaml" {
		t.Errorf("ExecStart %q", got)
	}
	if got := unit["Restart"]; !slices.Equal(got, []string{"always"}) {
		t.Errorf("Restart %q", got)
	}
	// The daemon's data directory is the unit's StateDirectory, the one
	// place besides certs.d that ProtectSystem=strict leaves writable.
	if got := unit["StateDirectory"]; len(got) != 1 || cfg["data-dir"] != "/var/lib/"+got[0] {
		t.Errorf("data-dir %v, StateDirectory %q", cfg["data-dir"], got)
	}
	if !slices.Equal(unit["ProtectSystem"], []string{"strict"}) {
		t.Errorf("ProtectSystem %q", unit["ProtectSystem"])
	}
	var configure []string
	for _, pre := range unit["ExecStartPre"] {
		if w := strings.Fields(pre); len(w) > 2 && w[0] == installedBinary && w[1] == "containerd" && w[2] == "configure" {
			configure = w
		}
	}
	hostsDir := ""
	for i, w := range configure {
		if w == "--hosts-dir" && i+1 < len(configure) {
			hostsDir = configure[i+1]
		}
	}
	if hostsDir == "" {
		t.Fatalf("no ExecStartPre with containerd configure --hosts-dir: %q", unit["ExecStartPre"])
	}
	writable := strings.Fields(strings.Join(unit["ReadWritePaths"], " "))
	if !slices.Contains(writable, hostsDir) && !slices.Contains(writable, "-"+hostsDir) {
		t.Errorf("configure writes %s, but ReadWritePaths is %q", hostsDir, writable)
	}
	// The sandbox must not hide what the daemon reads.
	for _, k := range []string{"InaccessiblePaths", "TemporaryFileSystem", "RootDirectory", "DynamicUser"} {
		if v, ok := unit[k]; ok {
			t.Errorf("%s=%q could hide containerd's socket or content store", k, v)
		}
	}
	if caps, ok := unit["CapabilityBoundingSet"]; !ok || !slices.Equal(caps, []string{""}) {
		t.Errorf("CapabilityBoundingSet %q, want empty (root owns what the daemon opens)", caps)
	}
}
