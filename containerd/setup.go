package containerd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// DefaultContainerdConfig is where containerd reads its configuration.
const DefaultContainerdConfig = "/etc/containerd/config.toml"

// Severity ranks a Finding.
type Severity int

const (
	// SeverityNote is worth knowing; nothing is wrong.
	SeverityNote Severity = iota
	// SeverityWarning means pulls bypass the mirror or the node cannot
	// seed until the setup is fixed.
	SeverityWarning
	// SeverityBlocking means writing hosts.toml here would be undone or
	// useless (k3s/RKE2): configure does not write unless forced.
	SeverityBlocking
)

func (s Severity) String() string {
	switch s {
	case SeverityNote:
		return "note"
	case SeverityWarning:
		return "warning"
	case SeverityBlocking:
		return "blocking"
	}
	return "severity(" + strconv.Itoa(int(s)) + ")"
}

// Check names what a Finding is about, for callers and tests.
type Check string

const (
	CheckK3s                 Check = "k3s-rke2"
	CheckConfigUnreadable    Check = "config-unreadable"
	CheckNoConfigPath        Check = "no-config-path"
	CheckConfigPathList      Check = "config-path-list"
	CheckLocalPullFallback   Check = "local-pull-fallback"
	CheckTransferConfigPath  Check = "transfer-config-path"
	CheckConfigPathElsewhere Check = "config-path-elsewhere"
	CheckConfigPathShadowed  Check = "config-path-shadowed"
	CheckDeprecatedMirrors   Check = "deprecated-mirrors"
	CheckDiscardUnpacked     Check = "discard-unpacked-layers"
	CheckCtrHostsDir         Check = "ctr-hosts-dir"
	CheckCRIDisabled         Check = "cri-disabled"
	CheckVersionUnknown      Check = "version-unknown"
)

// Finding is one thing about the node's setup that bypasses or cripples the
// mirror, with a plain explanation and the fix.
type Finding struct {
	Severity Severity
	Check    Check
	Message  string
}

// SetupInput is what CheckSetup inspects.
type SetupInput struct {
	// ContainerdConfig is containerd's config file; default
	// DefaultContainerdConfig. A missing file means containerd's defaults.
	ContainerdConfig string
	// HostsDir is the hosts directory dregistry writes, as containerd sees it.
	HostsDir string
	// Version is the containerd version ("1.6.20", "v2.2.0", ...); empty
	// when unknown, and version-specific findings then say so.
	Version string
	// Registries, Mirror and PlainHTTP are what configure is asked to
	// write; they fill the k3s/RKE2 registries.yaml snippet and the
	// shadowing check. Empty Registries means every registry.
	Registries []string
	Mirror     string
	PlainHTTP  []string
	// Root prefixes the fixed paths probed for k3s/RKE2 (/etc/rancher,
	// /var/lib/rancher, /run/k3s), so tests can use a temp dir. Default "/".
	Root string
}

// CheckSetup reports the setups that silently bypass the mirror or keep the
// node from seeding. It reads files and never changes anything.
func CheckSetup(in SetupInput) []Finding {
	if in.ContainerdConfig == "" {
		in.ContainerdConfig = DefaultContainerdConfig
	}
	if in.Root == "" {
		in.Root = "/"
	}
	if f, ok := checkRancher(in); ok {
		return []Finding{f}
	}

	var out []Finding
	ver, known := parseContainerdVersion(in.Version)
	if !known {
		out = append(out, Finding{SeverityNote, CheckVersionUnknown, fmt.Sprintf(
			"the containerd version is unknown (%q), so the findings below cover every version; "+
				"run where containerd's socket is reachable or `containerd --version` works for exact advice", in.Version)})
	}

	cfg, missing, err := loadContainerdConfig(in.ContainerdConfig)
	if err != nil {
		return append(out, Finding{SeverityWarning, CheckConfigUnreadable, fmt.Sprintf(
			"cannot read containerd's config (%v); the config_path and discard_unpacked_layers checks were skipped", err)})
	}
	img := imageSettings(cfg)
	if missing {
		// Without a file the layout follows the running version.
		img.fileVersion = 2
		if known && ver.major >= 2 {
			img.fileVersion = 3
		}
	}
	if img.criDisabled != "" {
		out = append(out, Finding{SeverityNote, CheckCRIDisabled, fmt.Sprintf(
			"%s: disabled_plugins has %q, so there are no CRI (kubelet) pulls on this containerd; "+
				"only clients given the hosts dir use hosts.toml", in.ContainerdConfig, img.criDisabled)})
	} else {
		out = append(out, checkConfigPath(in, img, ver, known, missing)...)
	}
	if img.discard && img.criDisabled == "" {
		out = append(out, Finding{SeverityWarning, CheckDiscardUnpacked, fmt.Sprintf(
			"%s: `%s = true` makes CRI delete layer blobs once they are unpacked, so this node cannot "+
				"seed layers to its peers (pulls through the mirror still work). Set it to false and restart "+
				"containerd to let this node seed.", in.ContainerdConfig, img.discardKey)})
	}
	out = append(out, Finding{SeverityNote, CheckCtrHostsDir, fmt.Sprintf(
		"ctr reads hosts.toml only when told: `ctr images pull --hosts-dir %s ...` (CRI/kubelet pulls read config_path)", in.HostsDir)})
	return out
}

