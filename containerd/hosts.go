package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// defaultRegistryDir is the hosts directory containerd uses for every
// registry that has no directory of its own.
const defaultRegistryDir = "_default"

// BackupSuffix is appended to a hosts.toml that dregistry replaced; --restore
// puts it back.
const BackupSuffix = ".dregistry-backup"

// hostsMarker starts every file dregistry writes: a file that begins with it
// is ours to rewrite or remove without a backup.
const hostsMarker = "# Managed by dregistry (dregistry containerd configure)."

// HostsConfig says which hosts.toml files ConfigureHosts writes.
type HostsConfig struct {
	// HostsDir is containerd's hosts directory (CRI config_path, ctr
	// --hosts-dir), e.g. /etc/containerd/certs.d. Required; created if missing.
	HostsDir string
	// Mirror is the dregistry endpoint, http(s)://host[:port], e.g.
	// http://127.0.0.1:5000. Required. containerd adds ?ns=<registry> itself.
	Mirror string
	// Registries are the registries (host[:port]) to send through the mirror.
	// Empty means every registry, through _default.
	Registries []string
	// Upstreams overrides the upstream server URL of a registry; the default
	// is upstreamServer's rule.
	Upstreams map[string]string
	// PlainHTTP lists registries whose upstream is reached over http://. A
	// _default file cannot say that, so each gets its own directory even
	// when Registries is empty.
	PlainHTTP []string
	// DryRun prints the files and actions to Out and changes nothing.
	DryRun bool
	// Out receives one line per action (and the file contents when DryRun);
	// nil discards.
	Out io.Writer
}

// RestoreConfig says which hosts.toml files RestoreHosts puts back.
type RestoreConfig struct {
	// HostsDir is the directory ConfigureHosts wrote to. Required.
	HostsDir string
	// Registries to restore; empty means every directory of HostsDir that
	// holds a backup or a file dregistry wrote.
	Registries []string
	// DryRun prints the actions to Out and changes nothing.
	DryRun bool
	// Out receives one line per action; nil discards.
	Out io.Writer
}

// Action is what happened (or, in a dry run, would happen) to one hosts.toml.
type Action string

const (
	ActionCreate    Action = "create"    // no file existed
	ActionUpdate    Action = "update"    // a file dregistry wrote earlier is rewritten
	ActionReplace   Action = "replace"   // another file is backed up, then replaced
	ActionUnchanged Action = "unchanged" // the file already says the same
	ActionRestore   Action = "restore"   // the backup is put back
	ActionRemove    Action = "remove"    // dregistry's file goes; there was no original
)

// HostsChange is one file's action.
type HostsChange struct {
	Registry string // host[:port] or _default
	Path     string // the hosts.toml
	Action   Action
	Backup   string // set when a backup is made or restored
	Content  []byte // what is (or would be) written; nil for restore/remove
}

// HostsResult lists the actions in the order they were taken.
type HostsResult struct {
	DryRun  bool
	Changes []HostsChange
}

// ConfigureHosts writes <HostsDir>/<registry>/hosts.toml for each registry:
// the mirror first, the upstream as the last host, so pulls survive dregistry
// being down. Every input is validated and every file read before the first
// write, so a bad input changes nothing.
func ConfigureHosts(cfg HostsConfig) (HostsResult, error) {
	res := HostsResult{DryRun: cfg.DryRun}
	mirror, err := parseMirror(cfg.Mirror)
	if err != nil {
		return res, err
	}
	if cfg.HostsDir == "" {
		return res, errors.New("hosts dir must not be empty")
	}
	registries, err := hostsRegistries(cfg.Registries, cfg.PlainHTTP, mirror)
	if err != nil {
		return res, err
	}
	for reg := range cfg.Upstreams {
		if !slices.Contains(registries, reg) {
			return res, fmt.Errorf("upstream given for registry %q, which is not configured", reg)
		}
	}

	var plans []HostsChange
	for _, reg := range registries {
		server := ""
		if reg != defaultRegistryDir {
			server = upstreamServer(reg, slices.Contains(cfg.PlainHTTP, reg))
			if u, ok := cfg.Upstreams[reg]; ok {
				if server, err = parseUpstream(reg, u); err != nil {
					return res, err
				}
			}
		}
		p, err := planHostsFile(cfg.HostsDir, reg, renderHostsFile(mirror, server))
		if err != nil {
			return res, err
		}
		plans = append(plans, p)
	}

	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	for _, p := range plans {
		if cfg.DryRun {
			printChange(out, p, true)
			res.Changes = append(res.Changes, p)
			continue
		}
		if err := applyHostsChange(p); err != nil {
			return res, err
		}
		printChange(out, p, false)
		res.Changes = append(res.Changes, p)
	}
	return res, nil
}

