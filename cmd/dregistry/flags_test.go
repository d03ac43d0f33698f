package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/dregistry/dregistry/containerd"
	"github.com/dregistry/dregistry/internal/egress"
	"github.com/dregistry/dregistry/registry"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// parseArgs runs the daemon command's flag handling without starting the daemon.
func parseArgs(t *testing.T, args ...string) (daemonConfig, error) {
	t.Helper()
	var got daemonConfig
	var parseErr error
	cmd := daemonCommand()
	cmd.Action = func(c *cli.Context) error {
		got, parseErr = parseDaemonConfig(c)
		return nil
	}
	app := &cli.App{Name: "dregistry", Commands: []*cli.Command{cmd}, Writer: &bytes.Buffer{}, ErrWriter: &bytes.Buffer{}}
	if err := app.Run(append([]string{"dregistry", "daemon"}, args...)); err != nil {
		return got, err
	}
	return got, parseErr
}

func TestDaemonFlagDefaults(t *testing.T) {
	cfg, err := parseArgs(t, "--advertise-addr", "10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	want := daemonConfig{
		HTTPAddr: ":5000", AdvertiseAddr: "10.1.2.3", GossipAddr: ":7946", TorrentAddr: ":6881",
		DataDir: "/var/lib/dregistry", ContainerdAddress: "/run/containerd/containerd.sock",
		DefaultRegistry: "docker.io", LookupTimeout: 5 * time.Second, StallTimeout: 30 * time.Second,
	}
	if cfg.HTTPAddr != want.HTTPAddr || cfg.GossipAddr != want.GossipAddr || cfg.TorrentAddr != want.TorrentAddr ||
		cfg.DataDir != want.DataDir || cfg.ContainerdAddress != want.ContainerdAddress ||
		cfg.DefaultRegistry != want.DefaultRegistry || cfg.LookupTimeout != want.LookupTimeout ||
		cfg.StallTimeout != want.StallTimeout || cfg.Egress || len(cfg.Join) != 0 || len(cfg.ContainerdNamespaces) != 0 {
		t.Fatalf("defaults = %+v", cfg)
	}
	// Written once, in the packages' DefaultConfig.
	if cfg.MaxConns != 50 || cfg.TagCacheTTL != 5*time.Second || cfg.AbandonTimeout != 5*time.Minute {
		t.Fatalf("defaults: max-conns %d, tag-cache-ttl %v, abandon-timeout %v; want 50, 5s, 5m", cfg.MaxConns, cfg.TagCacheTTL, cfg.AbandonTimeout)
	}
}

// Every flag default is the owning package's DefaultConfig value, written
// there once.
func TestDaemonFlagDefaultsArePackagesDefaults(t *testing.T) {
	cfg, err := parseArgs(t, "--advertise-addr", "10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	sw, handler, fetcher := swarm.DefaultConfig(), registry.DefaultConfig(), egress.DefaultFetcherConfig()
	cluster, store := tracker.DefaultConfig(), containerd.DefaultConfig()
	checks := []struct {
		flag      string
		got, want any
	}{
		{"http-addr", cfg.HTTPAddr, defaultHTTPAddr},
		{"data-dir", cfg.DataDir, defaultDataDir},
		{"gossip-addr", cfg.GossipAddr, cluster.GossipAddr},
		{"reconnect-interval", cfg.ReconnectInterval, cluster.ReconnectInterval},
		{"reconnect-timeout", cfg.ReconnectTimeout, cluster.ReconnectTimeout},
		{"torrent-addr", cfg.TorrentAddr, sw.ListenAddr},
		{"max-conns", cfg.MaxConns, sw.MaxConns},
		{"abandon-timeout", cfg.AbandonTimeout, sw.AbandonTimeout},
		{"upload-limit", cfg.UploadLimit, sw.UploadLimit},
		{"download-limit", cfg.DownloadLimit, sw.DownloadLimit},
		{"containerd-address", cfg.ContainerdAddress, store.Address},
		{"default-registry", cfg.DefaultRegistry, handler.DefaultRegistry},
		{"lookup-timeout", cfg.LookupTimeout, handler.LookupTimeout},
		{"stall-timeout", cfg.StallTimeout, handler.StallTimeout},
		{"tag-cache-ttl", cfg.TagCacheTTL, fetcher.TagTTL},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("--%s defaults to %v, the package's default is %v", c.flag, c.got, c.want)
		}
	}
}

func TestDaemonFlagPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dregistry.yaml")
	yaml := "http-addr: 127.0.0.1:6000\ndata-dir: /from/yaml\negress: true\njoin: [10.0.0.1:7946, 10.0.0.2:7946]\nlog-level: debug\ndefault-registry: ghcr.io\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DREGISTRY_DATA_DIR", "/from/env")
	t.Setenv("DREGISTRY_UPSTREAM_PLAIN_HTTP", "a.local:5000,b.local")
	cfg, err := parseArgs(t, "--config", file, "--advertise-addr", "10.1.2.3", "--default-registry", "quay.io")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"yaml only", cfg.HTTPAddr, "127.0.0.1:6000"},
		{"env beats yaml", cfg.DataDir, "/from/env"},
		{"flag beats yaml", cfg.DefaultRegistry, "quay.io"},
		{"yaml list", strings.Join(cfg.Join, ","), "10.0.0.1:7946,10.0.0.2:7946"},
		{"env comma list", strings.Join(cfg.UpstreamPlainHTTP, ","), "a.local:5000,b.local"},
		{"yaml level", cfg.LogLevel.String(), "DEBUG"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	if !cfg.Egress {
		t.Error("egress from yaml not applied")
	}
}

