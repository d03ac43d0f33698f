package main

import (
	"bufio"
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"
)

// The files in deploy/ pass arguments to this binary; these tests run them
// through the real flag parsers, so a renamed or misspelled flag fails here
// instead of on a node.
const (
	exampleConfig = "../../deploy/systemd/config.yaml"
	systemdUnit   = "../../deploy/systemd/dregistry.service"
	plainManifest = "../../deploy/manifests/dregistry.yaml"
)

// parseCommand runs the flag handling of cmd, or of the subcommand args
// name, on args, with check as the action.
func parseCommand(t *testing.T, cmd *cli.Command, args []string, check func(*cli.Context) error) error {
	t.Helper()
	leaf := cmd
	for _, a := range args[1:] {
		i := slices.IndexFunc(leaf.Subcommands, func(s *cli.Command) bool { return s.Name == a })
		if i < 0 {
			break
		}
		leaf = leaf.Subcommands[i]
	}
	leaf.Action = check
	app := &cli.App{Name: "dregistry", Commands: []*cli.Command{cmd}, Writer: &bytes.Buffer{}, ErrWriter: &bytes.Buffer{}}
	return app.Run(append([]string{"dregistry"}, args...))
}

func TestExampleConfigParses(t *testing.T) {
	raw, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(raw, &keys); err != nil {
		t.Fatalf("%s: %v", exampleConfig, err)
	}
	var flagNames []string
	for _, f := range daemonFlags() {
		flagNames = append(flagNames, f.Names()[0])
	}
	for k := range keys {
		if !slices.Contains(flagNames, k) || k == "config" {
			t.Errorf("%s: key %q is no daemon flag (the daemon would ignore it)", exampleConfig, k)
		}
	}

	var cfg daemonConfig
	err = parseCommand(t, daemonCommand(), []string{"daemon", "--config", exampleConfig, "--advertise-addr", "192.0.2.10"},
		func(c *cli.Context) error {
			for k, v := range keys {
				// An empty list sets nothing, which is what it means.
				if list, ok := v.([]any); ok && len(list) == 0 {
					continue
				}
				if !c.IsSet(k) {
					t.Errorf("%s: key %q was not applied", exampleConfig, k)
				}
			}
			var err error
			cfg, err = parseDaemonConfig(c)
			return err
		})
	if err != nil {
		t.Fatalf("%s does not parse: %v", exampleConfig, err)
	}
	if cfg.HTTPAddr != ":5000" || cfg.ClusterKeyFile != "/etc/dregistry/cluster.key" || cfg.DataDir != "/var/lib/dregistry" ||
		cfg.MaxConns != 50 || cfg.Egress || len(cfg.Join) != 0 || cfg.LogLevel.String() != "INFO" {
		t.Errorf("%s parsed as %+v", exampleConfig, cfg)
	}
}

// unitCommands returns the dregistry command lines of the unit's Exec lines.
func unitCommands(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), "=")
		if !ok || !strings.HasPrefix(key, "Exec") {
			continue
		}
		words := strings.Fields(strings.TrimLeft(value, "+-!@:"))
		if len(words) > 1 && words[0] == "/usr/local/bin/dregistry" {
			out[strings.Join(words[1:3], " ")] = words[1:]
		}
	}
	return out
}

func TestSystemdUnitParses(t *testing.T) {
	cmds := unitCommands(t)
	daemon, ok := cmds["daemon --config"]
	if !ok || !slices.Equal(daemon, []string{"daemon", "--config", "/etc/dregistry/config.yaml"}) {
		t.Fatalf("%s: ExecStart %q, want dregistry daemon --config /etc/dregistry/config.yaml", systemdUnit, daemon)
	}
	var cfg daemonConfig
	err := parseCommand(t, daemonCommand(), []string{"daemon", "--config", exampleConfig, "--advertise-addr", "192.0.2.10"},
		func(c *cli.Context) error {
			var err error
			cfg, err = parseDaemonConfig(c)
			return err
		})
	if err != nil {
		t.Fatal(err)
	}

	configure, ok := cmds["containerd configure"]
	if !ok {
		t.Fatalf("%s: no ExecStartPre running dregistry containerd configure", systemdUnit)
	}
	err = parseCommand(t, containerdCommand(), configure, func(c *cli.Context) error {
		if c.NArg() > 0 {
			t.Errorf("configure gets stray arguments %q", c.Args().Slice())
		}
		// containerd must be sent to the port the daemon listens on.
		_, port, _ := strings.Cut(cfg.HTTPAddr, ":")
		if want := "http://127.0.0.1:" + port; c.String("mirror") != want {
			t.Errorf("configure --mirror %q, the daemon's http-addr is %q", c.String("mirror"), cfg.HTTPAddr)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: configure line %q: %v", systemdUnit, configure, err)
	}
}

// podContainers is the part of a rendered DaemonSet these tests read.
type podContainers struct {
	Kind     string
	Metadata struct{ Name string }
	Spec     struct {
		Template struct {
			Spec struct {
				InitContainers []containerArgs `json:"initContainers"`
				Containers     []containerArgs
			}
		}
	}
}

type containerArgs struct {
	Name    string
	Command []string
	Args    []string
}

func TestPlainManifestArgsParse(t *testing.T) {
	// Kubernetes expands $(VAR) from the container's env; these stand in
	// for the downward API values.
	downwardAPI := strings.NewReplacer("$(HOST_IP)", "192.0.2.10", "$(NODE_NAME)", "node-1")
	raw, err := os.ReadFile(plainManifest)
	if err != nil {
		t.Fatal(err)
	}
	var daemonSets int
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var obj podContainers
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%s: %v", plainManifest, err)
		}
		if obj.Kind != "DaemonSet" {
			continue
		}
		daemonSets++
		spec := obj.Spec.Template.Spec
		for _, c := range append(spec.InitContainers, spec.Containers...) {
			if !slices.Equal(c.Command, []string{"dregistry"}) || len(c.Args) == 0 {
				t.Errorf("%s container %s: command %q args %q", obj.Metadata.Name, c.Name, c.Command, c.Args)
				continue
			}
			args := make([]string, len(c.Args))
			for i, a := range c.Args {
				args[i] = downwardAPI.Replace(a)
			}
			var cmd *cli.Command
			check := func(c *cli.Context) error { return nil }
			switch args[0] {
			case "daemon":
				cmd = daemonCommand()
				check = func(c *cli.Context) error { _, err := parseDaemonConfig(c); return err }
			case "containerd":
				cmd = containerdCommand()
			default:
				t.Errorf("%s container %s runs %q", obj.Metadata.Name, c.Name, args[0])
				continue
			}
			if err := parseCommand(t, cmd, args, check); err != nil {
				t.Errorf("%s container %s: %q: %v", obj.Metadata.Name, c.Name, args, err)
			}
		}
	}
	if daemonSets == 0 {
		t.Fatalf("%s has no DaemonSet", plainManifest)
	}
}