// RestoreHosts undoes ConfigureHosts: each backup goes back in place, and a
// file dregistry wrote where there was none before is removed.
func RestoreHosts(cfg RestoreConfig) (HostsResult, error) {
	res := HostsResult{DryRun: cfg.DryRun}
	if cfg.HostsDir == "" {
		return res, errors.New("hosts dir must not be empty")
	}
	explicit := len(cfg.Registries) > 0
	registries := cfg.Registries
	if explicit {
		for _, r := range registries {
			if err := validateRegistry(r); err != nil {
				return res, err
			}
		}
	} else {
		entries, err := os.ReadDir(cfg.HostsDir)
		if errors.Is(err, fs.ErrNotExist) {
			return res, nil // never configured: nothing to restore
		}
		if err != nil {
			return res, fmt.Errorf("read hosts dir: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() {
				registries = append(registries, e.Name())
			}
		}
	}

	var plans []HostsChange
	for _, reg := range registries {
		p, ok, err := planRestore(cfg.HostsDir, reg)
		if err != nil {
			return res, err
		}
		if ok {
			plans = append(plans, p)
		} else if explicit {
			plans = append(plans, HostsChange{Registry: reg, Path: p.Path, Action: ActionUnchanged})
		}
	}

	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	for _, p := range plans {
		if !cfg.DryRun {
			if err := applyHostsChange(p); err != nil {
				return res, err
			}
		}
		printChange(out, p, cfg.DryRun)
		res.Changes = append(res.Changes, p)
	}
	return res, nil
}

// upstreamServer is the server line for a registry: Docker Hub's API host
// for docker.io, the registry itself otherwise, over http:// when plainHTTP.
func upstreamServer(registry string, plainHTTP bool) string {
	scheme := "https://"
	if plainHTTP {
		scheme = "http://"
	}
	if registry == "docker.io" {
		return scheme + "registry-1.docker.io"
	}
	return scheme + registry
}

// validateRegistry accepts what containerd looks up as a hosts directory:
// host[:port] (a DNS name, an IPv4 address or a bracketed IPv6 address) or
// _default.
func validateRegistry(r string) error {
	if r == defaultRegistryDir {
		return nil
	}
	if r == "" {
		return errors.New("registry name must not be empty")
	}
	if strings.Contains(r, "://") || strings.ContainsAny(r, "/?#@") {
		return fmt.Errorf("registry %q: give host[:port] only, without scheme, path or credentials", r)
	}
	host, port := r, ""
	if strings.HasPrefix(r, "[") {
		end := strings.Index(r, "]")
		if end < 0 {
			return fmt.Errorf("registry %q: unclosed IPv6 bracket", r)
		}
		host = r[1:end]
		rest := r[end+1:]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return fmt.Errorf("registry %q: %q is not an IPv6 address", r, host)
		}
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return fmt.Errorf("registry %q: unexpected %q after the address", r, rest)
			}
			port = rest[1:]
			if err := validatePort(r, port); err != nil {
				return err
			}
		}
		return nil
	}
	if i := strings.LastIndex(r, ":"); i >= 0 {
		host, port = r[:i], r[i+1:]
		if err := validatePort(r, port); err != nil {
			return err
		}
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if len(host) > 253 {
		return fmt.Errorf("registry %q: host name longer than 253 characters", r)
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("registry %q: %q is not a valid host name", r, host)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("registry %q: host name label %q starts or ends with '-'", r, label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("registry %q: character %q is not allowed in a host name", r, c)
			}
		}
	}
	return nil
}

