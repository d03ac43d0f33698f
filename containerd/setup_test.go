package containerd

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func checks(fs []Finding) []Check {
	var out []Check
	for _, f := range fs {
		out = append(out, f.Check)
	}
	return out
}

func findingOf(fs []Finding, c Check) (Finding, bool) {
	for _, f := range fs {
		if f.Check == c {
			return f, true
		}
	}
	return Finding{}, false
}

// noRancher is an empty root, so the k3s/RKE2 probes find nothing.
func noRancher(t *testing.T) string { return t.TempDir() }

func TestCheckSetupFixtures(t *testing.T) {
	const certsD = "/etc/containerd/certs.d"
	tests := []struct {
		name     string
		fixture  string // under testdata/setup; "" = a config file that does not exist
		version  string
		hostsDir string
		want     []Check
		contains map[Check][]string // phrases the finding must carry
	}{
		{
			name: "1.6 default config has no config_path", fixture: "containerd-1.6-default.toml", version: "1.6.20~ds1",
			want: []Check{CheckNoConfigPath, CheckCtrHostsDir},
			contains: map[Check][]string{CheckNoConfigPath: {
				`[plugins."io.containerd.grpc.v1.cri".registry]`, `config_path = "/etc/containerd/certs.d"`,
				`plugins."io.containerd.cri.v1.images".registry`, "restart containerd"}},
		},
		{
			name: "1.6 configured for the hosts dir", fixture: "containerd-1.6-hosts-dir.toml", version: "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3",
			want: []Check{CheckCtrHostsDir},
		},
		{
			name: "1.6 config_path elsewhere", fixture: "containerd-1.6-hosts-dir.toml", version: "1.6.20", hostsDir: "/srv/dregistry/certs.d",
			want:     []Check{CheckConfigPathElsewhere, CheckCtrHostsDir},
			contains: map[Check][]string{CheckConfigPathElsewhere: {"--hosts-dir /etc/containerd/certs.d", "/srv/dregistry/certs.d"}},
		},
		{
			name: "1.6 discard_unpacked_layers", fixture: "containerd-1.6-discard.toml", version: "1.6.20",
			want: []Check{CheckDiscardUnpacked, CheckCtrHostsDir},
			contains: map[Check][]string{CheckDiscardUnpacked: {
				`plugins."io.containerd.grpc.v1.cri".containerd.discard_unpacked_layers = true`, "cannot seed"}},
		},
		{
			name: "1.6 deprecated mirrors", fixture: "containerd-1.6-mirrors.toml", version: "1.6.20",
			want:     []Check{CheckDeprecatedMirrors, CheckCtrHostsDir},
			contains: map[Check][]string{CheckDeprecatedMirrors: {"never reads hosts.toml", "config_path ="}},
		},
		{
			name: "1.6 mirrors and config_path", fixture: "containerd-1.6-mirrors-and-path.toml", version: "1.6.20",
			want:     []Check{CheckDeprecatedMirrors, CheckCtrHostsDir},
			contains: map[Check][]string{CheckDeprecatedMirrors: {"refuses to start"}},
		},
		{
			name: "old format without version", fixture: "containerd-v1-format.toml", version: "1.6.20",
			want:     []Check{CheckDiscardUnpacked, CheckCtrHostsDir},
			contains: map[Check][]string{CheckDiscardUnpacked: {"plugins.cri.containerd.discard_unpacked_layers"}},
		},
		{
			name: "config_path not a string", fixture: "containerd-config-path-array.toml", version: "1.6.20",
			want:     []Check{CheckNoConfigPath, CheckCtrHostsDir},
			contains: map[Check][]string{CheckNoConfigPath: {"not a string"}},
		},
		{
			name: "2.2 list config_path", fixture: "containerd-2.2-list.toml", version: "v2.2.0",
			want: []Check{CheckConfigPathList, CheckCtrHostsDir},
			contains: map[Check][]string{CheckConfigPathList: {
				"transfer service", `[plugins."io.containerd.cri.v1.images".registry]`,
				`config_path = "/etc/containerd/certs.d"`, "use_local_image_pull = true"}},
		},
		{
			name: "2.0 list config_path is split", fixture: "containerd-2.2-list.toml", version: "2.0.5",
			want: []Check{CheckCtrHostsDir},
		},
		{
			name: "2.2 list with local pull", fixture: "containerd-2.2-local-pull.toml", version: "2.2.0",
			want: []Check{CheckCtrHostsDir},
		},
		{
			name: "2.2 single directory", fixture: "containerd-2.2-single.toml", version: "2.2.0",
			want: []Check{CheckCtrHostsDir},
		},
		{
			name: "2.2 default list applies", fixture: "containerd-2.2-no-registry.toml", version: "2.2.1",
			want:     []Check{CheckConfigPathList, CheckCtrHostsDir},
			contains: map[Check][]string{CheckConfigPathList: {"unset, so containerd's default"}},
		},
		{
			// `containerd config default` of v2.2.9 as built by make deps.
			name: "2.2.9 default config", fixture: "containerd-2.2.9-default.toml", version: "containerd github.com/containerd/containerd/v2 v2.2.9 ",
			want: []Check{CheckConfigPathList, CheckCtrHostsDir},
			contains: map[Check][]string{CheckConfigPathList: {"unset, so containerd's default", "transfer service",
				`[plugins."io.containerd.cri.v1.images".registry]`, `config_path = "/etc/containerd/certs.d"`}},
		},
		{
			name: "2.2 list with discard falls back to local pulls", fixture: "containerd-2.2-list-discard.toml", version: "2.2.9",
			want: []Check{CheckLocalPullFallback, CheckDiscardUnpacked, CheckCtrHostsDir},
			contains: map[Check][]string{CheckLocalPullFallback: {
				`plugins."io.containerd.cri.v1.images".discard_unpacked_layers = true`, "mirror is used"}},
		},
		{
			name: "2.1 list with discard is not split", fixture: "containerd-2.2-list-discard.toml", version: "2.1.4",
			want: []Check{CheckConfigPathList, CheckDiscardUnpacked, CheckCtrHostsDir},
		},
		{
			name: "2.2 list with snapshot annotations falls back to local pulls", fixture: "containerd-2.2-list-annotations.toml", version: "v2.4.2",
			want: []Check{CheckLocalPullFallback, CheckCtrHostsDir},
			contains: map[Check][]string{CheckLocalPullFallback: {
				`plugins."io.containerd.cri.v1.images".disable_snapshot_annotations = false`}},
		},
		{
			name: "2.2 config_path only in the transfer plugin", fixture: "containerd-2.2-transfer-only.toml", version: "2.2.9",
			want: []Check{CheckConfigPathList, CheckTransferConfigPath, CheckCtrHostsDir},
			contains: map[Check][]string{CheckTransferConfigPath: {
				`[plugins."io.containerd.transfer.v1.local"] config_path = "/etc/containerd/certs.d" is not read by CRI pulls`,
				`[plugins."io.containerd.cri.v1.images".registry] config_path`}},
		},
		{
			name: "2.2 discard_unpacked_layers", fixture: "containerd-2.2-discard.toml", version: "2.2.0",
			want:     []Check{CheckDiscardUnpacked, CheckCtrHostsDir},
			contains: map[Check][]string{CheckDiscardUnpacked: {`plugins."io.containerd.cri.v1.images".discard_unpacked_layers = true`}},
		},
		{
			name: "2.2 list, version unknown", fixture: "containerd-2.2-list.toml", version: "",
			want: []Check{CheckVersionUnknown, CheckConfigPathList, CheckCtrHostsDir},
		},
		{
			name: "no config file, 1.6", fixture: "", version: "1.6.20",
			want: []Check{CheckNoConfigPath, CheckCtrHostsDir},
			contains: map[Check][]string{CheckNoConfigPath: {"missing, so containerd runs on its defaults",
				`[plugins."io.containerd.grpc.v1.cri".registry]`}},
		},
		{
			name: "no config file, 2.2", fixture: "", version: "2.2.0",
			want:     []Check{CheckConfigPathList, CheckCtrHostsDir},
			contains: map[Check][]string{CheckConfigPathList: {`[plugins."io.containerd.cri.v1.images".registry]`}},
		},
		{
			name: "no config file, 2.0", fixture: "", version: "2.0.0",
			want: []Check{CheckCtrHostsDir},
		},
		{
			name: "no config file, version unknown", fixture: "", version: "unknown",
			want: []Check{CheckVersionUnknown, CheckNoConfigPath, CheckCtrHostsDir},
			contains: map[Check][]string{CheckNoConfigPath: {
				`[plugins."io.containerd.grpc.v1.cri".registry]`, `[plugins."io.containerd.cri.v1.images".registry]`}},
		},
		{
			name: "invalid TOML", fixture: "containerd-invalid.toml", version: "1.6.20",
			want: []Check{CheckConfigUnreadable},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			config := filepath.Join(t.TempDir(), "missing.toml")
			if tc.fixture != "" {
				config = filepath.Join("testdata", "setup", tc.fixture)
			}
			hostsDir := tc.hostsDir
			if hostsDir == "" {
				hostsDir = certsD
			}
			got := CheckSetup(SetupInput{ContainerdConfig: config, HostsDir: hostsDir, Version: tc.version, Root: noRancher(t)})
			if !slices.Equal(checks(got), tc.want) {
				t.Fatalf("findings %v, want %v:\n%+v", checks(got), tc.want, got)
			}
			for c, phrases := range tc.contains {
				f, _ := findingOf(got, c)
				for _, p := range phrases {
					if !strings.Contains(f.Message, p) {
						t.Errorf("%s finding lacks %q:\n%s", c, p, f.Message)
					}
				}
			}
			for _, f := range got {
				notes := []Check{CheckCtrHostsDir, CheckVersionUnknown, CheckLocalPullFallback, CheckTransferConfigPath}
				if slices.Contains(notes, f.Check) && f.Severity != SeverityNote {
					t.Errorf("%s has severity %v, want note", f.Check, f.Severity)
				}
				if !slices.Contains(notes, f.Check) && f.Severity != SeverityWarning {
					t.Errorf("%s has severity %v, want warning", f.Check, f.Severity)
				}
			}
		})
	}
}

