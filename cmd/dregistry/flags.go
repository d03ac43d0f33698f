package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/dregistry/dregistry/containerd"
	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/internal/egress"
	"github.com/dregistry/dregistry/internal/upstreampolicy"
	"github.com/dregistry/dregistry/registry"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// daemonConfig is everything `dregistry daemon` is told, after flags,
// DREGISTRY_* environment variables and the YAML file are merged (in that
// order of precedence).
type daemonConfig struct {
	HTTPAddr             string
	AdvertiseAddr        string
	GossipAddr           string
	TorrentAddr          string
	NodeName             string
	ClusterKeyFile       string
	InsecureGossip       bool
	UploadLimit          int64
	DownloadLimit        int64
	MaxConns             int
	Join                 []string
	Egress               bool
	DataDir              string
	CacheSize            int64 // 0: diskcache.DefaultLimit of DataDir
	ContainerdAddress    string
	ContainerdNamespaces []string
	DefaultRegistry      string
	UpstreamPlainHTTP    []string
	AllowRegistry        []string
	MirrorAllow          []netip.Prefix
	RegistryConfig       string
	LookupTimeout        time.Duration
	StallTimeout         time.Duration
	AbandonTimeout       time.Duration
	TagCacheTTL          time.Duration
	ReconnectInterval    time.Duration
	ReconnectTimeout     time.Duration
	LogLevel             slog.Level
}

// envName maps a flag to its environment variable: --http-addr → DREGISTRY_HTTP_ADDR.
func envName(flag string) []string {
	return []string{"DREGISTRY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

func daemonFlags() []cli.Flag {
	str := func(name, value, usage string) cli.Flag {
		return altsrc.NewStringFlag(&cli.StringFlag{Name: name, Value: value, Usage: usage, EnvVars: envName(name)})
	}
	list := func(name, usage string) cli.Flag {
		return altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: name, Usage: usage, EnvVars: envName(name)})
	}
	dur := func(name string, value time.Duration, usage string) cli.Flag {
		return altsrc.NewDurationFlag(&cli.DurationFlag{Name: name, Value: value, Usage: usage, EnvVars: envName(name)})
	}
	num := func(name string, usage string) cli.Flag {
		return altsrc.NewInt64Flag(&cli.Int64Flag{Name: name, Usage: usage, EnvVars: envName(name)})
	}
	// The defaults are the packages' own, written once there.
	sw, handler, fetcher := swarm.DefaultConfig(), registry.DefaultConfig(), egress.DefaultFetcherConfig()
	cluster := tracker.DefaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML file with flag values (keys are flag names); flags and DREGISTRY_* variables override it", EnvVars: envName("config")},
		str("http-addr", defaultHTTPAddr, "address of the registry mirror, peer and admin endpoint"),
		str("advertise-addr", "", "IP address peers use to reach this node (default: the first non-loopback address)"),
		str("gossip-addr", cluster.GossipAddr, "address of the gossip (memberlist) listener"),
		str("torrent-addr", sw.ListenAddr, "address of the BitTorrent listener"),
		str("node-name", "", "this member's unique name in the cluster (default: hostname-<advertise-addr>)"),
		str("cluster-key-file", "", "file of base64 AES keys (one per line, first encrypts and signs) that encrypt gossip and authenticate peers; required with --join"),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "insecure-gossip", Usage: "allow --join without --cluster-key-file: plain gossip, peers admitted by source address (anyone reaching the gossip port can join)", EnvVars: envName("insecure-gossip")}),
		list("join", "gossip address (host:port) of a cluster member to join; repeat or comma-separate"),
		dur("reconnect-interval", cluster.ReconnectInterval, "how often members that failed (not left) are contacted again, a few at random, so the two sides of a network partition merge once it heals"),
		dur("reconnect-timeout", cluster.ReconnectTimeout, "how long after it failed a member is still contacted; at least --reconnect-interval"),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "egress", Usage: "this node may fetch from upstream registries for the cluster", EnvVars: envName("egress")}),
		num("upload-limit", "swarm upload limit of this node in bytes per second (0: none)"),
		num("download-limit", "swarm download limit of this node in bytes per second (0: none)"),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-conns", Value: sw.MaxConns, Usage: "connection cap per torrent", EnvVars: envName("max-conns")}),
		str("data-dir", defaultDataDir, "directory for downloaded blobs, metainfo and state"),
		str("cache-size", "", "the most --data-dir holds (swarm downloads, egress spools, metainfo), e.g. 512MiB, 20GiB, 50GB or bytes; least recently used blobs go first, never one being served or downloaded, and a blob containerd holds is not kept twice "+
			"(default: a fifth of the data dir's filesystem, at most 50GiB — the data dir only holds copies in flight, while containerd's store, usually on the same filesystem, holds the images)"),
		str("containerd-address", containerd.DefaultConfig().Address, "containerd's gRPC socket"),
		list("containerd-namespaces", "containerd namespaces to serve and seed (default: every namespace)"),
		str("default-registry", handler.DefaultRegistry, "upstream registry for requests that carry no ns parameter"),
		list("upstream-plain-http", "registries (host[:port]) reached over plain HTTP instead of HTTPS; named, so fetched from"),
		list("allow-registry", "one more registry (host[:port]) to fetch from, besides --default-registry, --upstream-plain-http and those in --registry-config; '*' allows any registry on a public address; repeat or comma-separate"),
		list("mirror-allow", "network (CIDR) whose clients may use the mirror (/v2/) besides this host's own addresses and loopback; repeat or comma-separate"),
		str("registry-config", "", "docker-style config.json with credentials for upstream registries"),
		dur("lookup-timeout", handler.LookupTimeout, "how long one source may take to start answering before the next is tried"),
		dur("tag-cache-ttl", fetcher.TagTTL, "how long a tag's digest is answered without asking the upstream again (0: always ask; the last known answer still serves while the upstream is down)"),
		dur("stall-timeout", handler.StallTimeout, "a transfer that makes no progress this long is aborted so containerd retries, and a response the client stops reading this long is cut"),
		dur("abandon-timeout", sw.AbandonTimeout, "a swarm download no pull has read this long, and no peer fetched from, is dropped with its files"),
		str("log-level", "info", "debug, info, warn or error"),
	}
}

