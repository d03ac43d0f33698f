package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	containerdclient "github.com/containerd/containerd/v2/client"
	"github.com/urfave/cli/v2"

	"github.com/dregistry/dregistry/containerd"
)

// versionProbeTimeout bounds each way of asking containerd its version.
const versionProbeTimeout = 3 * time.Second

// containerdCommand groups the commands that set up the node's containerd.
func containerdCommand() *cli.Command {
	return &cli.Command{
		Name:        "containerd",
		Usage:       "set up this node's containerd to pull through dregistry",
		Subcommands: []*cli.Command{configureCommand()},
	}
}

func configureCommand() *cli.Command {
	return &cli.Command{
		Name:  "configure",
		Usage: "write hosts.toml so containerd pulls through dregistry, and check containerd's setup",
		Description: "For each --registry (or _default when none is named) writes <hosts-dir>/<registry>/hosts.toml\n" +
			"with the mirror first and the upstream last, so pulls survive dregistry being down.\n" +
			"Idempotent; a file it replaces is kept as hosts.toml" + containerd.BackupSuffix + ";\n" +
			"--restore puts those back. It also reports setups that bypass the mirror or keep\n" +
			"the node from seeding (config_path missing, listed or elsewhere, discard_unpacked_layers,\n" +
			"k3s/RKE2); those are warnings and do not change the exit status.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "hosts-dir", Value: "/etc/containerd/certs.d", Usage: "containerd's hosts directory (CRI config_path, ctr --hosts-dir)"},
			&cli.StringFlag{Name: "mirror", Usage: "dregistry's mirror endpoint, e.g. http://127.0.0.1:5000 (required unless --restore)"},
			&cli.StringSliceFlag{Name: "registry", Usage: "registry (host[:port]) to pull through dregistry; repeat or comma-separate (default: every registry, via _default)"},
			&cli.StringSliceFlag{Name: "plain-http", Usage: "registry whose upstream is reached over http://; gets its own hosts.toml"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the files and actions, change nothing"},
			&cli.BoolFlag{Name: "restore", Usage: "put back the files configure replaced and remove the ones it created (the named registries, or all)"},
			&cli.StringFlag{Name: "containerd-config", Value: containerd.DefaultContainerdConfig, Usage: "containerd's config file, checked for settings that bypass the mirror"},
			&cli.StringFlag{Name: "containerd-address", Value: containerd.DefaultAddress, Usage: "containerd's socket, asked for its version"},
			&cli.StringFlag{Name: "containerd-version", Usage: "containerd's version, instead of asking the socket or running containerd --version"},
			&cli.BoolFlag{Name: "force", Usage: "write hosts.toml even on k3s/RKE2, where registries.yaml regenerates it"},
			&cli.StringFlag{Name: "probe-root", Value: "/", Hidden: true, Usage: "prefix of the k3s/RKE2 paths probed (for tests)"},
		},
		Action: runConfigure,
	}
}

func runConfigure(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (registries are given with --registry)", c.Args().Slice())
	}
	registries := splitList(c.StringSlice("registry"))
	plainHTTP := splitList(c.StringSlice("plain-http"))
	hostsDir := c.String("hosts-dir")
	out, errOut := c.App.Writer, c.App.ErrWriter

	if c.Bool("restore") {
		restore := registries
		if len(restore) > 0 {
			for _, r := range plainHTTP {
				if !slices.Contains(restore, r) {
					restore = append(restore, r)
				}
			}
		}
		res, err := containerd.RestoreHosts(containerd.RestoreConfig{HostsDir: hostsDir, Registries: restore, DryRun: c.Bool("dry-run"), Out: out})
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if len(res.Changes) == 0 {
			fmt.Fprintf(out, "nothing to restore in %s\n", hostsDir)
		}
		return nil
	}

	if c.String("mirror") == "" {
		return errors.New("--mirror is required (dregistry's endpoint, e.g. http://127.0.0.1:5000)")
	}
	hosts := containerd.HostsConfig{
		HostsDir: hostsDir, Mirror: c.String("mirror"), Registries: registries, PlainHTTP: plainHTTP,
	}
	// A dry pass validates every input and reads every file before the
	// setup checks run, so bad input fails fast and writes nothing.
	plan := hosts
	plan.DryRun = true
	if _, err := containerd.ConfigureHosts(plan); err != nil {
		return err
	}

	version := c.String("containerd-version")
	if version == "" {
		version = detectContainerdVersion(c.Context, c.String("containerd-address"))
	}
	findings := containerd.CheckSetup(containerd.SetupInput{
		ContainerdConfig: c.String("containerd-config"), HostsDir: hostsDir, Version: version,
		Registries: registries, Mirror: hosts.Mirror, PlainHTTP: plainHTTP, Root: c.String("probe-root"),
	})
	blocked := false
	for _, f := range findings {
		fmt.Fprintf(errOut, "%s [%s]: %s\n", f.Severity, f.Check, f.Message)
		blocked = blocked || f.Severity == containerd.SeverityBlocking
	}
	if blocked && !c.Bool("force") {
		return errors.New("hosts.toml not written: this node's containerd is managed by k3s/RKE2; " +
			"use the registries.yaml snippet above, or --force to write anyway")
	}

	hosts.DryRun, hosts.Out = c.Bool("dry-run"), out
	if _, err := containerd.ConfigureHosts(hosts); err != nil {
		return err
	}
	return nil
}

// detectContainerdVersion asks the running containerd, then the installed
// binary; "" when neither answers (CheckSetup then covers every version).
func detectContainerdVersion(ctx context.Context, address string) string {
	if v, err := serverVersion(ctx, address); err == nil {
		return v
	}
	if v, err := binaryVersion(ctx); err == nil {
		return v
	}
	return ""
}

func serverVersion(ctx context.Context, address string) (string, error) {
	// The client connects lazily; a missing socket would only fail later.
	if _, err := os.Stat(address); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, versionProbeTimeout)
	defer cancel()
	client, err := containerdclient.New(address, containerdclient.WithTimeout(versionProbeTimeout))
	if err != nil {
		return "", fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	defer client.Close()
	v, err := client.Version(ctx)
	if err != nil {
		return "", fmt.Errorf("containerd version at %s: %w", address, err)
	}
	return v.Version, nil
}

func binaryVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "containerd", "--version")
	cmd.Stderr = io.Discard
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("containerd --version: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