func TestCheckSetupCRIDisabled(t *testing.T) {
	// The e2e harness runs containerd this way: only ctr --hosts-dir pulls.
	config := filepath.Join(t.TempDir(), "config.toml")
	body := "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n" +
		"[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  discard_unpacked_layers = true\n"
	if err := os.WriteFile(config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	got := CheckSetup(SetupInput{ContainerdConfig: config, HostsDir: "/tmp/hosts", Version: "1.6.20", Root: noRancher(t)})
	if want := []Check{CheckCRIDisabled, CheckCtrHostsDir}; !slices.Equal(checks(got), want) {
		t.Fatalf("findings %v, want %v (CRI settings do not matter without CRI)", checks(got), want)
	}
	if got[0].Severity != SeverityNote {
		t.Errorf("%s severity %v, want note", got[0].Check, got[0].Severity)
	}
}

func TestCheckSetupImports(t *testing.T) {
	dir := t.TempDir()
	main := "version = 2\nimports = [\"conf.d/*.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"
	drop := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  discard_unpacked_layers = true\n"
	if err := os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf.d", "10-eks.toml"), []byte(drop), 0o644); err != nil {
		t.Fatal(err)
	}
	got := CheckSetup(SetupInput{ContainerdConfig: filepath.Join(dir, "config.toml"), HostsDir: "/etc/containerd/certs.d", Version: "1.7.2", Root: noRancher(t)})
	if want := []Check{CheckDiscardUnpacked, CheckCtrHostsDir}; !slices.Equal(checks(got), want) {
		t.Fatalf("findings %v, want %v (the import's discard_unpacked_layers merged, the main config_path kept)", checks(got), want)
	}
}