// deployFlagExceptions are daemon flags the deploy files leave out on
// purpose, each with the reason.
var deployFlagExceptions = map[string]string{
	"config":          "the file itself: the unit passes it, the chart passes flags",
	"insecure-gossip": "the deploy files always run with a cluster key",
}

// Every daemon flag is in each deploy file that configures the daemon: a
// key (set, or commented out with its default) in the systemd example
// config, and an argument in the Helm chart's DaemonSet template and the
// manifest rendered from it (unless the chart leaves it out by default).
// A flag added to the daemon and forgotten in deploy/ fails here.
func TestDeployFilesCarryEveryDaemonFlag(t *testing.T) {
	const (
		chartTemplate = "../../deploy/helm/dregistry/templates/_daemonset.tpl"
		chartValues   = "../../deploy/helm/dregistry/values.yaml"
	)
	read := func(name string) string {
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	config, tpl, values, manifest := read(exampleConfig), read(chartTemplate), read(chartValues), read(plainManifest)
	// Values the template reads ($v.daemon.x, $v.cluster.x, ...): each
	// must be in values.yaml, or it would render empty.
	for _, line := range strings.Split(tpl, "\n") {
		_, arg, ok := strings.Cut(line, "- --")
		if !ok {
			continue
		}
		for _, ref := range valueRefs(arg) {
			if !strings.Contains(values, "\n  "+ref+":") && !strings.Contains(values, "\n"+ref+":") {
				t.Errorf("%s: %q reads .Values...%s, which %s does not define", chartTemplate, strings.TrimSpace(line), ref, chartValues)
			}
		}
	}
	for _, f := range daemonFlags() {
		name := f.Names()[0]
		if _, ok := deployFlagExceptions[name]; ok {
			continue
		}
		if !hasConfigKey(config, name) {
			t.Errorf("%s has no key %q (set it, or comment it out with its default)", exampleConfig, name)
		}
		if !strings.Contains(tpl, "- --"+name+"=") && !strings.Contains(tpl, "- --"+name+"\n") {
			t.Errorf("%s passes no --%s", chartTemplate, name)
		}
		// The chart renders some flags only when set (cacheSize, lists);
		// those it renders always must be in the generated manifest.
		if renderedAlways(tpl, name) && !strings.Contains(manifest, "- --"+name) {
			t.Errorf("%s has no --%s: run go generate in deploy/", plainManifest, name)
		}
	}
}

// hasConfigKey reports whether the YAML text has key at the top level,
// or commented out there ("# key: value").
func hasConfigKey(text, key string) bool {
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ")
		if strings.HasPrefix(line, key+":") {
			return true
		}
	}
	return false
}

// renderedAlways reports whether the template's argument for --name is
// outside any {{- with }} or {{- if }} block.
func renderedAlways(tpl, name string) bool {
	depth := 0
	for _, line := range strings.Split(tpl, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "{{- with") || strings.HasPrefix(trimmed, "{{- if") || strings.HasPrefix(trimmed, "{{- range"):
			depth++
		case strings.HasPrefix(trimmed, "{{- end"):
			depth--
		case strings.HasPrefix(trimmed, "- --"+name+"=") || trimmed == "- --"+name:
			return depth == 0
		}
	}
	return false
}

// valueRefs returns the last names of the $v.a.b references in s.
func valueRefs(s string) []string {
	var out []string
	for {
		_, rest, ok := strings.Cut(s, "$v.")
		if !ok {
			return out
		}
		end := strings.IndexFunc(rest, func(r rune) bool {
			return r != '.' && r != '_' && !('a' <= r && r <= 'z') && !('A' <= r && r <= 'Z') && !('0' <= r && r <= '9')
		})
		if end < 0 {
			end = len(rest)
		}
		path := strings.Split(rest[:end], ".")
		out = append(out, path[len(path)-1])
		s = rest[end:]
	}
}