type containerdVersion struct{ major, minor int }

var versionPattern = regexp.MustCompile(`(?:^|\s)v?(\d+)\.(\d+)(?:[.~+\-\s]|$)`)

// parseContainerdVersion reads "1.6.20~ds1", "v2.2.0" or the whole line of
// `containerd --version`.
func parseContainerdVersion(s string) (containerdVersion, bool) {
	m := versionPattern.FindStringSubmatch(s)
	if m == nil {
		return containerdVersion{}, false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return containerdVersion{major, minor}, true
}

func (v containerdVersion) atLeast(major, minor int) bool {
	return v.major > major || v.major == major && v.minor >= minor
}

// imageConfig is the part of containerd's CRI image settings that decides
// whether hosts.toml is read and whether layers are kept.
type imageConfig struct {
	fileVersion   int // 1, 2 or 3 (the config file's `version`)
	configPath    string
	configPathSet bool
	configPathBad string // set when config_path is not a string
	mirrors       bool
	discard       bool
	discardKey    string
	localPull     bool
	// localPullBecause is the first setting that makes containerd 2.2+
	// fall back from the transfer service to local CRI pulls (its
	// CheckLocalImagePullConfigs), which split a config_path list.
	localPullBecause string
	// transferConfigPath is the transfer plugin's own config_path, which
	// CRI pulls never read (2.2 and 2.4 pass the CRI one per pull).
	transferConfigPath string
	criDisabled        string // the disabled_plugins entry that turns CRI pulls off
}

const (
	criV1      = "cri"
	criV2      = "io.containerd.grpc.v1.cri"
	imagesV3   = "io.containerd.cri.v1.images"
	transferV1 = "io.containerd.transfer.v1.local"
	listPaths  = "/etc/containerd/certs.d:/etc/docker/certs.d" // containerd 2.x default
)

// registryKey is the TOML table holding config_path for the file's version.
func (c imageConfig) registryKey() string {
	switch c.fileVersion {
	case 1:
		return `plugins.cri.registry`
	case 2:
		return `plugins."` + criV2 + `".registry`
	}
	return `plugins."` + imagesV3 + `".registry`
}

func imageSettings(cfg map[string]any) imageConfig {
	c := imageConfig{fileVersion: 1}
	if v, ok := cfg["version"].(int64); ok {
		c.fileVersion = int(v)
	}
	plugins, _ := cfg["plugins"].(map[string]any)
	var cri map[string]any
	switch c.fileVersion {
	case 1:
		cri, _ = plugins[criV1].(map[string]any)
	case 2:
		cri, _ = plugins[criV2].(map[string]any)
	}
	images, _ := plugins[imagesV3].(map[string]any)

	r := &settingsReader{c: &c}
	// containerd 2.x migrates the v1/v2 CRI section into the v3 images
	// section, which a v2 file may also carry; the CRI section wins.
	r.read(images, `plugins."`+imagesV3+`".discard_unpacked_layers`)
	if cri != nil {
		key := `plugins."` + criV2 + `".containerd.discard_unpacked_layers`
		if c.fileVersion == 1 {
			key = `plugins.cri.containerd.discard_unpacked_layers`
		}
		r.read(cri, key, "containerd")
	}
	if v, ok := images["use_local_image_pull"].(bool); ok {
		c.localPull = v
	}
	fb := r.fb
	for _, why := range []string{fb.snapshotAnnotations, fb.discard, fb.registry, fb.downloads, fb.syncFs} {
		if why != "" {
			c.localPullBecause = why
			break
		}
	}
	if tr, ok := plugins[transferV1].(map[string]any); ok {
		c.transferConfigPath, _ = tr["config_path"].(string)
	}
	disabled, _ := cfg["disabled_plugins"].([]any)
	for _, d := range disabled {
		if s, _ := d.(string); s == criV1 || s == criV2 || s == imagesV3 {
			c.criDisabled = s
		}
	}
	return c
}

// settingsReader reads one section's settings into c; a later section
// overrides.
type settingsReader struct {
	c *imageConfig
	// The settings containerd 2.2's CheckLocalImagePullConfigs falls back
	// to local pulls for, in its order; a later section overrides.
	fb fallbacks
}

type fallbacks struct{ snapshotAnnotations, discard, registry, downloads, syncFs string }

func (r *settingsReader) read(section map[string]any, discardKey string, discardPath ...string) {
	prefix := strings.TrimSuffix(discardKey, "discard_unpacked_layers")
	if v, ok := section["max_concurrent_downloads"].(int64); ok {
		r.fb.downloads = ""
		if v != 3 {
			r.fb.downloads = fmt.Sprintf("max_concurrent_downloads = %d", v)
		}
	}
	if v, ok := section["image_pull_with_sync_fs"].(bool); ok {
		r.fb.syncFs = ""
		if v {
			r.fb.syncFs = "image_pull_with_sync_fs = true"
		}
	}
	if reg, ok := section["registry"].(map[string]any); ok {
		for _, k := range []string{"mirrors", "configs", "auths"} {
			if m, ok := reg[k].(map[string]any); ok && len(m) > 0 {
				r.fb.registry = "registry." + k
			}
		}
		// An empty config_path (1.6's `config default`) means unset.
		if v, ok := reg["config_path"]; ok && v != "" {
			r.c.configPathSet = true
			if s, ok := v.(string); ok {
				r.c.configPath = s
			} else {
				r.c.configPathBad = fmt.Sprint(v)
			}
		}
		if m, ok := reg["mirrors"].(map[string]any); ok && len(m) > 0 {
			r.c.mirrors = true
		}
	}
	d := section
	for _, k := range discardPath {
		d, _ = d[k].(map[string]any)
	}
	if v, ok := d["discard_unpacked_layers"].(bool); ok {
		r.c.discard, r.c.discardKey = v, discardKey
		r.fb.discard = ""
		if v {
			r.fb.discard = discardKey + " = true"
		}
	}
	if v, ok := d["disable_snapshot_annotations"].(bool); ok {
		r.fb.snapshotAnnotations = ""
		if !v {
			r.fb.snapshotAnnotations = prefix + "disable_snapshot_annotations = false"
		}
	}
}

func checkConfigPath(in SetupInput, img imageConfig, ver containerdVersion, known, missing bool) []Finding {
	where := in.ContainerdConfig
	if missing {
		where = in.ContainerdConfig + " (missing, so containerd runs on its defaults)"
	}
	setIt := fmt.Sprintf("set in %s:\n  [%s]\n    config_path = %q\nThen restart containerd.", in.ContainerdConfig, img.registryKey(), in.HostsDir)
	transfer := !known || ver.atLeast(2, 1) // CRI pulls through the transfer service
	localPullFix := fmt.Sprintf("Or keep the list and set `use_local_image_pull = true` in [plugins.%q].", imagesV3)
	var out []Finding

	if img.configPathBad != "" {
		return append(out, Finding{SeverityWarning, CheckNoConfigPath, fmt.Sprintf(
			"%s: config_path is %s, not a string; containerd will not start with it. Set one directory: %s",
			where, img.configPathBad, setIt)})
	}
	if img.mirrors {
		if img.configPathSet {
			out = append(out, Finding{SeverityWarning, CheckDeprecatedMirrors, fmt.Sprintf(
				"%s: both registry.mirrors and config_path are set; containerd's CRI plugin refuses to start with both. "+
					"Remove the [%s.mirrors] tables.", where, img.registryKey())})
		} else {
			return append(out, Finding{SeverityWarning, CheckDeprecatedMirrors, fmt.Sprintf(
				"%s: the deprecated registry.mirrors tables are set, so CRI never reads hosts.toml. "+
					"Remove the [%s.mirrors] tables and %s", where, img.registryKey(), setIt)})
		}
	}

	configPath, what := img.configPath, "config_path"
	if !img.configPathSet {
		what = "config_path (unset, so containerd's default)"
		switch {
		case known && ver.major < 2:
			return append(out, Finding{SeverityWarning, CheckNoConfigPath, fmt.Sprintf(
				"%s: no config_path, and containerd %d.%d has no default, so CRI (kubelet) pulls never read hosts.toml "+
					"and bypass the mirror. Fix: %s "+
					"(In a containerd 2.x `version = 3` file the table is [plugins.%q.registry].)",
				where, ver.major, ver.minor, setIt, imagesV3)})
		case !known:
			return append(out, Finding{SeverityWarning, CheckNoConfigPath, fmt.Sprintf(
				"%s: no config_path. containerd 1.x then never reads hosts.toml for CRI pulls; 2.0 uses %q; "+
					"2.1+ uses that list but CRI pulls ignore a list. Set one directory: in a `version = 2` file "+
					"[plugins.%q.registry] config_path = %q, in a `version = 3` file [plugins.%q.registry] config_path = %q; "+
					"then restart containerd.",
				where, listPaths, criV2, in.HostsDir, imagesV3, in.HostsDir)})
		}
		configPath = listPaths // containerd 2.x default
	}

	dirs := filepath.SplitList(configPath)
	fallback := known && ver.atLeast(2, 2) && img.localPullBecause != ""
	switch {
	case len(dirs) > 1 && transfer && !img.localPull && fallback:
		out = append(out, Finding{SeverityNote, CheckLocalPullFallback, fmt.Sprintf(
			"%s: %s is the list %q, which the transfer service would take as one directory; "+
				"but `%s` makes CRI fall back to local pulls, which read each directory, so the mirror is used. "+
				"Without that setting it would be bypassed: prefer %s", where, what, configPath, img.localPullBecause, setIt)})
	case len(dirs) > 1 && transfer && !img.localPull:
		out = append(out, Finding{SeverityWarning, CheckConfigPathList, fmt.Sprintf(
			"%s: %s is the list %q. containerd 2.1+ pulls CRI images through the transfer service, "+
				"which takes config_path as one directory, finds none, and bypasses the mirror. "+
				"Fix: %s %s", where, what, configPath, setIt, localPullFix)})
	}
	if img.transferConfigPath != "" && (!known || ver.major >= 2) {
		out = append(out, Finding{SeverityNote, CheckTransferConfigPath, fmt.Sprintf(
			"%s: [plugins.%q] config_path = %q is not read by CRI pulls: containerd 2.x hands the transfer service "+
				"the CRI registry config_path (%q) with each pull, so only [%s] config_path decides whether hosts.toml in %s is used.",
			where, transferV1, img.transferConfigPath, configPath, img.registryKey(), in.HostsDir)})
	}

	hostsDir := filepath.Clean(in.HostsDir)
	idx := slices.IndexFunc(dirs, func(d string) bool { return filepath.Clean(d) == hostsDir })
	if idx < 0 {
		return append(out, Finding{SeverityWarning, CheckConfigPathElsewhere, fmt.Sprintf(
			"%s: containerd reads hosts.toml from %q, not from %s, so the files written there are never used. "+
				"Run configure with --hosts-dir %s, or %s", where, configPath, in.HostsDir, dirs[0], setIt)})
	}
	return append(out, shadowed(in, dirs[:idx], where)...)
}

// shadowed reports the registry directories of the config_path entries
// before dregistry's: with a list, the first directory that has one for a
// registry wins.
func shadowed(in SetupInput, earlierDirs []string, where string) []Finding {
	var out []Finding
	for _, earlier := range earlierDirs {
		for _, reg := range shadowCandidates(in.Registries) {
			for _, d := range hostDirNames(reg) {
				if st, err := os.Stat(filepath.Join(earlier, d)); err == nil && st.IsDir() {
					out = append(out, Finding{SeverityWarning, CheckConfigPathShadowed, fmt.Sprintf(
						"%s: config_path lists %s before %s, and %s exists, so containerd uses it for %s instead of dregistry's file. "+
							"Remove it or put %s first.", where, earlier, in.HostsDir, filepath.Join(earlier, d), reg, in.HostsDir)})
				}
			}
		}
	}
	return out
}

func shadowCandidates(registries []string) []string {
	if len(registries) == 0 {
		return []string{defaultRegistryDir}
	}
	return registries
}

// hostDirNames are the directories containerd looks up for a registry, in
// its order (the _default fallback aside).
func hostDirNames(reg string) []string {
	if i := strings.LastIndex(reg, ":"); i > 0 && !strings.HasSuffix(reg, "]") {
		return []string{reg[:i] + "_" + reg[i+1:] + "_", reg}
	}
	return []string{reg}
}

// loadContainerdConfig parses the config and its imports (merged over it,
// as containerd does). missing reports a config file that does not exist.
func loadContainerdConfig(path string) (cfg map[string]any, missing bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]any{}, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	if err := toml.Unmarshal(b, &cfg); err != nil {
		return nil, false, fmt.Errorf("parse %s: %w", path, err)
	}
	imports, _ := cfg["imports"].([]any)
	for _, imp := range imports {
		pattern, ok := imp.(string)
		if !ok {
			continue
		}
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(filepath.Dir(path), pattern)
		}
		paths := []string{pattern}
		if strings.Contains(pattern, "*") {
			if paths, err = filepath.Glob(pattern); err != nil {
				return nil, false, fmt.Errorf("imports of %s: %w", path, err)
			}
		}
		for _, p := range paths {
			ib, err := os.ReadFile(p)
			if err != nil {
				return nil, false, fmt.Errorf("import of %s: %w", path, err)
			}
			var sub map[string]any
			if err := toml.Unmarshal(ib, &sub); err != nil {
				return nil, false, fmt.Errorf("parse %s: %w", p, err)
			}
			delete(sub, "imports")
			mergeTables(cfg, sub)
		}
	}
	return cfg, false, nil
}

