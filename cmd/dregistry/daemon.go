package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/tracker"
)

func daemonCommand() *cli.Command {
	flags := daemonFlags()
	return &cli.Command{
		Name:   "daemon",
		Usage:  "run the node daemon: containerd's registry mirror and a member of the swarm",
		Flags:  flags,
		Before: altsrc.InitInputSourceWithContext(flags, altsrc.NewYamlSourceFromFlagFunc("config")),
		Action: func(c *cli.Context) error {
			cfg, err := parseDaemonConfig(c)
			if err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: cfg.LogLevel}))
			return runDaemon(c.Context, cfg, logger)
		},
	}
}

// runDaemon builds the node and serves until ctx ends.
func runDaemon(ctx context.Context, cfg daemonConfig, log *slog.Logger) error {
	n, err := newNode(ctx, cfg, log)
	if err != nil {
		return err
	}
	err = n.Run(ctx)
	if cerr := n.Close(); cerr != nil {
		log.Warn("close", "err", cerr)
	}
	return err
}

// dataDirCache bounds the data dir by --cache-size, or by a share of its
// filesystem (diskcache.DefaultLimit) when the flag is not set.
func dataDirCache(cfg daemonConfig) (*diskcache.Cache, error) {
	limit := cfg.CacheSize
	if limit == 0 {
		var err error
		if limit, err = diskcache.DefaultLimit(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("--cache-size not set: %w", err)
		}
	}
	c, err := diskcache.New(limit)
	if err != nil {
		return nil, fmt.Errorf("--cache-size: %w", err)
	}
	return c, nil
}

// routeMirror sends every /v2/ request to the mirror untouched: ServeMux
// would clean a path such as /v2/a//b and redirect, where the registry API
// must answer 400 NAME_INVALID.
func routeMirror(mirror, rest http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/") {
			mirror.ServeHTTP(w, r)
			return
		}
		rest.ServeHTTP(w, r)
	})
}

// peerHTTPClient fetches from peers, signing every request as node when
// the cluster is keyed. When the daemon listens on one address, requests
// leave from it too: a keyless cluster admits members by source address,
// and a host with several addresses (or loopback aliases) would otherwise
// pick another one.
func peerHTTPClient(httpAddr string, keys *peerauth.Keys, node string) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if host, _, err := net.SplitHostPort(httpAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			dialer.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	var rt http.RoundTripper = &http.Transport{
		DialContext:           dialer.DialContext,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
	}
	if keys != nil {
		rt = &peerauth.Transport{Base: rt, Keys: keys, Node: node}
	}
	return &http.Client{Transport: rt}
}

// loadClusterKeys reads --cluster-key-file and derives the peer
// credentials. Joining a cluster without a key is refused unless the
// operator says --insecure-gossip: anyone reaching the gossip port could
// then become a member.
func loadClusterKeys(cfg daemonConfig, log *slog.Logger) ([][]byte, *peerauth.Keys, error) {
	if cfg.ClusterKeyFile == "" {
		switch {
		case len(cfg.Join) > 0 && !cfg.InsecureGossip:
			return nil, nil, errors.New("--join needs --cluster-key-file: without a key anyone who reaches the gossip port becomes a member " +
				"(generate one with: head -c 32 /dev/urandom | base64 > key; give every node the same file), " +
				"or pass --insecure-gossip to run an open cluster anyway")
		case cfg.InsecureGossip:
			log.Error("INSECURE: --insecure-gossip: gossip is unencrypted and peers are admitted by source address; " +
				"any host that reaches the gossip port can join, read this node's peer endpoints and claim the egress role")
		}
		return nil, nil, nil
	}
	keys, err := tracker.LoadKeyFile(cfg.ClusterKeyFile)
	if err != nil {
		return nil, nil, err
	}
	peerKeys, err := peerauth.New(keys)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster key file %s: %w", cfg.ClusterKeyFile, err)
	}
	if cfg.InsecureGossip {
		log.Warn("--insecure-gossip is ignored: --cluster-key-file is set, so gossip is encrypted and peers authenticate")
	}
	return keys, peerKeys, nil
}
