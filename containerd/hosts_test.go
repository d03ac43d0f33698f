package containerd

import (
	"bytes"
	"context"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	dockerconfig "github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/pelletier/go-toml/v2"

	"github.com/dregistry/dregistry/internal/testenv"
)

const testMirror = "http://127.0.0.1:5000"

// hostsFile is the part of hosts.toml dregistry writes, parsed back.
type hostsFile struct {
	Server string `toml:"server"`
	Host   map[string]struct {
		Capabilities []string `toml:"capabilities"`
	} `toml:"host"`
}

func parseHostsFile(t *testing.T, path string) hostsFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f hostsFile
	if err := toml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s is not valid TOML: %v\n%s", path, err, b)
	}
	return f
}

// containerdHosts asks containerd's own hosts.toml loader which hosts it
// tries, in order, for a registry.
func containerdHosts(t *testing.T, hostsDir, registry string) []docker.RegistryHost {
	t.Helper()
	hosts, err := dockerconfig.ConfigureHosts(context.Background(), dockerconfig.HostOptions{
		HostDir: dockerconfig.HostDirFromRoot(hostsDir),
	})(registry)
	if err != nil {
		t.Fatalf("containerd cannot load hosts for %s: %v", registry, err)
	}
	return hosts
}

// snapshot maps every file under dir to its content, to prove nothing changed.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			files[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		files[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func sameSnapshot(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestConfigureHostsRegistryForms(t *testing.T) {
	tests := []struct {
		name       string
		registries []string
		plainHTTP  []string
		upstreams  map[string]string
		dir        string // directory written
		server     string // expected server line
		lookup     string // registry containerd resolves
		lastScheme string
		lastHost   string
	}{
		{name: "default for every registry", dir: "_default", server: "", lookup: "ghcr.io", lastScheme: "https", lastHost: "ghcr.io"},
		{name: "default keeps docker hub last", dir: "_default", server: "", lookup: "docker.io", lastScheme: "https", lastHost: "registry-1.docker.io"},
		{name: "docker hub", registries: []string{"docker.io"}, dir: "docker.io", server: "https://registry-1.docker.io", lookup: "docker.io", lastScheme: "https", lastHost: "registry-1.docker.io"},
		{name: "plain host", registries: []string{"ghcr.io"}, dir: "ghcr.io", server: "https://ghcr.io", lookup: "ghcr.io", lastScheme: "https", lastHost: "ghcr.io"},
		{name: "host and port", registries: []string{"registry.example.com:5443"}, dir: "registry.example.com:5443", server: "https://registry.example.com:5443", lookup: "registry.example.com:5443", lastScheme: "https", lastHost: "registry.example.com:5443"},
		{name: "plain http", registries: []string{"10.0.0.7:5000"}, plainHTTP: []string{"10.0.0.7:5000"}, dir: "10.0.0.7:5000", server: "http://10.0.0.7:5000", lookup: "10.0.0.7:5000", lastScheme: "http", lastHost: "10.0.0.7:5000"},
		{name: "plain http without registries gets its own dir", plainHTTP: []string{"127.0.0.1:5001"}, dir: "127.0.0.1:5001", server: "http://127.0.0.1:5001", lookup: "127.0.0.1:5001", lastScheme: "http", lastHost: "127.0.0.1:5001"},
		{name: "ipv6", registries: []string{"[fd00::7]:5000"}, dir: "[fd00::7]:5000", server: "https://[fd00::7]:5000", lookup: "[fd00::7]:5000", lastScheme: "https", lastHost: "[fd00::7]:5000"},
		{name: "upstream override", registries: []string{"docker.io"}, upstreams: map[string]string{"docker.io": "https://hub-proxy.example.com"}, dir: "docker.io", server: "https://hub-proxy.example.com", lookup: "docker.io", lastScheme: "https", lastHost: "hub-proxy.example.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hostsDir := t.TempDir()
			res, err := ConfigureHosts(HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: tc.registries, PlainHTTP: tc.plainHTTP, Upstreams: tc.upstreams})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(hostsDir, tc.dir, "hosts.toml")
			var found bool
			for _, c := range res.Changes {
				found = found || (c.Path == path && c.Action == ActionCreate)
			}
			if !found {
				t.Fatalf("changes %+v do not create %s", res.Changes, path)
			}

			f := parseHostsFile(t, path)
			if f.Server != tc.server {
				t.Errorf("server = %q, want %q", f.Server, tc.server)
			}
			caps := f.Host[testMirror].Capabilities
			if len(f.Host) != 1 || strings.Join(caps, ",") != "pull,resolve" {
				t.Errorf("hosts = %+v, want only %s with pull,resolve", f.Host, testMirror)
			}

			hosts := containerdHosts(t, hostsDir, tc.lookup)
			if len(hosts) != 2 {
				t.Fatalf("containerd tries %d hosts, want mirror then upstream: %+v", len(hosts), hosts)
			}
			if m := hosts[0]; m.Scheme != "http" || m.Host != "127.0.0.1:5000" || m.Path != "/v2" ||
				m.Capabilities != docker.HostCapabilityPull|docker.HostCapabilityResolve {
				t.Errorf("first host = %s://%s%s caps %b, want the mirror with pull+resolve", m.Scheme, m.Host, m.Path, m.Capabilities)
			}
			if u := hosts[1]; u.Scheme != tc.lastScheme || u.Host != tc.lastHost {
				t.Errorf("last host = %s://%s, want %s://%s", u.Scheme, u.Host, tc.lastScheme, tc.lastHost)
			}
		})
	}
}