func TestCheckSetupShadowedByEarlierDirectory(t *testing.T) {
	dir := t.TempDir()
	first, ours := filepath.Join(dir, "containerd-certs.d"), filepath.Join(dir, "docker-certs.d")
	if err := os.MkdirAll(filepath.Join(first, "registry.local_5000_"), 0o755); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.toml")
	body := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"" + first + ":" + ours + "\"\n"
	if err := os.WriteFile(config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	in := SetupInput{ContainerdConfig: config, HostsDir: ours, Version: "1.7.2", Root: noRancher(t), Registries: []string{"docker.io", "registry.local:5000"}}
	got := CheckSetup(in)
	if want := []Check{CheckConfigPathShadowed, CheckCtrHostsDir}; !slices.Equal(checks(got), want) {
		t.Fatalf("findings %v, want %v", checks(got), want)
	}
	if f, _ := findingOf(got, CheckConfigPathShadowed); !strings.Contains(f.Message, filepath.Join(first, "registry.local_5000_")) {
		t.Errorf("shadow finding does not name the directory: %s", f.Message)
	}
	// On 2.1+ the same list is not split at all for CRI pulls.
	in.Version = "2.1.0"
	if got := checks(CheckSetup(in)); !slices.Contains(got, CheckConfigPathList) {
		t.Errorf("2.1 findings %v lack %s", got, CheckConfigPathList)
	}
}

func TestCheckSetupRancher(t *testing.T) {
	tests := []struct {
		name   string
		layout []string // paths created under the root; a trailing / makes a directory
		distro string
	}{
		{"k3s config dir", []string{"etc/rancher/k3s/"}, "k3s"},
		{"rke2 config dir", []string{"etc/rancher/rke2/"}, "rke2"},
		{"k3s generated containerd config", []string{"var/lib/rancher/k3s/agent/etc/containerd/config.toml"}, "k3s"},
		{"rke2 generated containerd config", []string{"var/lib/rancher/rke2/agent/etc/containerd/config.toml"}, "rke2"},
		{"k3s socket", []string{"run/k3s/containerd/containerd.sock"}, "k3s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, p := range tc.layout {
				full := filepath.Join(root, p)
				if strings.HasSuffix(p, "/") {
					if err := os.MkdirAll(full, 0o755); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got := CheckSetup(SetupInput{
				ContainerdConfig: filepath.Join("testdata", "setup", "containerd-2.2-list.toml"), HostsDir: "/etc/containerd/certs.d",
				Version: "2.2.0", Root: root, Mirror: "http://127.0.0.1:5000",
				Registries: []string{"docker.io", "ghcr.io"}, PlainHTTP: []string{"10.0.0.7:5000"},
			})
			if len(got) != 1 || got[0].Check != CheckK3s || got[0].Severity != SeverityBlocking {
				t.Fatalf("findings %+v, want one blocking %s", got, CheckK3s)
			}
			msg := got[0].Message
			if !strings.Contains(msg, "/etc/rancher/"+tc.distro+"/registries.yaml") || !strings.Contains(msg, "--force") {
				t.Errorf("message does not point at %s's registries.yaml and --force:\n%s", tc.distro, msg)
			}
			var reg struct {
				Mirrors map[string]struct {
					Endpoint []string `json:"endpoint"`
				} `json:"mirrors"`
			}
			snippet := msg[strings.Index(msg, "  mirrors:"):strings.LastIndex(msg, "configure writes")]
			if err := yaml.UnmarshalStrict([]byte(snippet), &reg); err != nil {
				t.Fatalf("snippet is not YAML: %v\n%s", err, snippet)
			}
			want := map[string][]string{
				"docker.io":     {"http://127.0.0.1:5000"},
				"ghcr.io":       {"http://127.0.0.1:5000"},
				"10.0.0.7:5000": {"http://127.0.0.1:5000", "http://10.0.0.7:5000"},
			}
			if len(reg.Mirrors) != len(want) {
				t.Fatalf("snippet mirrors %+v, want %v", reg.Mirrors, want)
			}
			for r, eps := range want {
				if !slices.Equal(reg.Mirrors[r].Endpoint, eps) {
					t.Errorf("mirror %s endpoints %v, want %v", r, reg.Mirrors[r].Endpoint, eps)
				}
			}
		})
	}
}

func TestRegistriesYAMLWildcard(t *testing.T) {
	var reg struct {
		Mirrors map[string]struct {
			Endpoint []string `json:"endpoint"`
		} `json:"mirrors"`
	}
	if err := yaml.UnmarshalStrict([]byte(registriesYAML(SetupInput{Mirror: "http://127.0.0.1:5000"})), &reg); err != nil {
		t.Fatal(err)
	}
	if eps := reg.Mirrors["*"].Endpoint; len(reg.Mirrors) != 1 || !slices.Equal(eps, []string{"http://127.0.0.1:5000"}) {
		t.Fatalf("no registries should mirror everything through \"*\": %+v", reg.Mirrors)
	}
}

func TestParseContainerdVersion(t *testing.T) {
	tests := []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"1.6.20~ds1", 1, 6, true},
		{"v2.2.0", 2, 2, true},
		{"2.1.4-k3s1", 2, 1, true},
		{"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", 1, 6, true},
		{"containerd containerd.io v2.0.5 fb4c30d4", 2, 0, true},
		{"", 0, 0, false},
		{"unknown", 0, 0, false},
		{"github.com/containerd/containerd/v2", 0, 0, false},
	}
	for _, tc := range tests {
		v, ok := parseContainerdVersion(tc.in)
		if ok != tc.ok || v.major != tc.major || v.minor != tc.minor {
			t.Errorf("parseContainerdVersion(%q) = %+v, %v; want %d.%d, %v", tc.in, v, ok, tc.major, tc.minor, tc.ok)
		}
	}
}