func TestDaemonTrustFlags(t *testing.T) {
	cfg, err := parseArgs(t, "--advertise-addr", "10.1.2.3", "--allow-registry", "ghcr.io", "--allow-registry", "*,quay.io:443",
		"--mirror-allow", "10.244.0.0/16", "--mirror-allow", "fd00::/8,192.0.2.7/32")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.AllowRegistry, ","); got != "ghcr.io,*,quay.io:443" {
		t.Errorf("--allow-registry = %q", got)
	}
	if got := fmt.Sprint(cfg.MirrorAllow); got != "[10.244.0.0/16 fd00::/8 192.0.2.7/32]" {
		t.Errorf("--mirror-allow = %s", got)
	}
}

func TestDaemonFlagErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"http addr without port", []string{"--http-addr", "localhost"}, "--http-addr"},
		{"bad join", []string{"--join", "nohostport"}, "--join"},
		{"bad advertise", []string{"--advertise-addr", "not-an-ip"}, "--advertise-addr"},
		{"bad level", []string{"--log-level", "loud"}, "--log-level"},
		{"zero timeout", []string{"--lookup-timeout", "0s"}, "timeout"},
		{"missing config file", []string{"--config", "/nonexistent/dregistry.yaml"}, "dregistry.yaml"},
		{"mirror-allow not a CIDR", []string{"--mirror-allow", "10.0.0.1"}, "--mirror-allow"},
		{"mirror-allow bad CIDR", []string{"--mirror-allow", "10.0.0.0/8,10.0.0.0/40"}, "--mirror-allow"},
		{"allow-registry URL", []string{"--allow-registry", "https://ghcr.io"}, "--allow-registry"},
		{"allow-registry bad port", []string{"--allow-registry", "ghcr.io:0"}, "--allow-registry"},
		{"plain-http URL", []string{"--upstream-plain-http", "http://reg:5000"}, "--upstream-plain-http"},
		{"default-registry wildcard", []string{"--default-registry", "*"}, "--default-registry"},
		{"zero reconnect interval", []string{"--reconnect-interval", "0s"}, "--reconnect-interval"},
		{"negative reconnect timeout", []string{"--reconnect-timeout", "-1h"}, "--reconnect-timeout"},
		{"reconnect timeout below interval", []string{"--reconnect-interval", "1m", "--reconnect-timeout", "30s"}, "--reconnect-timeout"},
		{"cache size without a number", []string{"--cache-size", "GiB"}, "--cache-size"},
		{"cache size unknown unit", []string{"--cache-size", "20G"}, "--cache-size"},
		{"cache size zero", []string{"--cache-size", "0"}, "--cache-size"},
		{"cache size negative", []string{"--cache-size", "-1MiB"}, "--cache-size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--advertise-addr", "10.1.2.3"}, c.args...)
			_, err := parseArgs(t, args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

// The reconnect bounds default to the tracker's and reach its Config.
func TestReconnectFlags(t *testing.T) {
	cases := []struct {
		name              string
		args              []string
		interval, timeout time.Duration
	}{
		{"defaults", nil, tracker.DefaultConfig().ReconnectInterval, tracker.DefaultConfig().ReconnectTimeout},
		{"set", []string{"--reconnect-interval", "30s", "--reconnect-timeout", "6h"}, 30 * time.Second, 6 * time.Hour},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := parseArgs(t, append([]string{"--advertise-addr", "10.1.2.3"}, c.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			tc, err := trackerConfig(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ReconnectInterval != c.interval || tc.ReconnectTimeout != c.timeout {
				t.Fatalf("tracker gets interval %s, timeout %s; want %s, %s", tc.ReconnectInterval, tc.ReconnectTimeout, c.interval, c.timeout)
			}
		})
	}
}

// --cache-size takes binary and decimal units or bytes (flag, env, YAML);
// unset, the daemon takes a share of the data dir's filesystem.
func TestCacheSizeFlag(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  string
		want int64
	}{
		{"unset", nil, "", 0},
		{"MiB", []string{"--cache-size", "512MiB"}, "", 512 << 20},
		{"GiB", []string{"--cache-size", "20GiB"}, "", 20 << 30},
		{"GB", []string{"--cache-size", "50GB"}, "", 50e9},
		{"bytes", []string{"--cache-size", "1048576"}, "", 1 << 20},
		{"env", nil, "2TiB", 2 << 40},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv("DREGISTRY_CACHE_SIZE", c.env)
			}
			cfg, err := parseArgs(t, append([]string{"--advertise-addr", "10.1.2.3"}, c.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.CacheSize != c.want {
				t.Fatalf("--cache-size = %d, want %d", cfg.CacheSize, c.want)
			}
		})
	}
	cfg, err := parseArgs(t, "--advertise-addr", "10.1.2.3", "--data-dir", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cache, err := dataDirCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if l := cache.Limit(); l <= 0 || l > 50<<30 {
		t.Fatalf("default limit %d: want a share of the filesystem, at most 50GiB", l)
	}
}