func parseDaemonConfig(c *cli.Context) (daemonConfig, error) {
	cfg := daemonConfig{
		HTTPAddr:             c.String("http-addr"),
		AdvertiseAddr:        c.String("advertise-addr"),
		GossipAddr:           c.String("gossip-addr"),
		TorrentAddr:          c.String("torrent-addr"),
		NodeName:             c.String("node-name"),
		ClusterKeyFile:       c.String("cluster-key-file"),
		InsecureGossip:       c.Bool("insecure-gossip"),
		UploadLimit:          c.Int64("upload-limit"),
		DownloadLimit:        c.Int64("download-limit"),
		MaxConns:             c.Int("max-conns"),
		Join:                 splitList(c.StringSlice("join")),
		Egress:               c.Bool("egress"),
		DataDir:              c.String("data-dir"),
		ContainerdAddress:    c.String("containerd-address"),
		ContainerdNamespaces: splitList(c.StringSlice("containerd-namespaces")),
		DefaultRegistry:      c.String("default-registry"),
		UpstreamPlainHTTP:    splitList(c.StringSlice("upstream-plain-http")),
		AllowRegistry:        splitList(c.StringSlice("allow-registry")),
		RegistryConfig:       c.String("registry-config"),
		LookupTimeout:        c.Duration("lookup-timeout"),
		StallTimeout:         c.Duration("stall-timeout"),
		AbandonTimeout:       c.Duration("abandon-timeout"),
		TagCacheTTL:          c.Duration("tag-cache-ttl"),
		ReconnectInterval:    c.Duration("reconnect-interval"),
		ReconnectTimeout:     c.Duration("reconnect-timeout"),
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return cfg, fmt.Errorf("--log-level: %w", err)
	}
	if err := cfg.checkAddrs(); err != nil {
		return cfg, err
	}
	if cfg.DataDir == "" {
		return cfg, fmt.Errorf("--data-dir must not be empty")
	}
	if v := c.String("cache-size"); v != "" {
		n, err := diskcache.ParseSize(v)
		if err != nil {
			return cfg, fmt.Errorf("--cache-size: %w", err)
		}
		cfg.CacheSize = n
	}
	if err := cfg.checkRegistries(); err != nil {
		return cfg, err
	}
	mirrorAllow, err := registry.ParseMirrorAllow(splitList(c.StringSlice("mirror-allow")))
	if err != nil {
		return cfg, err
	}
	cfg.MirrorAllow = mirrorAllow
	return cfg, cfg.checkLimits()
}