func TestConfigureHostsUsesExistingUnderscorePortDir(t *testing.T) {
	// containerd looks up <host>_<port>_ before <host:port>: writing the
	// latter next to the former would be silently ignored.
	hostsDir := t.TempDir()
	alt := filepath.Join(hostsDir, "registry.local_5000_")
	if err := os.Mkdir(alt, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ConfigureHosts(HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: []string{"registry.local:5000"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(alt, "hosts.toml")); err != nil {
		t.Fatalf("hosts.toml not written into %s: %v", alt, err)
	}
	if _, err := os.Stat(filepath.Join(hostsDir, "registry.local:5000")); err == nil {
		t.Fatal("also wrote the shadowed registry.local:5000 directory")
	}
	if h := containerdHosts(t, hostsDir, "registry.local:5000"); len(h) != 2 || h[0].Host != "127.0.0.1:5000" {
		t.Fatalf("containerd does not use the mirror first: %+v", h)
	}
}

func TestConfigureHostsIdempotent(t *testing.T) {
	hostsDir := t.TempDir()
	cfg := HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: []string{"docker.io", "ghcr.io"}}
	if _, err := ConfigureHosts(cfg); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(hostsDir, "docker.io", "hosts.toml")
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	snap := snapshot(t, hostsDir)

	var out bytes.Buffer
	cfg.Out = &out
	res, err := ConfigureHosts(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Changes {
		if c.Action != ActionUnchanged {
			t.Errorf("second run: %s %s, want unchanged", c.Action, c.Path)
		}
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("unchanged file was rewritten (new inode)")
	}
	if !sameSnapshot(snap, snapshot(t, hostsDir)) {
		t.Error("second run changed the hosts dir")
	}
	if !strings.Contains(out.String(), "unchanged "+path) {
		t.Errorf("output does not report unchanged: %q", out.String())
	}
}

func TestConfigureHostsBackupAndRestore(t *testing.T) {
	hostsDir := t.TempDir()
	original := "server = \"https://registry-1.docker.io\"\n\n[host.\"https://corp-mirror.example.com\"]\n  capabilities = [\"pull\"]\n"
	dir := filepath.Join(hostsDir, "docker.io")
	path := filepath.Join(dir, "hosts.toml")
	backup := path + BackupSuffix
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(original), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: []string{"docker.io", "quay.io"}}

	res, err := ConfigureHosts(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Changes[0]; got.Action != ActionReplace || got.Backup != backup {
		t.Fatalf("first change = %+v, want replace with backup %s", got, backup)
	}
	if b, _ := os.ReadFile(backup); string(b) != original {
		t.Fatalf("backup holds %q, want the original", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("replaced file mode %v, want the original 0600 kept", st.Mode().Perm())
	}

	// Reconfiguring with another mirror rewrites our file and keeps the
	// first backup: the original is never lost.
	cfg.Mirror = "http://127.0.0.1:5001"
	res, err = ConfigureHosts(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Changes[0]; got.Action != ActionUpdate {
		t.Fatalf("reconfigure = %+v, want update", got)
	}
	if f := parseHostsFile(t, path); f.Host["http://127.0.0.1:5001"].Capabilities == nil {
		t.Fatalf("reconfigure did not switch the mirror: %+v", f)
	}
	if b, _ := os.ReadFile(backup); string(b) != original {
		t.Fatalf("backup overwritten with %q", b)
	}

	var out bytes.Buffer
	res, err = RestoreHosts(RestoreConfig{HostsDir: hostsDir, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != original {
		t.Fatalf("restored file = %q, want the original", b)
	}
	if _, err := os.Stat(backup); err == nil {
		t.Error("backup left behind after restore")
	}
	if _, err := os.Stat(filepath.Join(hostsDir, "quay.io")); err == nil {
		t.Error("quay.io had no original but its directory is still there (it would shadow _default)")
	}
	if !strings.Contains(out.String(), "restore "+path) || !strings.Contains(out.String(), "remove "+filepath.Join(hostsDir, "quay.io", "hosts.toml")) {
		t.Errorf("restore output = %q", out.String())
	}

	// A second restore has nothing left to do, nor has one of a hosts dir
	// that never existed.
	for _, dir := range []string{hostsDir, filepath.Join(hostsDir, "absent")} {
		res, err = RestoreHosts(RestoreConfig{HostsDir: dir})
		if err != nil || len(res.Changes) != 0 {
			t.Fatalf("restore of %s = %+v, %v; want nothing", dir, res.Changes, err)
		}
	}
}

func TestRestoreHostsKeepsUnrelatedFiles(t *testing.T) {
	hostsDir := t.TempDir()
	foreign := filepath.Join(hostsDir, "internal.example.com", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(foreign), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(foreign, []byte("server = \"https://internal.example.com\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A registry dir with certificates: our file goes, the dir and certs stay.
	certDir := filepath.Join(hostsDir, "ghcr.io")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), []byte("cert"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ConfigureHosts(HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: []string{"ghcr.io"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreHosts(RestoreConfig{HostsDir: hostsDir}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"./": "", "internal.example.com/": "", "internal.example.com/hosts.toml": "server = \"https://internal.example.com\"\n",
		"ghcr.io/": "", "ghcr.io/ca.crt": "cert",
	}
	if got := snapshot(t, hostsDir); !sameSnapshot(got, want) {
		t.Fatalf("after restore: %v, want %v", got, want)
	}
}

func TestRestoreHostsRefusesEditedFile(t *testing.T) {
	hostsDir := t.TempDir()
	path := filepath.Join(hostsDir, "docker.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("# original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ConfigureHosts(HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: []string{"docker.io"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("# edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := snapshot(t, hostsDir)
	_, err := RestoreHosts(RestoreConfig{HostsDir: hostsDir, Registries: []string{"docker.io"}})
	if err == nil || !strings.Contains(err.Error(), "changed since dregistry wrote it") {
		t.Fatalf("restore over an edited file: err = %v", err)
	}
	if !sameSnapshot(snap, snapshot(t, hostsDir)) {
		t.Fatal("refused restore changed files")
	}
	// Configuring again must not replace the edit: the backup slot is taken.
	_, err = ConfigureHosts(HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: []string{"docker.io"}})
	if err == nil || !strings.Contains(err.Error(), "already holds an earlier original") {
		t.Fatalf("configure over an edited file with a backup: err = %v", err)
	}
	if !sameSnapshot(snap, snapshot(t, hostsDir)) {
		t.Fatal("refused configure changed files")
	}
}

func TestConfigureHostsDryRunWritesNothing(t *testing.T) {
	hostsDir := t.TempDir()
	existing := filepath.Join(hostsDir, "docker.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(existing), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(existing, []byte("# someone's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := snapshot(t, hostsDir)
	var out bytes.Buffer
	res, err := ConfigureHosts(HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: []string{"docker.io", "ghcr.io"}, DryRun: true, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if !sameSnapshot(snap, snapshot(t, hostsDir)) {
		t.Fatal("dry run changed the hosts dir")
	}
	if !res.DryRun || len(res.Changes) != 2 || res.Changes[0].Action != ActionReplace || res.Changes[1].Action != ActionCreate {
		t.Fatalf("dry run result = %+v", res)
	}
	text := out.String()
	for _, want := range []string{
		"would replace " + existing + " (original kept as " + existing + BackupSuffix + ")",
		"would create " + filepath.Join(hostsDir, "ghcr.io", "hosts.toml"),
		`server = "https://registry-1.docker.io"`,
		`[host."http://127.0.0.1:5000"]`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, text)
		}
	}

	// A dry run of restore changes nothing either.
	if _, err := ConfigureHosts(HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: []string{"docker.io"}}); err != nil {
		t.Fatal(err)
	}
	snap = snapshot(t, hostsDir)
	res, err = RestoreHosts(RestoreConfig{HostsDir: hostsDir, DryRun: true})
	if err != nil || len(res.Changes) != 1 || res.Changes[0].Action != ActionRestore {
		t.Fatalf("restore dry run = %+v, %v", res, err)
	}
	if !sameSnapshot(snap, snapshot(t, hostsDir)) {
		t.Fatal("restore dry run changed the hosts dir")
	}
}

func TestConfigureHostsRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		cfg  HostsConfig
		want string
	}{
		{"no mirror", HostsConfig{Registries: []string{"docker.io"}}, "mirror URL must not be empty"},
		{"mirror without scheme", HostsConfig{Mirror: "127.0.0.1:5000"}, "mirror URL"},
		{"mirror ftp", HostsConfig{Mirror: "ftp://127.0.0.1:5000"}, "scheme must be http or https"},
		{"mirror without host", HostsConfig{Mirror: "http://"}, "without user, query or fragment"},
		{"mirror with path", HostsConfig{Mirror: "http://127.0.0.1:5000/v2"}, "must have no path"},
		{"mirror with credentials", HostsConfig{Mirror: "http://u:p@127.0.0.1:5000"}, "without user"},
		{"mirror with query", HostsConfig{Mirror: "http://127.0.0.1:5000?ns=x"}, "without user, query"},
		{"mirror bad port", HostsConfig{Mirror: "http://127.0.0.1:99999"}, "port"},
		{"registry with scheme", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "https://ghcr.io"}}, "without scheme"},
		{"registry with path", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "docker.io/library"}}, "without scheme, path"},
		{"registry empty", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", ""}}, "must not be empty"},
		{"registry bad label", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "-x.io"}}, "starts or ends with '-'"},
		{"registry empty label", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "a..io"}}, "not a valid host name"},
		{"registry bad char", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "a_b.io"}}, "not allowed"},
		{"registry port zero", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "r.io:0"}}, "port"},
		{"registry port text", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "r.io:http"}}, "port"},
		{"registry port leading zero", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "r.io:05000"}}, "port"},
		{"registry open bracket", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "[::1:5000"}}, "unclosed"},
		{"registry v4 in brackets", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "[10.0.0.1]:5000"}}, "not an IPv6"},
		{"registry is the mirror", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io", "127.0.0.1:5000"}}, "is the mirror itself"},
		{"plain http default", HostsConfig{Mirror: testMirror, PlainHTTP: []string{"_default"}}, "name the registry"},
		{"plain http bad", HostsConfig{Mirror: testMirror, PlainHTTP: []string{"http://r.io"}}, "plain-http"},
		{"upstream for unknown registry", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io"}, Upstreams: map[string]string{"quay.io": "https://q"}}, "not configured"},
		{"upstream bad url", HostsConfig{Mirror: testMirror, Registries: []string{"docker.io"}, Upstreams: map[string]string{"docker.io": "hub.example.com"}}, "want http(s)://"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hostsDir := t.TempDir()
			snap := snapshot(t, hostsDir)
			tc.cfg.HostsDir = hostsDir
			_, err := ConfigureHosts(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if !sameSnapshot(snap, snapshot(t, hostsDir)) {
				t.Fatal("rejected input changed the hosts dir")
			}
		})
	}
}