func validatePort(r, port string) error {
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("registry %q: port %q is not a number from 1 to 65535", r, port)
	}
	return nil
}

// parseMirror returns the mirror URL in the form containerd keys hosts by.
func parseMirror(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("mirror URL must not be empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("mirror URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("mirror URL %q: scheme must be http or https", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("mirror URL %q: want %s://host[:port] without user, query or fragment", raw, u.Scheme)
	}
	if u.Path != "" && u.Path != "/" {
		// containerd appends /v2 to the path; dregistry serves /v2 at the root.
		return nil, fmt.Errorf("mirror URL %q: must have no path (dregistry serves /v2/ at the root)", raw)
	}
	if err := validateRegistry(u.Host); err != nil {
		return nil, fmt.Errorf("mirror URL %q: %w", raw, err)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// parseUpstream checks an explicit upstream server URL for a registry.
func parseUpstream(reg, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("upstream of %s %q: %w", reg, raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("upstream of %s %q: want http(s)://host[:port][/path]", reg, raw)
	}
	return u.String(), nil
}

// hostsRegistries is the list of directories to write, validated and
// deduplicated, in a stable order.
func hostsRegistries(registries, plainHTTP []string, mirror *url.URL) ([]string, error) {
	var out []string
	for _, r := range registries {
		if err := validateRegistry(r); err != nil {
			return nil, err
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		out = append(out, defaultRegistryDir)
	}
	for _, r := range plainHTTP {
		if err := validateRegistry(r); err != nil {
			return nil, fmt.Errorf("plain-http: %w", err)
		}
		if r == defaultRegistryDir {
			return nil, errors.New("plain-http: _default has no upstream of its own; name the registry")
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	for _, r := range out {
		if strings.EqualFold(r, mirror.Host) {
			// containerd would ask the mirror to mirror itself.
			return nil, fmt.Errorf("registry %q is the mirror itself", r)
		}
	}
	return out, nil
}

// registryDir is the directory containerd reads for reg. containerd tries
// <host>_<port>_ before <host:port>, so an existing one of those wins.
func registryDir(hostsDir, reg string) string {
	if i := strings.LastIndex(reg, ":"); i > 0 && !strings.HasSuffix(reg, "]") {
		alt := filepath.Join(hostsDir, reg[:i]+"_"+reg[i+1:]+"_")
		if st, err := os.Stat(alt); err == nil && st.IsDir() {
			return alt
		}
	}
	return filepath.Join(hostsDir, reg)
}

// renderHostsFile is the hosts.toml text. Without a server line containerd
// appends the registry itself as the last host (how _default works).
func renderHostsFile(mirror *url.URL, server string) []byte {
	var b bytes.Buffer
	b.WriteString(hostsMarker + "\n")
	b.WriteString("# The mirror is tried first and the upstream last, so pulls keep working\n")
	b.WriteString("# when dregistry is down. `dregistry containerd configure --restore` undoes this.\n")
	if server != "" {
		fmt.Fprintf(&b, "server = %s\n", tomlString(server))
	} else {
		b.WriteString("# No server line: containerd appends the registry itself as the last host.\n")
	}
	fmt.Fprintf(&b, "\n[host.%s]\n", tomlString(mirror.String()))
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	return b.Bytes()
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func isOurs(content []byte) bool {
	return bytes.HasPrefix(content, []byte(hostsMarker))
}

// readOptional reads a file that may be absent (nil, false, nil).
func readOptional(path string) ([]byte, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	return b, true, nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return true, nil
}

func planHostsFile(hostsDir, reg string, content []byte) (HostsChange, error) {
	dir := registryDir(hostsDir, reg)
	p := HostsChange{Registry: reg, Path: filepath.Join(dir, "hosts.toml"), Content: content}
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return p, fmt.Errorf("%s exists and is not a directory", dir)
	}
	old, found, err := readOptional(p.Path)
	if err != nil {
		return p, err
	}
	switch {
	case !found:
		p.Action = ActionCreate
	case bytes.Equal(old, content):
		p.Action = ActionUnchanged
	case isOurs(old):
		p.Action = ActionUpdate
	default:
		backup := p.Path + BackupSuffix
		taken, err := exists(backup)
		if err != nil {
			return p, err
		}
		if taken {
			return p, fmt.Errorf("%s was changed by someone else and %s already holds an earlier original; "+
				"refusing to replace it without a backup: move one of them away first", p.Path, backup)
		}
		p.Action = ActionReplace
		p.Backup = backup
	}
	return p, nil
}

// planRestore returns ok=false when there is nothing to restore for reg.
func planRestore(hostsDir, reg string) (HostsChange, bool, error) {
	dir := registryDir(hostsDir, reg)
	p := HostsChange{Registry: reg, Path: filepath.Join(dir, "hosts.toml")}
	backup := p.Path + BackupSuffix
	cur, found, err := readOptional(p.Path)
	if err != nil {
		return p, false, err
	}
	hasBackup, err := exists(backup)
	if err != nil {
		return p, false, err
	}
	switch {
	case hasBackup:
		if found && !isOurs(cur) {
			return p, false, fmt.Errorf("%s was changed since dregistry wrote it; left it and %s as they are: "+
				"decide which to keep", p.Path, backup)
		}
		p.Action, p.Backup = ActionRestore, backup
		return p, true, nil
	case found && isOurs(cur):
		p.Action = ActionRemove
		return p, true, nil
	}
	return p, false, nil
}

func applyHostsChange(p HostsChange) error {
	switch p.Action {
	case ActionUnchanged:
		return nil
	case ActionCreate, ActionUpdate:
		return writeFileAtomic(p.Path, p.Content)
	case ActionReplace:
		// A hard link is an atomic copy that fails if the backup exists.
		if err := os.Link(p.Path, p.Backup); err != nil {
			return fmt.Errorf("back up %s: %w", p.Path, err)
		}
		return writeFileAtomic(p.Path, p.Content)
	case ActionRestore:
		if err := os.Rename(p.Backup, p.Path); err != nil {
			return fmt.Errorf("restore %s: %w", p.Path, err)
		}
		return syncDir(filepath.Dir(p.Path))
	case ActionRemove:
		if err := os.Remove(p.Path); err != nil {
			return fmt.Errorf("remove %s: %w", p.Path, err)
		}
		// An empty directory still shadows _default in containerd's lookup.
		if err := os.Remove(filepath.Dir(p.Path)); err != nil && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("remove %s: %w", filepath.Dir(p.Path), err)
		}
		return nil
	}
	return fmt.Errorf("unknown hosts action %q", p.Action)
}

// writeFileAtomic replaces path through a temporary file in the same
// directory, so containerd never reads a half-written hosts.toml.
func writeFileAtomic(path string, content []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	mode := fs.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(dir, ".hosts.toml.*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func printChange(out io.Writer, p HostsChange, dryRun bool) {
	verb := string(p.Action)
	if dryRun && p.Action != ActionUnchanged {
		verb = "would " + verb
	}
	switch {
	case p.Action == ActionReplace:
		fmt.Fprintf(out, "%s %s (original kept as %s)\n", verb, p.Path, p.Backup)
	case p.Action == ActionRestore:
		fmt.Fprintf(out, "%s %s from %s\n", verb, p.Path, p.Backup)
	default:
		fmt.Fprintf(out, "%s %s\n", verb, p.Path)
	}
	if dryRun && p.Content != nil && p.Action != ActionUnchanged {
		fmt.Fprintf(out, "%s", indent(p.Content))
	}
}

func indent(b []byte) string {
	var s strings.Builder
	for _, line := range strings.SplitAfter(string(b), "\n") {
		switch line {
		case "":
		case "\n":
			s.WriteString(line)
		default:
			s.WriteString("    " + line)
		}
	}
	return s.String()
}