// checkAddrs checks the listen, join and advertise addresses, and finds
// the advertise address when none was given.
func (cfg *daemonConfig) checkAddrs() error {
	for _, a := range []struct{ flag, addr string }{
		{"http-addr", cfg.HTTPAddr}, {"gossip-addr", cfg.GossipAddr}, {"torrent-addr", cfg.TorrentAddr},
	} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("--%s %q: %w", a.flag, a.addr, err)
		}
	}
	for _, j := range cfg.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("--join %q: %w", j, err)
		}
	}
	if cfg.AdvertiseAddr == "" {
		ip, err := firstNonLoopback()
		if err != nil {
			return fmt.Errorf("--advertise-addr not set and none found: %w", err)
		}
		cfg.AdvertiseAddr = ip.String()
	} else if net.ParseIP(cfg.AdvertiseAddr) == nil {
		return fmt.Errorf("--advertise-addr %q: not an IP address", cfg.AdvertiseAddr)
	}
	return nil
}

// checkRegistries checks every registry the flags name.
func (cfg *daemonConfig) checkRegistries() error {
	if cfg.DefaultRegistry == "" {
		return fmt.Errorf("--default-registry must not be empty")
	}
	for _, flag := range []struct {
		name    string
		entries []string
	}{{"default-registry", []string{cfg.DefaultRegistry}}, {"upstream-plain-http", cfg.UpstreamPlainHTTP}, {"allow-registry", cfg.AllowRegistry}} {
		for _, e := range flag.entries {
			if e == upstreampolicy.Wildcard && flag.name == "allow-registry" {
				continue
			}
			if _, err := upstreampolicy.ParseRegistry(e); err != nil {
				return fmt.Errorf("--%s: %w", flag.name, err)
			}
		}
	}
	return nil
}

// checkLimits checks the limits and timeouts.
func (cfg *daemonConfig) checkLimits() error {
	if cfg.UploadLimit < 0 || cfg.DownloadLimit < 0 || cfg.MaxConns <= 0 {
		return fmt.Errorf("--upload-limit and --download-limit must not be negative, --max-conns must be positive")
	}
	if cfg.TagCacheTTL < 0 {
		return fmt.Errorf("--tag-cache-ttl must not be negative")
	}
	if cfg.LookupTimeout <= 0 || cfg.StallTimeout <= 0 || cfg.AbandonTimeout <= 0 {
		return fmt.Errorf("--lookup-timeout, --stall-timeout and --abandon-timeout must be positive")
	}
	if cfg.ReconnectInterval <= 0 || cfg.ReconnectTimeout < cfg.ReconnectInterval {
		return fmt.Errorf("--reconnect-interval must be positive and --reconnect-timeout at least as long (got %s, %s)", cfg.ReconnectInterval, cfg.ReconnectTimeout)
	}
	return nil
}

// splitList accepts both repeated flags and comma lists (from YAML or env).
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// firstNonLoopback returns the first global unicast address of an up
// interface, IPv4 preferred.
func firstNonLoopback() (net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var v6 net.IP
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || !n.IP.IsGlobalUnicast() {
			continue
		}
		if ip4 := n.IP.To4(); ip4 != nil {
			return ip4, nil
		}
		if v6 == nil {
			v6 = n.IP
		}
	}
	if v6 != nil {
		return v6, nil
	}
	return nil, fmt.Errorf("no non-loopback address on this host")
}
