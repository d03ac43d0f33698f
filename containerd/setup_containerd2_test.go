package containerd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// containerd2Timeout bounds one run of the built containerd's CLI.
const containerd2Timeout = 30 * time.Second

func runContainerd2(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), containerd2Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", bin, strings.Join(args, " "), err)
	}
	return string(out)
}

// The real `containerd config default` of the containerd 2.x make deps
// builds: CheckSetup finds CRI's default config_path list, and once its
// fix is applied finds nothing, and containerd reads the fix as meant.
func TestCheckSetupOnContainerd2DefaultConfig(t *testing.T) {
	bin := testenv.RequireContainerd2(t).Containerd
	version := strings.TrimSpace(runContainerd2(t, bin, "--version"))
	// configure's default --hosts-dir, the first of the default list.
	const hostsDir = "/etc/containerd/certs.d"
	config := filepath.Join(t.TempDir(), "config.toml")
	def := runContainerd2(t, bin, "config", "default")
	if err := os.WriteFile(config, []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	in := SetupInput{ContainerdConfig: config, HostsDir: hostsDir, Version: version, Root: noRancher(t)}
	got := CheckSetup(in)
	if want := []Check{CheckConfigPathList, CheckCtrHostsDir}; !slices.Equal(checks(got), want) {
		t.Fatalf("%s default config: findings %v, want %v:\n%+v", version, checks(got), want, got)
	}
	f, _ := findingOf(got, CheckConfigPathList)
	table := `[plugins."io.containerd.cri.v1.images".registry]`
	if !strings.Contains(f.Message, table) {
		t.Fatalf("the finding does not name %s:\n%s", table, f.Message)
	}

	// The fix the finding gives, applied to the default file.
	section := "[plugins.'io.containerd.cri.v1.images'.registry]\n      config_path = ''"
	if !strings.Contains(def, section) {
		t.Fatalf("%s's default config has no %q", version, section)
	}
	fixed := strings.Replace(def, section, "[plugins.'io.containerd.cri.v1.images'.registry]\n      config_path = '"+hostsDir+"'", 1)
	if err := os.WriteFile(config, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := CheckSetup(in); !slices.Equal(checks(got), []Check{CheckCtrHostsDir}) {
		t.Fatalf("after the fix: findings %v, want only %s:\n%+v", checks(got), CheckCtrHostsDir, got)
	}
	dump := runContainerd2(t, bin, "--config", config, "config", "dump")
	if !strings.Contains(dump, "config_path = '"+hostsDir+"'") {
		t.Fatalf("containerd does not read the fixed config_path %s:\n%s", hostsDir, dump)
	}
}