func TestConfigureHostsRejectsFileInPlaceOfDir(t *testing.T) {
	hostsDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostsDir, "ghcr.io"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := snapshot(t, hostsDir)
	_, err := ConfigureHosts(HostsConfig{HostsDir: hostsDir, Mirror: testMirror, Registries: []string{"docker.io", "ghcr.io"}})
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("err = %v", err)
	}
	if !sameSnapshot(snap, snapshot(t, hostsDir)) {
		t.Fatal("docker.io was written although ghcr.io failed: partial write")
	}
}

func TestTOMLStringEscapes(t *testing.T) {
	for _, s := range []string{`plain`, `with "quotes"`, `back\slash`, "tab\tnew\nline\x7f"} {
		var v struct{ S string }
		if err := toml.Unmarshal([]byte("S = "+tomlString(s)), &v); err != nil || v.S != s {
			t.Errorf("tomlString(%q) = %s parses to %q, %v", s, tomlString(s), v.S, err)
		}
	}
}

// recordingMirror is a stand-in for dregistry: it forwards every request to
// the upstream under its own User-Agent and records what containerd asked.
type recordingMirror struct {
	srv *http.Server
	ln  net.Listener
	mu  sync.Mutex
	got []*url.URL
}

func startRecordingMirror(t *testing.T, addr, upstream string) *recordingMirror {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("mirror listen: %v", err)
	}
	m := &recordingMirror{ln: ln}
	proxy := httputil.NewSingleHostReverseProxy(target)
	m.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.mu.Lock()
			m.got = append(m.got, r.URL)
			m.mu.Unlock()
			r.Header.Set("User-Agent", "dregistry-hosts-test-mirror")
			proxy.ServeHTTP(w, r)
		}),
	}
	go m.srv.Serve(ln)
	t.Cleanup(m.stop)
	return m
}