// mergeTables lays src over dst, table by table.
func mergeTables(dst, src map[string]any) {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				mergeTables(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

// checkRancher detects k3s and RKE2, whose embedded containerd has its
// certs.d regenerated from registries.yaml at every start.
func checkRancher(in SetupInput) (Finding, bool) {
	at := func(p string) string { return filepath.Join(in.Root, p) }
	var evidence []string
	distro := ""
	for _, d := range []string{"k3s", "rke2"} {
		if st, err := os.Stat(at("/etc/rancher/" + d)); err == nil && st.IsDir() {
			evidence = append(evidence, "/etc/rancher/"+d)
			if distro == "" {
				distro = d
			}
		}
	}
	if m, _ := filepath.Glob(at("/var/lib/rancher/*/agent/etc/containerd/config.toml")); len(m) > 0 {
		for _, p := range m {
			rel, _ := filepath.Rel(in.Root, p)
			evidence = append(evidence, "/"+rel)
			if distro == "" {
				distro = strings.Split(rel, string(filepath.Separator))[3]
			}
		}
	}
	if _, err := os.Stat(at("/run/k3s/containerd/containerd.sock")); err == nil {
		evidence = append(evidence, "/run/k3s/containerd/containerd.sock")
		if distro == "" {
			distro = "k3s"
		}
	}
	if len(evidence) == 0 {
		return Finding{}, false
	}
	if distro != "rke2" {
		distro = "k3s"
	}
	return Finding{SeverityBlocking, CheckK3s, fmt.Sprintf(
		"this node runs %s (found %s). Its containerd's certs.d is regenerated from registries.yaml at every start, "+
			"so hosts.toml written here would be overwritten. Put this in /etc/rancher/%s/registries.yaml instead "+
			"(%s keeps the upstream as the last endpoint), then restart %s:\n%s"+
			"configure writes hosts.toml anyway only with --force.",
		distro, strings.Join(evidence, ", "), distro, distro, distro, registriesYAML(in))}, true
}

// registriesYAML is the k3s/RKE2 mirror configuration matching what
// configure would write as hosts.toml.
func registriesYAML(in SetupInput) string {
	mirror := in.Mirror
	if mirror == "" {
		mirror = "http://127.0.0.1:5000"
	}
	regs := slices.Clone(in.Registries)
	if len(regs) == 0 {
		regs = []string{"*"}
	}
	for _, r := range in.PlainHTTP {
		if !slices.Contains(regs, r) {
			regs = append(regs, r)
		}
	}
	var b strings.Builder
	b.WriteString("  mirrors:\n")
	for _, r := range regs {
		fmt.Fprintf(&b, "    %q:\n      endpoint:\n        - %q\n", r, mirror)
		if slices.Contains(in.PlainHTTP, r) {
			fmt.Fprintf(&b, "        - %q\n", "http://"+r)
		}
	}
	return b.String()
}