func (m *recordingMirror) stop() { m.srv.Close() }

func (m *recordingMirror) requests() []*url.URL {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.got)
}

// TestRealCtrPullsThroughMirrorThenUpstream runs containerd 1.6's own ctr
// against the hosts.toml files ConfigureHosts writes: the mirror is asked
// first (with ?ns=<registry>), and with the mirror down the upstream, the
// last host, still serves the pull.
func TestRealCtrPullsThroughMirrorThenUpstream(t *testing.T) {
	ctd := testenv.StartContainerd(t, "")
	up := testenv.StartRegistry(t, testenv.LoopbackIP(21)+":5500")
	mirrorAddr := testenv.LoopbackIP(22) + ":5000"
	mirror := startRecordingMirror(t, mirrorAddr, up.URL())
	for _, tag := range []string{"named", "default", "fallback"} {
		testenv.PushImage(t, up, "hosts-test", tag, 2048)
	}

	pull := func(hostsDir, tag string) {
		t.Helper()
		if out, err := ctd.Ctr(t, "images", "pull", "--hosts-dir", hostsDir, up.Addr+"/hosts-test:"+tag); err != nil {
			t.Fatalf("ctr pull %s: %v\n%s\ncontainerd log:\n%s", tag, err, out, ctd.LogTail())
		}
	}
	containerdAskedUpstream := func(tag string) bool {
		for _, q := range testenv.FromContainerd(up.Requests(t)) {
			if q.Path == "/v2/hosts-test/manifests/"+tag {
				return true
			}
		}
		return false
	}
	mirrorSaw := func(tag string) {
		t.Helper()
		for _, u := range mirror.requests() {
			if u.Path == "/v2/hosts-test/manifests/"+tag {
				if ns := u.Query().Get("ns"); ns != up.Addr {
					t.Errorf("mirror got %s with ns=%q, want ns=%s", u, ns, up.Addr)
				}
				return
			}
		}
		t.Errorf("mirror never asked for manifest %s; it got %v", tag, mirror.requests())
	}

	// A directory named for the registry, upstream over plain HTTP.
	named := t.TempDir()
	if _, err := ConfigureHosts(HostsConfig{HostsDir: named, Mirror: "http://" + mirrorAddr, Registries: []string{up.Addr}, PlainHTTP: []string{up.Addr}}); err != nil {
		t.Fatal(err)
	}
	pull(named, "named")
	mirrorSaw("named")
	if containerdAskedUpstream("named") {
		t.Error("containerd went to the upstream itself although the mirror answered")
	}

	// _default: no server line, containerd appends the registry itself.
	def := t.TempDir()
	if _, err := ConfigureHosts(HostsConfig{HostsDir: def, Mirror: "http://" + mirrorAddr}); err != nil {
		t.Fatal(err)
	}
	pull(def, "default")
	mirrorSaw("default")
	if containerdAskedUpstream("default") {
		t.Error("containerd went to the upstream itself although the mirror answered")
	}

	// dregistry down: the pull must still succeed from the upstream.
	mirror.stop()
	pull(def, "fallback")
	if !containerdAskedUpstream("fallback") {
		t.Error("with the mirror down, containerd did not fall back to the upstream")
	}
}
